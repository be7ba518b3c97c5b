"""One table of bad inputs across config, data, images, checkpoints, command-line arguments and output folders.

Every row goes through the `adaptive-cnn` command line and must give: the row's exit code (2 for bad usage or input,
1 for a runtime failure); exactly one line on stderr, `adaptive-cnn: error: ...`, that names the thing and says how to
fix it (the row's `expect` substrings); no traceback (that needs `--debug`); and no output created or overwritten —
the whole `tmp_path` tree (and the shared trained run, when a row points at it) is identical before and after the call.
README.md's "## Bad input" section lists the same rows."""
import errno, gc, hashlib, os, re, shutil, zipfile
from collections import namedtuple
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from adaptive_cnn.checkpoint import load_checkpoint, save_checkpoint
from adaptive_cnn.config import load_config
from adaptive_cnn.training import Trainer
from conftest import ERROR_PREFIX, cli_subprocess, error_line, five_channel_tiff

CATEGORIES = ('config', 'cli', 'data', 'image', 'checkpoint', 'output')
README = Path(__file__).resolve().parent.parent/'README.md'


# ---- the context a row's setup gets -------------------------------------------------------------------------------

class Ctx:
    "What a row's `setup` works with: `tmp` (the test's tmp_path) and the session's trained run, fetched on first use."
    def __init__(self, tmp:Path, request, monkeypatch):
        self.tmp, self.request, self.monkeypatch = tmp, request, monkeypatch
        self.used_run = False

    @property
    def run(self) -> Path:
        """The `tiny_mnist` run folder, the MNIST network trained on synthetic images (shared by the session: rows only
        read it, the snapshot checks that)."""
        self.used_run = True
        return self.request.getfixturevalue('tiny_mnist')[0]

    def ckpt(self, name:str='best_model.pth') -> Path: return self.run/'checkpoints'/name

    def path(self, name:str) -> Path: return self.tmp/name

    def write(self, name:str, data:bytes|str) -> Path:
        p = self.tmp/name
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, str): p.write_text(data, encoding='utf-8')
        else: p.write_bytes(data)
        return p

    def digit(self, name:str='digit.png', size:int=28) -> Path:
        "A small grey PNG of a vertical stroke (a '1')."
        a = np.zeros((size, size), np.uint8); a[4:-4, size // 2 - 2:size // 2 + 2] = 255
        p = self.tmp/name
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(p)
        return p

    def npz(self, name:str, **arrays) -> Path:
        p = self.tmp/name
        np.savez(p, **arrays)
        return p

    def folder(self, name:str, per_class:int=3) -> Path:
        "An image folder: two class subfolders of small 28×28 PNGs."
        root = self.tmp/name
        rng = np.random.default_rng(0)
        for c in ('a', 'b'):
            (root/c).mkdir(parents=True)
            for i in range(per_class): Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(root/c/f'{i:03d}.png')
        return root

    def shapes(self, name:str='shapes.npz') -> Path:
        "A .npz of synthetic 28×28 grey images of 10 classes (`adaptive_cnn.testing`): data a run can start on."
        from adaptive_cnn.testing import save_npz_dataset, shapes_dataset
        raw = shapes_dataset(num_train=300, num_test=50, num_classes=10)
        save_npz_dataset(self.tmp/name, raw.train, raw.test, raw.classes)
        return self.tmp/name

    def copy_run(self, name:str='run') -> Path:
        "A copy of the trained run folder under tmp (rows may point train at it)."
        return Path(shutil.copytree(self.run, self.tmp/name))

    def afile(self) -> Path:
        "A regular file, for paths that need a folder where it is."
        return self.write('afile', 'a regular file, not a folder\n')


# ---- row data -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Row:
    id: str
    category: str                          # one of CATEGORIES
    setup: Callable[[Ctx], list]           # creates the inputs under ctx.tmp, returns the argv after 'adaptive-cnn'
    expect: tuple                          # substrings of the error line ('{tmp}' is the tmp_path): the thing and the fix
    code: int = 2                          # 2: bad usage or input; 1: runtime failure
    prefix: str = ERROR_PREFIX             # argparse reports subcommand usage errors as 'adaptive-cnn SUB: error: '
    absent: tuple = ()                     # substrings the line must not contain (a false statement about the input)
    patch: Callable[[Ctx], None]|None = None  # monkeypatching applied after setup, just around the call
    creates: tuple = ()                    # runtime failures only: what a run that started may leave (paths under tmp)

    def __post_init__(self): assert self.category in CATEGORIES, self.category


def _out(ctx) -> list: return ['--output-dir', ctx.path('run')]
def _train(*args) -> Callable[[Ctx], list]: return lambda ctx: ['train', *args, *_out(ctx)]
# a run that gets as far as its data, on synthetic images where the data is not the point
def _train_shapes(ctx) -> list: return ['train', 'mnist', '--data', ctx.shapes(), '--set', 'data.val_size=30', *_out(ctx)]
# rows that need the real MNIST: a pass over its 55,000 training images is what a 3 s budget cannot hold
NEEDS_REAL_DATA = ('budget-too-small',)

# config ----------------------------------------------------------------------------------------------------------

MALFORMED = 'train:\n  epochs: 5\n  lr: 0.1: 2\n'

def _yaml(text:str) -> Callable[[Ctx], list]: return lambda ctx: ['train', ctx.write('config.yaml', text), *_out(ctx)]

def _config_dir(ctx):
    (ctx.tmp/'configs.yaml').mkdir()
    return ['train', ctx.tmp/'configs.yaml', *_out(ctx)]

# data ------------------------------------------------------------------------------------------------------------

def _truncated_in_folder(ctx):
    root = ctx.folder('digits')
    png = root/'b'/'001.png'
    png.write_bytes(png.read_bytes()[:60])
    return ['profile', root]

def _bomb_png(path:Path, side:int=7000) -> Path:
    "A PNG declaring side×side pixels (49 M for 7000, over the 40 M decoded-pixel limit); 1-bit zeros: a few kB."
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new('1', (side, side)).save(path, optimize=True)
    return path

def _folder_with_bomb(ctx):
    root = ctx.folder('digits')
    _bomb_png(root/'a'/'huge.png')
    return ['profile', root]

def _folder_with_pillow_warned_bomb(ctx):
    "100 megapixels: where Pillow itself prints a DecompressionBombWarning (89 to 179 MP); the error must stay one line."
    root = ctx.folder('digits')
    Image.new('1', (10_000, 10_000)).save(root/'a'/'huge.png')
    return ['profile', root]

def _npz_bomb(ctx, labels:int=4):
    "An .npz whose x.npy declares 3·10^15 bytes (1,000,000 × 1000 × 1000 × 3 uint8) and holds none of them."
    import io
    p = ctx.tmp/'bomb.npz'
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {'descr': '|u1', 'fortran_order': False, 'shape': (1_000_000, 1000, 1000, 3)})
    y = io.BytesIO(); np.save(y, np.zeros(labels, np.int64))
    with zipfile.ZipFile(p, 'w') as z:
        z.writestr('x.npy', header.getvalue())           # magic, version and header; no data
        z.writestr('y.npy', y.getvalue())
    return p

