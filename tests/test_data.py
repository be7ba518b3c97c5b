"""The data layer on the real datasets (from $ADAPTIVE_CNN_DATA), and on small folders and archives made from them or
(where the images are not the point) from synthetic ones."""
import gzip, json, os, pickle, shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adaptive_cnn.config import load_config
from adaptive_cnn.data import (CIFAR10_BIN, CIFAR10_PY, channel_stats, load_data, read_cifar10, read_mnist_family,
                               read_dataset)
from adaptive_cnn.errors import DataError
from conftest import error_line

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]   # shared/data/README.md
CIFAR_CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']


@pytest.fixture(scope='session')
def mnist(data_root):
    return read_mnist_family('mnist', data_root, download=False)


@pytest.fixture(scope='session')
def cifar(data_root):
    return read_cifar10(data_root, download=False)


@pytest.fixture(scope='session')
def shapes():
    "Synthetic 28×28 grey images of 10 classes, 30 a class, in MNIST's layout: for tests of folders, not of digits."
    from adaptive_cnn.testing import shapes_dataset
    return shapes_dataset(num_train=300, num_test=50, num_classes=10)


# ---- real MNIST ---------------------------------------------------------------------------------------------------

def test_mnist_counts_balance_and_statistics(mnist):
    assert mnist.train.images.shape == (60000, 1, 28, 28) and mnist.train.images.dtype == torch.uint8
    assert mnist.test.images.shape == (10000, 1, 28, 28)
    assert mnist.train.class_counts(10) == MNIST_TRAIN_COUNTS
    mean, std = channel_stats(mnist.train.images)
    assert abs(mean[0] - 0.1307) < 1e-3 and abs(std[0] - 0.3081) < 1e-3
    assert abs(mean[0] - 0.130660) < 1e-6 and abs(std[0] - 0.308108) < 1e-6   # README's reference to 6 digits


def test_mnist_matches_torchvision_parser(data_root, mnist, tmp_path):
    from torchvision.datasets.mnist import read_image_file, read_label_file
    for name in ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'):
        (tmp_path/name).write_bytes(gzip.decompress((data_root/'MNIST'/'raw'/f'{name}.gz').read_bytes()))
    assert torch.equal(read_image_file(str(tmp_path/'t10k-images-idx3-ubyte')), mnist.test.images[:, 0])
    assert torch.equal(read_label_file(str(tmp_path/'t10k-labels-idx1-ubyte')), mnist.test.labels)


def test_mnist_split_is_stratified_and_seeded(data_root):
    ds = load_data(load_config('mnist', [f'data.root={json.dumps(str(data_root))}']))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (55000, 5000, 10000)
    expected = np.array(MNIST_TRAIN_COUNTS) * 5000 / 60000
    assert np.abs(np.array(ds.val.class_counts(10)) - expected).max() <= 1
    again = load_data(load_config('mnist', [f'data.root={json.dumps(str(data_root))}']))
    assert torch.equal(again.val.images, ds.val.images)
    other = load_data(load_config('mnist', [f'data.root={json.dumps(str(data_root))}', 'train.seed=7']))
    assert not torch.equal(other.val.labels, ds.val.labels)
    assert len(ds.train) + len(ds.val) == 60000


def test_holdout_indices_are_disjoint_and_cover_everything(mnist):
    from adaptive_cnn.data import stratified_holdout
    kept, held = stratified_holdout(mnist.train.labels, 5000, seed=42)
    assert len(set(kept.tolist()) & set(held.tolist())) == 0
    assert sorted(kept.tolist() + held.tolist()) == list(range(60000))


def test_train_subset_keeps_full_validation(data_root):
    ds = load_data(load_config('mnist', [f'data.root={json.dumps(str(data_root))}', 'data.train_subset=4000']))
    assert (len(ds.train), len(ds.val)) == (4000, 5000)


# ---- real CIFAR-10 ------------------------------------------------------------------------------------------------

def test_cifar10_counts_balance_and_statistics(cifar):
    assert cifar.train.images.shape == (50000, 3, 32, 32) and cifar.test.images.shape == (10000, 3, 32, 32)
    assert cifar.classes == CIFAR_CLASSES
    assert cifar.train.class_counts(10) == [5000] * 10 and cifar.test.class_counts(10) == [1000] * 10
    assert cifar.train.labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert cifar.test.labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    mean, std = channel_stats(cifar.train.images)
    assert np.allclose(mean, [0.4914, 0.4822, 0.4465], atol=1e-3)
    assert np.allclose(std, [0.247032, 0.243485, 0.261588], atol=1e-5)


