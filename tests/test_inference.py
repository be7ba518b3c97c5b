"""Grad-CAM on a model trained on real MNIST, and `adaptive-cnn test` on image files: photos, folders, bad files. Where
the digits are not the point, the model is the MNIST network trained on synthetic images (`tiny_mnist`)."""
import io, json, struct, zlib

import numpy as np
import pytest
import torch
from PIL import Image

from adaptive_cnn.data import normalize
from adaptive_cnn.interpret import class_activation_maps, cam_focus, CAM_METHODS
from adaptive_cnn.models import AdaptiveCNN
from adaptive_cnn.checkpoint import load_checkpoint, model_from_checkpoint
from conftest import error_line, five_channel_tiff


def checkpoint_of(run) -> tuple:
    "(checkpoint, config, test split) of a session's trained run: `mnist_one_epoch` (real MNIST) or `tiny_mnist`."
    folder, cfg, test = run
    return folder/'checkpoints'/'best_model.pth', cfg, test


@pytest.mark.parametrize('method', list(CAM_METHODS))
def test_cam_maps_have_the_input_size_and_unit_range(tiny_mnist, method):
    ckpt, cfg, test = checkpoint_of(tiny_mnist)
    model, _ = model_from_checkpoint(load_checkpoint(ckpt))
    x = normalize(test.images[:6], cfg.data.mean, cfg.data.std)
    maps, classes = class_activation_maps(model, x, method=method)
    assert maps.shape == (6, 28, 28) and maps.min() >= 0 and maps.max() <= 1 and maps.max() > 0.5
    assert classes == model.eval()(x).argmax(1).tolist()


def test_trained_model_looks_at_the_digit(mnist_one_epoch):
    ckpt, cfg, test = checkpoint_of(mnist_one_epoch)
    model, _ = model_from_checkpoint(load_checkpoint(ckpt))
    sample = test[torch.arange(300)]
    x = normalize(sample.images, cfg.data.mean, cfg.data.std)
    focus = cam_focus(sample.images, class_activation_maps(model, x)[0])
    assert (focus > 0).mean() > 0.9, (focus > 0).mean()         # brighter inside the digit's box on most digits
    # and more so than an untrained network's maps, which follow the ink somewhat by construction
    torch.manual_seed(0)
    untrained = cam_focus(sample.images, class_activation_maps(AdaptiveCNN.from_config(cfg), x)[0])
    assert focus.mean() > untrained.mean() + 0.05, (focus.mean(), untrained.mean())


def photo(digit:np.ndarray, path):
    "An MNIST digit as a photo would show it: dark ink on white paper, 200×200, JPEG."
    Image.fromarray(255 - digit).resize((200, 200), Image.BICUBIC).save(path, quality=90)
    return path


def test_a_photographed_digit_is_inverted_and_classified(mnist_one_epoch, run_cli, tmp_path):
    ckpt, cfg, test = checkpoint_of(mnist_one_epoch)
    files = [photo(test.images[i, 0].numpy(), tmp_path/f'digit_{i}.jpg') for i in range(30)]
    code, out, err = run_cli('test', 'mnist', ckpt, *files, '--json')
    assert code == 0, err
    records = [json.loads(l) for l in out.splitlines()]
    right = sum(r['prediction'] == str(int(test.labels[i])) for i, r in enumerate(records))
    assert right >= 22, right                                   # the model is right on 75–80% of these photos after one epoch
    # thanks to the inversion: without it the same photos are mostly wrong
    from dataclasses import replace
    from adaptive_cnn.inference import Predictor, read_image
    plain = Predictor(cfg, ckpt, device='cpu')
    plain.cfg = replace(plain.cfg, data=replace(plain.cfg.data, invert_threshold=None))
    records_plain = plain.predict([read_image(f) for f in files], files)
    assert sum(r['prediction'] == str(int(test.labels[i])) for i, r in enumerate(records_plain)) < right - 10
    assert all(set(r) == {'file', 'prediction', 'probability', 'topk'} and len(r['topk']) == 3 for r in records)
    # one image: the top-k classes, and a Grad-CAM overlay at the photo's size
    code, out, err = run_cli('test', 'mnist', ckpt, files[0], '--topk', 5, '--gradcam', tmp_path/'cam.png')
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f'{files[0]}: ') and len(lines) == 6
    with Image.open(tmp_path/'cam.png') as im: assert im.size == (200, 200) and im.mode == 'RGB'