def _mnist_checkpoint(ctx) -> Path:
    "The trained run's checkpoint with real MNIST's data settings, as a run on MNIST saves them (its own are synthetic)."
    state = load_checkpoint(ctx.ckpt())
    state['config']['data'] = asdict(load_config('mnist').data)
    save_checkpoint(state, ctx.tmp/'mnist.pth')
    return ctx.tmp/'mnist.pth'

def _evaluate_bad_data(ctx):
    "A data folder whose MNIST files are not IDX files; evaluate reads the data of the checkpoint from it."
    raw = ctx.tmp/'data'/'MNIST'/'raw'; raw.mkdir(parents=True)
    for name in ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte'):
        (raw/name).write_text('not an IDX file\n')
    return ['evaluate', 'mnist', _mnist_checkpoint(ctx), '--data-root', ctx.tmp/'data', '--output-dir', ctx.path('eval')]

def _broken_npz(ctx) -> Path: return ctx.npz('broken.npz', x=np.zeros((10, 8, 8), np.uint8))   # no y

def _run_in_use(ctx):
    "A copy of the trained run whose folder another process holds, as a run still training there does."
    import subprocess, sys
    run = ctx.copy_run('run')
    hold = (f'import time; from adaptive_cnn.run_folder import RunLock; RunLock({str(run)!r}).acquire(); '
            'print(1, flush=True); time.sleep(600)')
    holder = subprocess.Popen([sys.executable, '-c', hold], stdout=subprocess.PIPE, text=True)

    def stop_holder():
        holder.kill()
        holder.communicate()   # waits and closes the pipe: an open pipe would warn (ResourceWarning) in a later test
    ctx.request.addfinalizer(stop_holder)
    assert holder.stdout.readline() == '1\n'
    return ['train', 'mnist', '--data', ctx.shapes(), '--overwrite', '--output-dir', run]

