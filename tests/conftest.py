"""Shared fixtures and helpers of the tests.

Tests that need the real datasets ask for `data_root` (directly, or through a fixture such as `mnist_one_epoch`): that
marks them `real_data`, so `pytest -m "not real_data"` runs the rest without $ADAPTIVE_CNN_DATA. Where the data is
not the point, tests use `tiny_mnist`, a run trained in seconds on synthetic images (`adaptive_cnn.testing`)."""
import json, os, struct, subprocess, sys
from pathlib import Path

import numpy as np
import pytest

from adaptive_cnn.cli import main

ERROR_PREFIX = 'adaptive-cnn: error: '
REAL_DATA_HELP = 'needs the real datasets: $ADAPTIVE_CNN_DATA holding MNIST/ and cifar-10-batches-bin/'
# test files owned elsewhere whose tests read $ADAPTIVE_CNN_DATA themselves instead of asking for data_root
READ_THE_VARIABLE = ('test_notebook.py',)


def pytest_configure(config):
    config.addinivalue_line('markers', f'real_data: {REAL_DATA_HELP}; deselect with -m "not real_data"')


def pytest_collection_modifyitems(config, items):
    "Mark `real_data` every test whose fixtures include `data_root`, however indirectly."
    for item in items:
        if 'data_root' in getattr(item, 'fixturenames', ()) or item.path.name in READ_THE_VARIABLE:
            item.add_marker(pytest.mark.real_data)


@pytest.fixture(scope='session')
def data_root() -> Path:
    "The real datasets' folder, $ADAPTIVE_CNN_DATA; without it a test fails (it is never skipped), unless deselected."
    root = os.environ.get('ADAPTIVE_CNN_DATA')
    if not root or not (Path(root)/'MNIST').is_dir() or not (Path(root)/'cifar-10-batches-bin').is_dir():
        pytest.fail(f'this test {REAL_DATA_HELP}; set it, or deselect the real-data tests with -m "not real_data"')
    return Path(root)


def _exit_code(code) -> int:
    "The process exit status `SystemExit(code)` would give."
    if code is None: return 0
    return code if isinstance(code, int) else 1


@pytest.fixture
def run_cli(capsys):
    "Call `adaptive_cnn.cli.main(list(args))` in-process; returns (exit_code, stdout, stderr)."
    def run(*args):
        capsys.readouterr()  # drop anything printed before the call
        try: code = main([str(a) for a in args])
        except SystemExit as e: code = _exit_code(e.code)  # argparse usage errors, --version
        out, err = capsys.readouterr()
        return code, out, err
    return run


def cli_subprocess(*args, **kwargs) -> subprocess.CompletedProcess:
    "Run `python -m adaptive_cnn *args` in a fresh interpreter."
    return subprocess.run([sys.executable, '-m', 'adaptive_cnn', *map(str, args)],
                          capture_output=True, text=True, timeout=120, **kwargs)


@pytest.fixture
def write_yaml(tmp_path):
    "Write `text` to `tmp_path/name` and return the path."
    def write(text:str, name:str='config.yaml') -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding='utf-8')
        return path
    return write


def error_line(stderr:str) -> str:
    "The single line of `stderr`, asserting that there is exactly one and that it is a clean CLI error."
    assert 'Traceback' not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, f'expected one line on stderr, got {len(lines)}:\n{stderr}'
    assert lines[0].startswith(ERROR_PREFIX), lines[0]
    return lines[0]


@pytest.fixture(scope='session')
def mnist_one_epoch(tmp_path_factory, data_root):
    "A model trained once per test session for one epoch on 3,000 real MNIST digits: (run folder, config, test split)."
    from adaptive_cnn.config import load_config
    from adaptive_cnn.data import load_data
    from adaptive_cnn.training import Trainer
    run = tmp_path_factory.mktemp('mnist_one_epoch')
    cfg = load_config('mnist', ['train.epochs=1', 'train.batch_size=64', 'data.train_subset=3000', 'data.val_size=500',
                                f'output.dir={json.dumps(str(run))}'])
    trainer = Trainer(cfg, progress=False); trainer.fit(); trainer.close()
    return run, cfg, load_data(cfg).test


@pytest.fixture(scope='session')
def tiny_mnist(tmp_path_factory):
    """The MNIST config and network trained for 40 steps on synthetic 28×28 bars of 10 classes (`tiny_run`), in seconds
    and without the real data: (run folder, config, test split of 1,200 images). Its checkpoint fits the built-in
    config, so `adaptive-cnn evaluate mnist CHECKPOINT` takes it; its data is the run's shapes.npz."""
    from adaptive_cnn.checkpoint import load_checkpoint, model_from_checkpoint
    from adaptive_cnn.data import load_data
    from adaptive_cnn.testing import tiny_run
    run = tmp_path_factory.mktemp('tiny_mnist')
    ckpt = tiny_run(run, 'mnist', overrides=(), num_train=1200, num_test=1200, steps=40)
    _, cfg = model_from_checkpoint(load_checkpoint(ckpt))
    return run, cfg, load_data(cfg).test


def model_weights(path:Path) -> dict:
    "The weights in the checkpoint at `path`."
    from adaptive_cnn.checkpoint import load_checkpoint
    return load_checkpoint(path)['model']


def history(run:Path) -> list[dict]:
    "A run's metrics.jsonl without the timings, which differ from run to run."
    return [{k: v for k, v in json.loads(line).items() if 'time' not in k and 'per_s' not in k}
            for line in (run/'metrics.jsonl').read_text(encoding='utf-8').splitlines()]


def five_channel_tiff(path:Path, w:int=4, h:int=4, spp:int=5) -> Path:
    "A valid uncompressed TIFF with 5 samples per pixel (Pillow has no mode for it)."
    data = np.arange(w * h * spp, dtype=np.uint8).tobytes()
    bps_at = 8 + 2 + 12 * 10 + 4
    tags = sorted([(256, 3, 1, w), (257, 3, 1, h), (258, 3, spp, bps_at), (259, 3, 1, 1), (262, 3, 1, 1),
                   (273, 4, 1, bps_at + 2 * spp), (277, 3, 1, spp), (278, 3, 1, h), (279, 4, 1, len(data)), (338, 3, 1, 0)])
    out = b'II*\x00' + struct.pack('<IH', 8, len(tags))
    for tag, typ, count, value in tags:
        out += struct.pack('<HHI', tag, typ, count) + (struct.pack('<HH', value, 0) if typ == 3 and count == 1 else struct.pack('<I', value))
    path.write_bytes(out + struct.pack('<I', 0) + struct.pack('<' + 'H' * spp, *[8] * spp) + data)
    return path