def _write_pickle_layout(raw, folder: Path):
    """The official python layout: 5 training batches of 10,000, a test batch, batches.meta. Keys are str, as the
    official (Python 2) pickles give them to torchvision's `encoding='latin1'`."""
    folder.mkdir(parents=True)
    for i in range(5):
        part = raw.train[slice(i * 10000, (i + 1) * 10000)]
        with open(folder/f'data_batch_{i + 1}', 'wb') as f:
            pickle.dump({'batch_label': 'training batch', 'labels': part.labels.tolist(),
                         'data': part.images.reshape(10000, -1).numpy()}, f, protocol=2)
    with open(folder/'test_batch', 'wb') as f:
        pickle.dump({'labels': raw.test.labels.tolist(), 'data': raw.test.images.reshape(10000, -1).numpy()}, f, protocol=2)
    with open(folder/'batches.meta', 'wb') as f:
        pickle.dump({'label_names': list(raw.classes), 'num_vis': 3072}, f, protocol=2)


def test_cifar10_both_layouts_give_identical_tensors(cifar, tmp_path, monkeypatch):
    _write_pickle_layout(cifar, tmp_path/CIFAR10_PY)
    copy = read_cifar10(tmp_path, download=False)
    assert torch.equal(copy.train.images, cifar.train.images) and torch.equal(copy.train.labels, cifar.train.labels)
    assert torch.equal(copy.test.images, cifar.test.images) and torch.equal(copy.test.labels, cifar.test.labels)
    assert copy.classes == cifar.classes
    # torchvision reads the same copy identically (its checksum guard only knows the official files)
    import torchvision.datasets.cifar as tv_cifar
    monkeypatch.setattr(tv_cifar, 'check_integrity', lambda *args, **kwargs: True)
    CIFAR10 = tv_cifar.CIFAR10
    tv = CIFAR10(str(tmp_path), train=False)
    assert torch.equal(torch.from_numpy(tv.data).permute(0, 3, 1, 2), cifar.test.images)
    assert tv.targets == cifar.test.labels.tolist()


# ---- image folders and npz made from real images ------------------------------------------------------------------

def _save_digits(mnist, folder: Path, per_class=6, classes=range(5), size=None, fmt='png'):
    """Training images of `mnist` (real MNIST, or synthetic ones in its layout) as image files, one subfolder per class;
    returns the saved arrays by class."""
    saved = {}
    for c in classes:
        (folder/str(c)).mkdir(parents=True, exist_ok=True)
        idx = torch.nonzero(mnist.train.labels == c)[:per_class, 0]
        saved[c] = []
        for i, j in enumerate(idx):
            im = Image.fromarray(mnist.train.images[j, 0].numpy())
            if size: im = im.resize((size[1], size[0]), Image.BILINEAR)
            im.save(folder/str(c)/f'{i:03d}.{fmt}')
            saved[c].append(np.asarray(im))
    return saved


def test_image_folder_of_real_pngs_is_lossless(mnist, tmp_path):
    saved = _save_digits(mnist, tmp_path/'digits')
    raw = read_dataset(load_config(None, [f'data.dataset={json.dumps(str(tmp_path/"digits"))}']).data)
    assert raw.classes == ['0', '1', '2', '3', '4'] and raw.train.images.shape == (30, 1, 28, 28)
    assert raw.train.labels.tolist() == [c for c in range(5) for _ in range(6)]
    assert np.array_equal(raw.train.images[6, 0].numpy(), saved[1][0])     # PNG round trip is exact


def test_image_folder_with_train_and_test_at_56px(mnist, tmp_path):
    _save_digits(mnist, tmp_path/'d56'/'train', per_class=12, size=(56, 56))
    _save_digits(mnist, tmp_path/'d56'/'test', per_class=4, size=(56, 56), fmt='jpg')
    ds = load_data(load_config(None, [f'data.dataset={json.dumps(str(tmp_path/"d56"))}', 'data.val_size=10']))
    assert (len(ds.train), len(ds.val), len(ds.test)) == (50, 10, 20)
    assert (ds.data.channels, ds.data.image_size, ds.data.num_classes) == (1, [56, 56], 5)
    assert ds.val.class_counts(5) == [2] * 5
    assert 0.05 < ds.data.mean[0] < 0.3 and ds.data.std[0] > 0.1        # digits: mostly dark background