def _bad_data_keeps_run(ctx):
    run = ctx.copy_run('run')
    return ['train', 'mnist', '--data', _broken_npz(ctx), '--overwrite', '--output-dir', run]

# images ----------------------------------------------------------------------------------------------------------

def _test(make:Callable[[Ctx], Path], *extra) -> Callable[[Ctx], list]:
    return lambda ctx: ['test', 'mnist', ctx.ckpt(), make(ctx), *extra]

def _truncated_png(ctx) -> Path:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    p = ctx.tmp/'cut.png'; Image.fromarray(noise).save(p)
    p.write_bytes(p.read_bytes()[:1500])
    return p

# checkpoints -----------------------------------------------------------------------------------------------------

class RunsACommand:
    "Unpickling this runs `touch <marker>`: what an untrusted checkpoint could do if it were loaded with pickle."
    def __init__(self, marker:Path): self.marker = marker
    def __reduce__(self): return (os.system, (f'touch {self.marker}',))

def evil_checkpoint(path:Path, marker:Path) -> Path:
    torch.save({'model': RunsACommand(marker), 'config': {}}, path)
    return path

def _truncated_ckpt(ctx) -> Path:
    data = ctx.ckpt('last.pth').read_bytes()
    return ctx.write('half.pth', data[:len(data) // 2])

def _export(make:Callable[[Ctx], Path]) -> Callable[[Ctx], list]:
    return lambda ctx: ['export', 'mnist', make(ctx), '--format', 'onnx', '--out', ctx.path('model.onnx')]

def _evaluate(make:Callable[[Ctx], Path], *extra) -> Callable[[Ctx], list]:
    return lambda ctx: ['evaluate', 'mnist', make(ctx), *extra, '--output-dir', ctx.path('eval')]

# output ----------------------------------------------------------------------------------------------------------

DiskUsage = namedtuple('DiskUsage', 'total used free')

def _disk_fills_up(ctx):
    "The disk fills up once the run has started: the first file it writes (config.yaml) fails at fsync with ENOSPC."
    def no_space(fd): raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    ctx.monkeypatch.setattr(os, 'fsync', no_space)

def _full_disk(ctx):
    ctx.monkeypatch.setattr(shutil, 'disk_usage', lambda path: DiskUsage(100 * 2**30, 100 * 2**30 - 1_000_000, 1_000_000))


CASES = [
    # config: the file (and line) or the override, the key, what is allowed
    Row('config-yaml-syntax', 'config', _yaml(MALFORMED), ('{tmp}/config.yaml line 3: malformed YAML', 'mapping values')),
    Row('config-unknown-key', 'config', _yaml('train:\n  epoch: 5\n'),
        ('{tmp}/config.yaml', "unknown key in train 'train.epoch'", "did you mean 'train.epochs'?")),
    Row('config-wrong-type', 'config', _yaml('train:\n  epochs: five\n'),
        ('{tmp}/config.yaml', 'train.epochs = "five" has the wrong type', 'expected an integer > 0')),
    Row('config-out-of-range', 'config', _yaml('model:\n  dropout: 1.0\n'),
        ('{tmp}/config.yaml', 'model.dropout = 1.0 is out of range', 'expected a number >= 0 and < 1')),
    Row('config-missing-file', 'config', lambda ctx: ['train', ctx.path('nope.yaml'), *_out(ctx)],
        ("config file '{tmp}/nope.yaml' does not exist", 'give a path to a YAML file or a built-in config (cifar10, mnist)')),
    Row('config-unknown-name', 'config', _train('mnsit'),
        ("unknown config 'mnsit'", "did you mean 'mnist'?", 'built-in config (cifar10, mnist)')),
    Row('config-is-a-folder', 'config', _config_dir, ('{tmp}/configs.yaml', 'YAML file'), absent=('does not exist',)),
    Row('set-without-equals', 'config', _train('mnist', '--set', 'train.epochs'),
        ('--set train.epochs: expected SECTION.KEY=VALUE', 'e.g. train.epochs=5')),
    Row('set-unknown-section', 'config', _train('mnist', '--set', 'trian.epochs=3'),
        ("--set trian.epochs=3: unknown section 'trian'", "did you mean 'train'?", 'valid: data, model')),

    # cli: argparse usage errors point to --help; contradictory or impossible options name both and what to give
    Row('unknown-subcommand', 'cli', lambda ctx: ['trian', 'mnist'],
        ("invalid choice: 'trian'", "'train'", "(see 'adaptive-cnn --help')")),
    Row('missing-positional', 'cli', lambda ctx: ['evaluate', 'mnist'],
        ('mnist is not a checkpoint (.pth) or a run folder', 'adaptive-cnn evaluate mnist CHECKPOINT')),
    Row('num-gpus-not-an-integer', 'cli', _train('mnist', '--num-gpus', 'x'),
        ("argument --num-gpus: invalid int value: 'x'", "(see 'adaptive-cnn train --help')"),
        prefix='adaptive-cnn train: error: '),
    Row('num-gpus-zero', 'cli', _train('mnist', '--num-gpus', '0'), ('--num-gpus 0', 'give a number of at least 1')),
    Row('num-gpus-without-gpus', 'cli', _train('mnist', '--num-gpus', '1'),
        ('--num-gpus 1', 'this machine has 0 CUDA GPUs', 'leave out --num-gpus'), absent=('use --num-gpus 0',),
        patch=lambda ctx: (ctx.monkeypatch.setattr(torch.cuda, 'device_count', lambda: 0),
                           ctx.monkeypatch.setattr(torch.cuda, 'is_available', lambda: False))),
    Row('num-gpus-and-num-procs', 'cli', _train('mnist', '--num-gpus', '1', '--num-procs', '1'),
        ('--num-gpus and --num-procs contradict each other', 'give --num-gpus for GPUs or --num-procs for CPU processes')),
    Row('resume-and-overwrite', 'cli', _train('mnist', '--resume', '--overwrite'),
        ('--resume and --overwrite contradict each other', 'give one of them')),
    Row('max-restarts-negative', 'cli', _train('mnist', '--max-restarts', '-1'),
        ('--max-restarts -1', 'give a number of at least 0')),
    Row('auto-without-data', 'cli', _train('auto'), ('the config auto is derived from a dataset', 'give it with --data DATA')),
    Row('budget-not-a-duration', 'cli', _train('mnist', '--budget', '2x'),
        ('--budget 2x: not a wall time', 'write it as 90s, 10m, 1h30m or a number of seconds')),
    Row('budget-with-num-procs', 'cli', _train('mnist', '--budget', '1m', '--num-procs', '2'),
        ('a time budget (--budget, train.budget) plans a run in one process', 'leave out --num-gpus, --num-procs')),
    Row('budget-and-epochs', 'cli', _train('mnist', '--budget', '1m', '--set', 'train.epochs=3'),
        ('--set train.epochs=3 and a time budget (1m) contradict each other', 'give one of them')),
    Row('budget-too-small', 'cli', _train('mnist', '--budget', '3s'),
        ('train.budget 3s is too small for this config: a pass over its training images takes about', 'a quarter of one at least', 'raise it', 'config auto, which sizes the network to the budget')),
    Row('topk-zero', 'cli', lambda ctx: ['test', 'mnist', ctx.ckpt(), ctx.digit(), '--topk', '0'],
        ('--topk 0', 'give a number of at least 1')),

    # data: the file or dataset, what is wrong with it, what it should be
    Row('unknown-dataset', 'data', lambda ctx: ['profile', 'cifar11'],
        ("data.dataset = 'cifar11': unknown dataset (did you mean 'cifar10'?)", 'or the path of an image folder or a .npz file')),
    Row('empty-folder', 'data', lambda ctx: ['profile', (ctx.tmp/'empty').mkdir() or ctx.tmp/'empty'],
        ('{tmp}/empty: not an image folder', 'expected one subfolder per class')),
    Row('truncated-png-in-folder', 'data', _truncated_in_folder,
        ('{tmp}/digits/b/001.png: cannot read image', 'remove or replace the file')),
    Row('npz-label-out-of-range', 'data',
        lambda ctx: ['profile', ctx.npz('range.npz', x=np.zeros((10, 8, 8), np.uint8), y=np.arange(10), classes=np.array(['a', 'b']))],
        ('{tmp}/range.npz', 'label 9 is out of range for 2 classes', 'labels must be 0..1')),
    Row('npz-x-not-uint8', 'data',
        lambda ctx: ['profile', ctx.npz('float.npz', x=np.zeros((10, 8, 8), np.float32), y=np.zeros(10, np.int64))],
        ('{tmp}/float.npz', 'x must be uint8 N×H×W or N×H×W×C', 'got float32')),
    Row('npz-missing-y', 'data', lambda ctx: ['profile', _broken_npz(ctx)],
        ('{tmp}/broken.npz', "missing array 'y'", 'needs x (images) and y (labels)')),
    Row('cifar10-missing-no-download', 'data',
        lambda ctx: ['profile', 'cifar10', '--data-root', ctx.tmp, '--set', 'data.download=false'],
        ('CIFAR-10 not found', '{tmp}/cifar-10-batches-bin', 'downloads are off (data.download=false)',
         'point data.root / $ADAPTIVE_CNN_DATA at a folder that has them')),
    Row('train-bad-data-creates-no-run', 'data', lambda ctx: ['train', 'mnist', '--data', _broken_npz(ctx), *_out(ctx)],
        ('{tmp}/broken.npz', "missing array 'y'")),
    Row('evaluate-bad-data-creates-nothing', 'data', _evaluate_bad_data,
        ('{tmp}/data/MNIST/raw/train-images-idx3-ubyte', 'not an IDX file', 'download it again')),
    Row('dataset-decompression-bomb', 'data', _folder_with_bomb,
        ('{tmp}/digits/a/huge.png', 'over the decoded-pixel limit of 40,000,000', 'remove or resize the file')),
    Row('dataset-bomb-pillow-warns', 'data', _folder_with_pillow_warned_bomb,
        ('{tmp}/digits/a/huge.png', '10000×10000 = 100,000,000 pixels is over the decoded-pixel limit', 'remove or resize the file')),
    Row('npz-bomb', 'data', lambda ctx: ['profile', _npz_bomb(ctx), '--set', 'data.cache=memory'],
        ('{tmp}/bomb.npz', 'of memory', 'x: 1000000 × 1000 × 1000 × 3', 'use a smaller dataset')),
    Row('npz-bomb-disk-cache', 'data', lambda ctx: ['profile', _npz_bomb(ctx, 1_000_000), '--set', f'data.cache_dir={ctx.tmp}/cache'],
        ('{tmp}/bomb.npz:x: its disk cache needs 2,793.97 GiB, but {tmp}/cache has', 'free some space, or set data.cache_dir')),

    # images for `test`: the file and what is wrong with it; one bad image is exit 2
    Row('image-missing', 'image', _test(lambda ctx: ctx.path('nope.png'), '--gradcam', '{tmp}/cam.png'),
        ('{tmp}/nope.png: no such file',)),
    Row('image-empty', 'image', _test(lambda ctx: ctx.write('empty.png', b'')),
        ('{tmp}/empty.png: empty file (0 bytes)', 'not an image')),
    Row('image-text-named-png', 'image', _test(lambda ctx: ctx.write('notes.png', 'not an image\n')),
        ('{tmp}/notes.png: not an image Pillow can read', 'expected PNG, JPEG')),
    Row('image-truncated', 'image', _test(_truncated_png), ('{tmp}/cut.png: the file is corrupt or truncated', 're-export the image')),
    Row('image-decompression-bomb', 'image', _test(lambda ctx: _bomb_png(ctx.path('huge.png'))),
        ('{tmp}/huge.png: 7000×7000 = 49,000,000 pixels', 'decoded-pixel limit of 40,000,000', 'resize the image first')),
    Row('image-five-channels', 'image', _test(lambda ctx: five_channel_tiff(ctx.path('five.tif'))),
        ('{tmp}/five.tif', '1 to 4 channels')),

    # checkpoints: the file and why it cannot be used; nothing in it is ever run
    Row('checkpoint-missing', 'checkpoint', _evaluate(lambda ctx: ctx.path('nope.pth')), ('{tmp}/nope.pth: no such checkpoint file',)),
    Row('checkpoint-random-bytes', 'checkpoint',
        lambda ctx: ['test', 'mnist', ctx.write('random.pth', np.random.default_rng(0).bytes(4096)), ctx.digit()],
        ('{tmp}/random.pth: not a readable adaptive_cnn checkpoint', 'use a checkpoint written by adaptive-cnn train'),
        absent=('could run code',)),
    Row('checkpoint-truncated', 'checkpoint', _export(_truncated_ckpt),
        ('{tmp}/half.pth: not a readable adaptive_cnn checkpoint', 'use a checkpoint written by adaptive-cnn train')),
    Row('checkpoint-runs-a-command', 'checkpoint', _evaluate(lambda ctx: evil_checkpoint(ctx.path('evil.pth'), ctx.path('MARKER'))),
        ('{tmp}/evil.pth', 'could run code, which are never loaded', 'use a checkpoint written by adaptive-cnn train')),
    Row('checkpoint-other-architecture', 'checkpoint', _evaluate(lambda ctx: ctx.ckpt(), '--set', 'model.widths=[16,32,64]'),
        ('best_model.pth', 'in the checkpoint but', 'it was trained with another architecture')),
    Row('checkpoint-without-model', 'checkpoint', _export(lambda ctx: (torch.save({'weights': torch.zeros(3)}, ctx.path('dict.pth')), ctx.path('dict.pth'))[1]),
        ('{tmp}/dict.pth: not an adaptive_cnn checkpoint (no model and config in it)', 'use a checkpoint written by adaptive-cnn train')),

    # output: existing runs are neither reused nor damaged; unwritable places are named with the option to change
    Row('output-dir-holds-a-run', 'output', lambda ctx: ['train', 'mnist', '--output-dir', ctx.copy_run('run')],
        ('{tmp}/run already holds a run', 'pass --resume to continue it, --overwrite to replace it', '--output-dir')),
    Row('output-dir-under-a-file', 'output', lambda ctx: ['train', 'mnist', '--output-dir', ctx.afile()/'run'],
        ('{tmp}/afile/run: output folder is not writable', 'choose another --output-dir')),
    Row('evaluate-output-under-a-file', 'output', lambda ctx: ['evaluate', 'mnist', ctx.ckpt(), '--output-dir', ctx.afile()],
        ('{tmp}/afile/evaluation: evaluation folder is not writable', 'choose another --output-dir')),
    Row('export-out-under-a-file', 'output',
        lambda ctx: ['export', 'mnist', ctx.ckpt(), '--format', 'onnx', '--out', ctx.afile()/'model.onnx'],
        ('{tmp}/afile', '--out'), absent=('does not exist',)),
    Row('gradcam-out-under-a-file', 'output',
        lambda ctx: ['test', 'mnist', ctx.ckpt(), ctx.digit(), '--gradcam', ctx.afile()/'cam.png'],
        ('{tmp}/afile', '--gradcam')),
    Row('full-disk', 'output', _train_shapes, ('{tmp}/run: 1.0 MB free', 'free some space or choose another --output-dir'),
        patch=_full_disk),
    Row('output-dir-in-use', 'output', _run_in_use,
        ('{tmp}/run is in use by a run that is still going (process ', 'wait for it to end or stop it', '--output-dir')),
    Row('bad-data-keeps-existing-run', 'output', _bad_data_keeps_run, ('{tmp}/broken.npz', "missing array 'y'")),
    # a runtime failure (exit 1): the run had started, so its folder and log stay, but no file is half-written
    Row('disk-fills-during-run', 'output', _train_shapes,
        ('{tmp}/run/config.yaml: cannot write (No space left on device); nothing was written', 'Free some space',
         'with --resume'), code=1, patch=_disk_fills_up, creates=('run', 'run/.lock', 'run/checkpoints', 'run/train.log')),
]

BY_ID = {r.id: r for r in CASES}
assert len(BY_ID) == len(CASES), 'duplicate row ids'


# ---- snapshots: nothing created, changed or removed ---------------------------------------------------------------

def snapshot(root:Path) -> dict:
    "Relative path → ('dir',) or (size, mtime_ns, sha256) for everything under `root`."
    out = {}
    for p in sorted(root.rglob('*')):
        rel = str(p.relative_to(root))
        if p.is_dir() and not p.is_symlink(): out[rel] = ('dir',)
        else:
            st = p.lstat()
            out[rel] = (st.st_size, st.st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None)
    return out

def assert_unchanged(before:dict, after:dict, where:str, allowed:tuple=()):
    created = sorted(set(after) - set(before) - set(allowed))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    assert not (created or removed or changed), f'{where}: created {created}, removed {removed}, changed {changed}'


def reached_training(self, *args, **kwargs):
    raise RuntimeError('the command reached Trainer.fit: this bad input was not refused before training')


def prepare(row:Row, tmp_path:Path, request, monkeypatch) -> tuple[Ctx, list[str], list[str]]:
    "Run the row's setup; returns the context, the argv and the expected substrings."
    ctx = Ctx(tmp_path, request, monkeypatch)
    fill = lambda s: str(s).replace('{tmp}', str(tmp_path))
    argv = [fill(a) for a in row.setup(ctx)]
    return ctx, argv, [fill(s) for s in row.expect]


def check_line(row:Row, code:int, err:str, expect:list[str]) -> str:
    "The row's exit code and its one clean error line with every expected substring; returns the line."
    assert 'Traceback' not in err, err
    assert code == row.code, f'exit code {code}, expected {row.code}; stderr:\n{err}'
    if row.prefix == ERROR_PREFIX: line = error_line(err)
    else:
        lines = err.splitlines()
        assert len(lines) == 1, f'expected one line on stderr, got {len(lines)}:\n{err}'
        line = lines[0]
        assert line.startswith(row.prefix), line
    for s in expect: assert s in line, f'{s!r} missing from: {line}'
    for s in row.absent: assert s not in line, f'{s!r} (not true of this input) in: {line}'
    return line


# ---- the table ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('row', [pytest.param(r, id=r.id, marks=[pytest.mark.real_data] * (r.id in NEEDS_REAL_DATA))
                                 for r in CASES])
