"""End-to-end tests of the `adaptive-cnn` command line and of config resolution."""
import os, re, subprocess, sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import adaptive_cnn
from adaptive_cnn.cli import build_parser, config_from_args
from adaptive_cnn.config import TrainConfig, load_config, save_config
from conftest import cli_subprocess, error_line


def _rows(out:str, kind:str) -> list[str]:
    return [l for l in out.splitlines() if f'({kind})' in l]


def _row(out:str, name:str) -> str:
    rows = [l for l in out.splitlines() if l.startswith(name + ' (')]
    assert len(rows) == 1, f'expected one row for {name}, got {rows}'
    return rows[0]


# --- summary ---------------------------------------------------------------------------------------------

def test_summary_mnist(run_cli):
    code, out, err = run_cli('summary', 'mnist')
    assert code == 0, err
    assert err == ''
    lines = out.rstrip('\n').splitlines()
    assert lines[-1] == 'Total params: 709,770'
    blocks = [f'stages.{s}.{b}' for s in range(3) for b in range(2)]
    assert [r.split()[0] for r in _rows(out, 'ResidualBlock')] == blocks
    shapes = {0: '[32, 14, 14]', 1: '[64, 7, 7]', 2: '[128, 4, 4]'}
    for name in blocks:
        assert shapes[int(name.split('.')[1])] in _row(out, name), _row(out, name)


def test_summary_cifar10(run_cli):
    code, out, err = run_cli('summary', 'cifar10')
    assert code == 0, err
    last = out.rstrip('\n').splitlines()[-1]
    m = re.fullmatch(r'Total params: ([\d,]+)', last)
    assert m, last
    assert 17_550_000 <= int(m[1].replace(',', '')) <= 17_650_000
    blocks = _rows(out, 'ResidualBlock')
    assert len(blocks) == 11
    assert '[512, 4, 4]' in blocks[-1]


def test_summary_set_changes_the_network(run_cli):
    "An override reaches the network: one block fewer in the last stage."
    code, out, err = run_cli('summary', 'mnist', '--set', 'model.depths=[2,2,1]')
    assert code == 0, err
    assert len(_rows(out, 'ResidualBlock')) == 5
    assert out.rstrip('\n').splitlines()[-1] != 'Total params: 709,770'