def zero_width_png(path):
    "A PNG whose header declares a 0×16 image."
    def chunk(kind, data): return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', 0, 16, 8, 0, 0, 0, 0))
                     + chunk(b'IDAT', zlib.compress(b'')) + chunk(b'IEND', b''))
    return path


def test_a_folder_run_goes_past_bad_files_and_lists_them(tiny_mnist, run_cli, tmp_path):
    ckpt, cfg, test = checkpoint_of(tiny_mnist)
    folder = tmp_path/'images'; folder.mkdir()
    photo(test.images[0, 0].numpy(), folder/'a_good.jpg')
    Image.fromarray(test.images[1, 0].numpy()).save(folder/'b_good.png')
    (folder/'c_notes.txt').write_text('not an image')
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    buf = io.BytesIO(); Image.fromarray(noise).save(buf, 'PNG'); (folder/'d_cut.png').write_bytes(buf.getvalue()[:1500])
    (folder/'e_empty.gif').touch()
    zero_width_png(folder/'f_zero.png')
    Image.fromarray(test.images[2, 0].numpy()).save(folder/'g_good.webp')
    code, out, err = run_cli('test', 'mnist', ckpt, folder)
    assert code == 2
    rows = out.splitlines()
    assert rows[0].startswith('file,prediction,probability,class1,p1')
    assert [r.split(',')[0].rsplit('/', 1)[1] for r in rows[1:]] == ['a_good.jpg', 'b_good.png', 'g_good.webp']
    errors = err.splitlines()
    assert 'Traceback' not in err and len(errors) == 5
    for line, (name, reason) in zip(errors, [('c_notes.txt', 'not an image'), ('d_cut.png', 'corrupt or truncated'),
                                             ('e_empty.gif', 'empty file'), ('f_zero.png', '')]):
        assert line.startswith('adaptive-cnn: error: ') and name in line and reason in line, line
    assert errors[-1].startswith('adaptive-cnn: 4 of 7 files could not be classified: ') and 'f_zero.png' in errors[-1]


@pytest.mark.parametrize('make, message', [
    (lambda p: p, 'no such file'),
    (lambda p: (p.write_text('hello'), p)[1], 'not an image Pillow can read'),
    (lambda p: (Image.fromarray(np.zeros((9000, 9000), np.uint8)).save(p, 'PNG'), p)[1], 'over the decoded-pixel limit'),
])
def test_one_bad_image_is_one_line_and_exit_2(tiny_mnist, run_cli, tmp_path, make, message):
    ckpt, _, _ = checkpoint_of(tiny_mnist)
    path = make(tmp_path/'image.png')
    code, out, err = run_cli('test', 'mnist', ckpt, path)
    assert code == 2 and out == ''
    line = error_line(err)
    assert str(path) in line and message in line, line


@pytest.mark.parametrize('fmt', ['onnx', 'torchscript'])
def test_export_matches_pytorch_on_test_images(tiny_mnist, run_cli, tmp_path, fmt):
    ckpt, cfg, test = checkpoint_of(tiny_mnist)
    out = tmp_path/f'model.{fmt}'
    code, stdout, err = run_cli('export', 'mnist', ckpt, '--format', fmt, '--out', out)
    assert code == 0, err
    assert out.is_file() and 'max |Δlogit| against PyTorch on 256 test images' in stdout
    # independently: the exported file run by its own runtime on other test images
    from adaptive_cnn.inference import run_exported
    model, _ = model_from_checkpoint(load_checkpoint(ckpt))
    x = normalize(test.images[1000:1100], cfg.data.mean, cfg.data.std)
    with torch.no_grad(): expected = model.float().eval()(x)
    assert (run_exported(out, fmt, x) - expected).abs().max() < 1e-4