def test_bad_input(row, tmp_path, request, monkeypatch, run_cli, recwarn):
    if row.id in NEEDS_REAL_DATA: request.getfixturevalue('data_root')   # fails, naming $ADAPTIVE_CNN_DATA, without it
    ctx, argv, expect = prepare(row, tmp_path, request, monkeypatch)
    roots = {'tmp_path': tmp_path} | ({'the trained run': ctx.run} if ctx.used_run else {})
    before = {name: snapshot(root) for name, root in roots.items()}
    if row.patch: row.patch(ctx)
    monkeypatch.setattr(Trainer, 'fit', reached_training)    # every row fails before training; a regression fails fast
    gc.collect()           # objects earlier tests left behind warn when collected: not inside this row's window
    recwarn.clear()
    code, out, err = run_cli(*argv)
    monkeypatch.undo()
    # in-process, pytest catches warnings that a real process would print to stderr next to the error line. (recwarn
    # also overrides the package's filter for Pillow's DecompressionBombWarning: test_real_process_... checks that row.)
    shown = [w for w in recwarn.list if not issubclass(w.category, Image.DecompressionBombWarning)]
    assert not shown, [f'{w.category.__name__}: {w.message}' for w in shown]
    check_line(row, code, err, expect)
    for name, root in roots.items(): assert_unchanged(before[name], snapshot(root), name, row.creates if root == tmp_path else ())