def test_mixed_sizes_are_resized_with_a_note(shapes, tmp_path):
    _save_digits(shapes, tmp_path/'mixed', per_class=4, classes=range(3))
    _save_digits(shapes, tmp_path/'mixed', per_class=1, classes=range(3), size=(40, 36))   # overwrites 000.png of each class
    raw = read_dataset(load_config(None, [f'data.dataset={json.dumps(str(tmp_path/"mixed"))}']).data)
    assert raw.train.images.shape == (12, 1, 28, 28)
    assert any('3 of 12 images were resized to 28×28' in n for n in raw.notes), raw.notes


def test_configured_size_and_channels_apply_to_folders(cifar, tmp_path):
    for c in range(2):
        (tmp_path/'rgb'/CIFAR_CLASSES[c]).mkdir(parents=True)
        for i, j in enumerate(torch.nonzero(cifar.train.labels == c)[:5, 0]):
            Image.fromarray(cifar.train.images[j].permute(1, 2, 0).numpy()).save(tmp_path/'rgb'/CIFAR_CLASSES[c]/f'{i}.png')
    cfg = load_config(None, [f'data.dataset={json.dumps(str(tmp_path/"rgb"))}', 'data.channels=1', 'data.image_size=[16,16]'])
    raw = read_dataset(cfg.data)
    assert raw.train.images.shape == (10, 1, 16, 16)
    assert read_dataset(load_config(None, [f'data.dataset={json.dumps(str(tmp_path/"rgb"))}']).data).train.images.shape == (10, 3, 32, 32)


def test_npz_of_real_cifar_images(cifar, tmp_path):
    x = cifar.train.images[:200].permute(0, 2, 3, 1).numpy()
    y = cifar.train.labels[:200].numpy()
    np.savez(tmp_path/'c.npz', x=x, y=y, classes=np.array(CIFAR_CLASSES))
    ds = load_data(load_config(None, [f'data.dataset={json.dumps(str(tmp_path/"c.npz"))}', 'data.val_size=20']))
    assert ds.classes == CIFAR_CLASSES and (len(ds.train), len(ds.val), len(ds.test)) == (160, 20, 20)
    restored = torch.cat([ds.train.images, ds.val.images, ds.test.images])
    assert sorted(map(bytes, restored.reshape(200, -1).numpy())) == sorted(map(bytes, cifar.train.images[:200].reshape(200, -1).numpy()))


def test_profile_json_on_real_mnist(data_root, run_cli):
    code, out, err = run_cli('profile', 'mnist', '--json', '--data-root', str(data_root))
    assert code == 0, err
    p = json.loads(out)
    for key in ('num_train', 'num_val', 'num_test', 'num_classes', 'classes', 'image_size', 'channels', 'mean', 'std', 'class_counts'):
        assert key in p
    assert (p['num_train'], p['num_val'], p['num_test'], p['num_classes']) == (55000, 5000, 10000, 10)
    assert (p['image_size'], p['channels']) == ([28, 28], 1)
    assert abs(p['mean'][0] - 0.1307) < 1e-3 and abs(p['std'][0] - 0.3081) < 1e-3
    assert sum(p['class_counts']) == 55000


# ---- bad data: one line naming the thing, exit code 2 -------------------------------------------------------------

def _bad_folder_cases(tmp_path, mnist):
    (tmp_path/'empty').mkdir()
    (tmp_path/'flat').mkdir()
    Image.fromarray(mnist.train.images[0, 0].numpy()).save(tmp_path/'flat'/'a.png')
    _save_digits(mnist, tmp_path/'truncated', per_class=2, classes=range(2))
    png = (tmp_path/'truncated'/'1'/'001.png')
    png.write_bytes(png.read_bytes()[:60])
    (tmp_path/'emptyclass'/'a').mkdir(parents=True); (tmp_path/'emptyclass'/'b').mkdir()
    Image.fromarray(mnist.train.images[0, 0].numpy()).save(tmp_path/'emptyclass'/'a'/'x.png')
    np.savez(tmp_path/'range.npz', x=np.zeros((10, 8, 8), np.uint8), y=np.arange(10), classes=np.array(['a', 'b']))
    np.savez(tmp_path/'length.npz', x=np.zeros((10, 8, 8), np.uint8), y=np.zeros(7, np.int64))
    np.savez(tmp_path/'float.npz', x=np.zeros((10, 8, 8), np.float32), y=np.zeros(10, np.int64))
    return {
        'empty-folder': (tmp_path/'empty', ['empty', 'not an image folder', 'one subfolder per class']),
        'no-class-subfolders': (tmp_path/'flat', ['flat', 'not an image folder']),
        'truncated-image': (tmp_path/'truncated', ['001.png', 'cannot read image']),
        'empty-class-folder': (tmp_path/'emptyclass', ['emptyclass', 'not an image folder']),
        'npz-label-out-of-range': (tmp_path/'range.npz', ['range.npz', 'label 9 is out of range for 2 classes']),
        'npz-length-mismatch': (tmp_path/'length.npz', ['length.npz', '10 images in x but y has shape (7,)']),
        'npz-not-uint8': (tmp_path/'float.npz', ['float.npz', 'x must be uint8']),
        'unknown-dataset': ('cifar11', ["unknown dataset (did you mean 'cifar10'?)", 'mnist', 'fashionmnist', 'svhn']),
    }