def test_export_errors_are_one_line(tiny_mnist, run_cli, tmp_path):
    ckpt, _, _ = checkpoint_of(tiny_mnist)
    (tmp_path/'afile').write_text('x')
    code, out, err = run_cli('export', 'mnist', ckpt, '--format', 'onnx', '--out', tmp_path/'afile'/'m.onnx')
    assert code == 2 and f'its folder is not writable ({tmp_path}/afile is a file); choose another --out' in error_line(err)
    code, out, err = run_cli('export', 'mnist', ckpt, '--format', 'tflite', '--out', tmp_path/'m.tflite')
    assert code == 2 and "invalid choice: 'tflite'" in err and len(err.splitlines()) == 1
    assert [p.name for p in tmp_path.iterdir()] == ['afile']      # nothing written, no temporary file left


@pytest.mark.parametrize('suffix', ['.png', '.jpg', '.bmp', '.gif', '.tiff', '.webp'])
def test_every_supported_format_is_read_and_preprocessed(tiny_mnist, tmp_path, suffix):
    from adaptive_cnn.inference import read_image
    from adaptive_cnn.data import image_tensor
    _, cfg, test = checkpoint_of(tiny_mnist)
    path = tmp_path/f'digit{suffix}'
    Image.fromarray(test.images[0, 0].numpy()).convert('RGB').save(path)
    x = image_tensor(read_image(path), cfg.data)
    assert x.shape == (1, 1, 28, 28) and x.dtype == torch.uint8
    tolerance = 40 if suffix in ('.jpg', '.webp') else 0           # lossy formats
    assert (x[0, 0].int() - test.images[0, 0].int()).abs().float().mean() <= tolerance / 10


def test_unexpected_channel_counts_and_depths(tiny_mnist, tmp_path):
    from adaptive_cnn.inference import read_image
    from adaptive_cnn.errors import ImageError
    from adaptive_cnn.data import image_tensor
    _, cfg, test = checkpoint_of(tiny_mnist)
    with pytest.raises(ImageError, match='1 to 4 channels'): read_image(five_channel_tiff(tmp_path/'five.tif'))
    with pytest.raises(ImageError, match='floating-point images are not supported'):
        Image.fromarray(np.zeros((8, 8), np.float32)).save(tmp_path/'float.tif'); read_image(tmp_path/'float.tif')
    # 16-bit grey is scaled to 8 bits, not clipped
    digit = test.images[0, 0].numpy()
    Image.fromarray(digit.astype(np.uint16) * 257).save(tmp_path/'deep.png')
    assert torch.equal(image_tensor(read_image(tmp_path/'deep.png'), cfg.data)[0, 0], test.images[0, 0])
    # 2 channels (grey + alpha) and 4 (RGBA) are read
    for mode in ('LA', 'RGBA'):
        Image.fromarray(digit).convert(mode).save(tmp_path/f'{mode}.png')
        assert torch.equal(image_tensor(read_image(tmp_path/f'{mode}.png'), cfg.data)[0, 0], test.images[0, 0])


def test_predict_takes_a_run_folder(tiny_mnist, run_cli, tmp_path):
    ckpt, cfg, test = checkpoint_of(tiny_mnist)
    files = [photo(test.images[i, 0].numpy(), tmp_path/f'digit_{i}.jpg') for i in range(5)]
    code, out, err = run_cli('predict', ckpt.parent.parent, *files, '--json')              # the run folder, no CONFIG
    assert code == 0, err
    code, long_out, err = run_cli('test', 'mnist', ckpt, *files, '--json')
    assert code == 0, err
    assert [json.loads(l) for l in out.splitlines()] == [json.loads(l) for l in long_out.splitlines()]
    code, out, err = run_cli('predict', 'mnist', ckpt)                                      # a config, a checkpoint, no image
    assert code == 2 and 'give the images to classify after the checkpoint' in error_line(err)
