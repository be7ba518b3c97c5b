"""Shared helpers for the end-to-end tests of the `adaptive-cnn` command line."""
import json, os, struct, subprocess, sys
from pathlib import Path

import numpy as np
import pytest

from adaptive_cnn.cli import main

ERROR_PREFIX = 'adaptive-cnn: error: '


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
def mnist_one_epoch(tmp_path_factory):
    "A model trained once per test session for one epoch on 3,000 real MNIST digits: (run folder, config, test split)."
    from adaptive_cnn.config import load_config
    from adaptive_cnn.data import load_data
    from adaptive_cnn.training import Trainer
    if not os.environ.get('ADAPTIVE_CNN_DATA'): pytest.fail('set ADAPTIVE_CNN_DATA to the folder holding the real datasets')
    run = tmp_path_factory.mktemp('mnist_one_epoch')
    cfg = load_config('mnist', ['train.epochs=1', 'train.batch_size=64', 'data.train_subset=3000', 'data.val_size=500',
                                f'output.dir={json.dumps(str(run))}'])
    trainer = Trainer(cfg, progress=False); trainer.fit(); trainer.close()
    return run, cfg, load_data(cfg).test


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