def test_every_category_has_rows():
    counts = {c: sum(r.category == c for r in CASES) for c in CATEGORIES}
    assert all(n >= 3 for n in counts.values()), counts
    assert len(CASES) >= 25


# ---- the same rows in a real process, and with --debug -------------------------------------------------------------

@pytest.mark.parametrize('row_id', ['config-unknown-key', 'npz-missing-y', 'checkpoint-runs-a-command', 'dataset-bomb-pillow-warns'])
def test_real_process_exit_status_and_stderr(row_id, tmp_path, request, monkeypatch):
    row = BY_ID[row_id]
    ctx, argv, expect = prepare(row, tmp_path, request, monkeypatch)
    before = snapshot(tmp_path)
    proc = cli_subprocess(*argv)
    line = check_line(row, proc.returncode, proc.stderr, expect)
    assert line.startswith(ERROR_PREFIX) and proc.stdout == ''
    assert_unchanged(before, snapshot(tmp_path), 'tmp_path')


def test_debug_prints_the_traceback(tmp_path, request, monkeypatch, run_cli):
    row = BY_ID['npz-missing-y']
    ctx, argv, expect = prepare(row, tmp_path, request, monkeypatch)
    code, out, err = run_cli(*argv, '--debug')
    assert code == 2
    assert 'Traceback (most recent call last)' in err and 'DataError' in err
    last = err.splitlines()[-1]
    assert last.startswith(ERROR_PREFIX) and all(s in last for s in expect), err