def test_console_script():
    script = Path(sys.executable).parent / 'adaptive-cnn'
    assert script.is_file(), f'console script not installed at {script}'
    proc = subprocess.run([str(script), 'summary', 'mnist'], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip('\n').splitlines()[-1] == 'Total params: 709,770'


def test_version():
    proc = cli_subprocess('--version')
    assert proc.returncode == 0, proc.stderr
    assert adaptive_cnn.__version__ in proc.stdout
    assert proc.stdout.strip().endswith(adaptive_cnn.__version__)


# --- subcommands that have not landed yet, usage errors ---------------------------------------------------

def test_evaluate_missing_checkpoint_is_one_line(run_cli, tmp_path):
    code, out, err = run_cli('evaluate', 'mnist', str(tmp_path/'nope.pth'))
    assert code == 2 and 'nope.pth: no such checkpoint file' in error_line(err)


def test_train_reports_bad_config_before_anything_else(run_cli, tmp_path):
    code, out, err = run_cli('train', 'mnist', '--set', 'train.epochs=0', '--output-dir', str(tmp_path/'run'))
    assert code == 2
    line = error_line(err)
    assert 'train.epochs' in line and 'out of range' in line
    assert not (tmp_path/'run').exists()


def test_train_without_config_is_usage_error(run_cli):
    code, out, err = run_cli('train')
    assert code == 2
    assert out == ''
    assert 'Traceback' not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith('adaptive-cnn train: error: ')
    assert 'CONFIG' in lines[0]
    assert "'adaptive-cnn train --help'" in lines[0]


def test_no_command_is_usage_error(run_cli):
    code, out, err = run_cli()
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and '--help' in lines[0], err


# --- config resolution ------------------------------------------------------------------------------------

@pytest.mark.parametrize('name', ['runs/exp 1', 'out: #1', '123', "it's \"quoted\""])
def test_output_dir_and_data_root_reach_config(name, tmp_path):
    out_dir, data_root = str(tmp_path / name / 'out'), str(tmp_path / name / 'data')
    args = build_parser().parse_args(['summary', 'mnist', '--output-dir', out_dir, '--data-root', data_root])
    cfg = config_from_args(args)
    assert cfg.output.dir == out_dir
    assert cfg.data.root == data_root


def test_plain_directory_names_stay_strings():
    args = build_parser().parse_args(['train', 'cifar10', '--output-dir', '2024', '--data-root', 'null'])
    cfg = config_from_args(args)
    assert cfg.output.dir == '2024'
    assert cfg.data.root == 'null'


def test_precedence_defaults_yaml_overrides(write_yaml):
    path = write_yaml('train:\n  epochs: 7\n  lr: 0.01\nmodel:\n  dropout: 0.2\n')
    cfg = load_config(path, ['train.epochs=3', 'model.dropout=0.1', 'model.dropout=0.05'])
    assert cfg.train.epochs == 3                                 # override beats YAML
    assert cfg.model.dropout == 0.05                             # the last override wins
    assert cfg.train.lr == 0.01                                  # YAML beats default
    assert cfg.train.batch_size == TrainConfig().batch_size      # default where nothing is given
    assert load_config(path).train.epochs == 7
    assert load_config(None).train.epochs == TrainConfig().epochs


@pytest.mark.parametrize('source,overrides', [('mnist', []), ('cifar10', []),
                                              ('mnist', ['train.epochs=3', 'data.root=/datasets', 'output.dir=runs/a'])])
def test_save_config_round_trip(source, overrides, tmp_path, monkeypatch):
    monkeypatch.setenv('ADAPTIVE_CNN_DATA', str(tmp_path / 'data'))
    cfg = load_config(source, overrides)
    path = tmp_path / 'run' / 'config.yaml'
    save_config(cfg, path)
    assert path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ['config.yaml']  # no temporary file left behind
    back = load_config(path)
    assert back == cfg
    assert asdict(back) == asdict(cfg)


def test_data_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv('ADAPTIVE_CNN_DATA', str(tmp_path / 'datasets'))
    assert load_config('mnist').data.root == str(tmp_path / 'datasets')
    assert load_config('mnist', ['data.root=/elsewhere']).data.root == '/elsewhere'
    args = build_parser().parse_args(['summary', 'mnist', '--data-root', str(tmp_path / 'x')])
    assert config_from_args(args).data.root == str(tmp_path / 'x')


def test_data_root_default_without_environment(monkeypatch):
    monkeypatch.delenv('ADAPTIVE_CNN_DATA', raising=False)
    assert Path(load_config('mnist').data.root) == Path('data')


def test_cli_import_is_light():
    code = ('import sys, adaptive_cnn.cli; '
            'print(sorted(m for m in sys.modules if m.split(".")[0] in ("nbdev", "fastcore")))')
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    # fastcore.basics is a runtime requirement (`@patch`); nbdev and the rest of fastcore are development tools
    assert proc.stdout.strip() == "['fastcore', 'fastcore.basics', 'fastcore.imports']"


# --- extras: a plain install trains; a feature whose extra is missing says how to install it ------------------------

WITHOUT_EXTRAS = ('import sys\n'
                  'for name in ("pytorch_grad_cam", "cv2", "onnx", "onnxscript", "onnxruntime"): sys.modules[name] = None\n'
                  'from adaptive_cnn.cli import main\n'
                  'raise SystemExit(main(sys.argv[1:]))\n')


def without_extras(*args, **kwargs) -> subprocess.CompletedProcess:
    "`adaptive-cnn *args` in a fresh interpreter where grad-cam, OpenCV and the ONNX packages cannot be imported."
    return subprocess.run([sys.executable, '-c', WITHOUT_EXTRAS, *map(str, args)], capture_output=True, text=True, timeout=600, **kwargs)


def test_a_plain_install_trains_evaluates_and_names_the_missing_extras(tmp_path, data_root):
    run = tmp_path/'run'
    proc = without_extras('train', 'mnist', '--output-dir', run, '--no-progress', '--set', 'train.epochs=1',
                          '--set', 'data.train_subset=1000', '--set', 'data.val_size=200')
    assert proc.returncode == 0, proc.stderr
    proc = without_extras('evaluate', run, '--output-dir', tmp_path)
    assert proc.returncode == 0 and (tmp_path/'evaluation'/'metrics.json').is_file(), proc.stderr
    digit = tmp_path/'digit.png'
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(digit)
    proc = without_extras('predict', run, digit, '--gradcam', tmp_path/'cam.png')
    assert proc.returncode == 2 and proc.stdout == '' and not (tmp_path/'cam.png').exists()
    assert error_line(proc.stderr) == ("adaptive-cnn: error: Grad-CAM and the other class activation maps: the pytorch_grad_cam package is not installed; "
                                       "install the extra: pip install 'adaptive_cnn[interpret]'")
    proc = without_extras('export', run, '--format', 'onnx', '--out', tmp_path/'m.onnx')
    assert proc.returncode == 2 and "the ONNX export: the onnx package is not installed" in error_line(proc.stderr)
    assert "pip install 'adaptive_cnn[export]'" in proc.stderr and not (tmp_path/'m.onnx').exists()