@pytest.mark.parametrize('case', ['empty-folder', 'no-class-subfolders', 'truncated-image', 'empty-class-folder',
                                  'npz-label-out-of-range', 'npz-length-mismatch', 'npz-not-uint8', 'unknown-dataset'])
def test_bad_data_is_one_line_error(case, tmp_path, shapes, run_cli):
    data, expected = _bad_folder_cases(tmp_path, shapes)[case]
    code, out, err = run_cli('profile', str(data))
    assert code == 2 and out == ''
    line = error_line(err)
    for s in expected: assert s in line, f'{s!r} missing from {line}'


def test_missing_files_list_what_is_expected_where(tmp_path, run_cli):
    code, out, err = run_cli('profile', 'cifar10', '--data-root', str(tmp_path), '--set', 'data.download=false')
    assert code == 2
    line = error_line(err)
    assert f'{tmp_path}/{CIFAR10_BIN}/data_batch_1..5.bin' in line and CIFAR10_PY in line and 'data.download=false' in line
    code, out, err = run_cli('profile', 'fashionmnist', '--data-root', str(tmp_path), '--set', 'data.download=false')
    line = error_line(err)
    assert 'FashionMNIST not found' in line and f'{tmp_path}/FashionMNIST/raw' in line


def test_corrupt_cifar_batch_is_named(cifar, data_root, tmp_path):
    folder = tmp_path/CIFAR10_BIN
    shutil.copytree(data_root/CIFAR10_BIN, folder)
    (folder/'data_batch_3.bin').write_bytes((data_root/CIFAR10_BIN/'data_batch_3.bin').read_bytes()[:5000])
    with pytest.raises(DataError, match='data_batch_3.bin: truncated CIFAR-10 batch'):
        read_cifar10(tmp_path, download=False)


def test_train_subset_is_stratified_on_class_ordered_data(shapes, tmp_path):
    _save_digits(shapes, tmp_path/'ordered', per_class=20, classes=range(5))       # read class by class: 0,0,...,4,4
    cfg = load_config(None, [f'data.dataset={json.dumps(str(tmp_path/"ordered"))}', 'data.val_size=10', 'data.train_subset=20'])
    ds = load_data(cfg)
    assert len(ds.train) == 20 and ds.train.class_counts(5) == [4] * 5


def test_statistics_of_the_wrong_length_for_the_data(shapes, tmp_path, run_cli):
    _save_digits(shapes, tmp_path/'gray', per_class=10, classes=range(2))
    code, out, err = run_cli('profile', str(tmp_path/'gray'), '--set', 'data.mean=[0.5,0.5,0.5]', '--set', 'data.std=[0.2,0.2,0.2]')
    assert code == 2 and 'data.mean has 3 values but the images have 1 channels' in error_line(err)


def test_missing_cifar_files_are_named(data_root, tmp_path):
    folder = tmp_path/CIFAR10_BIN
    folder.mkdir()
    for name in ('data_batch_1.bin', 'data_batch_2.bin'): (folder/name).symlink_to(data_root/CIFAR10_BIN/name)
    with pytest.raises(DataError, match='data_batch_3.bin: cannot read CIFAR-10 batch'):
        read_cifar10(tmp_path, download=False)


def test_npz_with_half_a_test_split(tmp_path, run_cli):
    np.savez(tmp_path/'half.npz', x=np.zeros((10, 8, 8), np.uint8), y=np.arange(10) % 2, x_test=np.zeros((4, 8, 8), np.uint8))
    code, out, err = run_cli('profile', str(tmp_path/'half.npz'))
    assert code == 2 and 'only one of x_test and y_test' in error_line(err)