# ---- an untrusted checkpoint is never unpickled -------------------------------------------------------------------

def test_untrusted_checkpoint_never_runs_code(tmp_path, run_cli):
    "A checkpoint whose pickle runs `touch MARKER` is refused by evaluate, test and export, and the command never runs."
    marker = tmp_path/'MARKER'
    evil = evil_checkpoint(tmp_path/'evil.pth', marker)
    # the file is a real threat: plain pickle loading would run the command
    torch.load(evil, weights_only=False)
    assert marker.exists(); marker.unlink()
    image = tmp_path/'digit.png'; Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    for argv in (['evaluate', 'mnist', evil, '--output-dir', tmp_path/'eval'], ['test', 'mnist', evil, image],
                 ['export', 'mnist', evil, '--format', 'onnx', '--out', tmp_path/'m.onnx']):
        code, out, err = run_cli(*argv)
        assert code == 2
        line = error_line(err)
        assert str(evil) in line and 'could run code, which are never loaded' in line, line
        assert not marker.exists(), f'{argv[0]} ran the command in the checkpoint'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['digit.png', 'evil.pth']     # nothing written


# ---- README ---------------------------------------------------------------------------------------------------------

def test_readme_lists_every_case():
    text = README.read_text(encoding='utf-8')
    m = re.search(r'^## Bad input\n(.*?)(?=^## )', text, re.S | re.M)
    assert m, 'README.md has no "## Bad input" section'
    ids = re.findall(r'^\|\s*`([^`]+)`\s*\|', m.group(1), re.M)
    assert len(ids) == len(set(ids)), 'a case is listed twice'
    assert set(ids) == set(BY_ID), f'only in README: {sorted(set(ids) - set(BY_ID))}; only in tests: {sorted(set(BY_ID) - set(ids))}'
