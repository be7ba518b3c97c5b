"""Every bad config is reported by the CLI as one line on stderr, exit code 2, no traceback:
the line names where the value came from (file or `--set`), the key, and what is allowed."""
from dataclasses import dataclass, fields

import pytest

from adaptive_cnn.config import Config, TrainConfig
from conftest import ERROR_PREFIX, cli_subprocess, error_line

TRAIN_KEYS = [f'train.{f.name}' for f in fields(TrainConfig)]
SECTIONS = list(Config.sections())

MALFORMED = 'train:\n  epochs: 5\n  lr: 0.1: 2\nmodel:\n  dropout: 0.1\n'
MALFORMED_TAB = ('data:\n  channels: 1\nmodel:\n  dropout: 0.1\ntrain:\n  epochs: 5\n'
                 '\tlr: 0.1\n')


def _line_of(text:str, marker:str) -> int:
    "1-based number of the line of `text` containing `marker`."
    return next(i for i, l in enumerate(text.splitlines(), 1) if marker in l)


@dataclass
class Case:
    yaml: str|None               # contents of the config file written to tmp_path (None: no file)
    args: tuple                  # arguments after `summary`; '{cfg}' stands for the file's path
    expect: list                 # substrings the error line must contain
    origin: str = '{cfg}'        # where the value came from: the file's path, or the override / name given
    file_name: str = 'config.yaml'

    def argv(self, path):
        return [str(path) if a == '{cfg}' else a for a in self.args]


CASES = [
    pytest.param(Case('data:\n  val_size: 0\n', ('{cfg}',), ['data.val_size', 'out of range', 'expected an integer > 0']),
                 id='zero-validation-images'),
    pytest.param(Case('train:\n  optimizer: sgd\n  momentum: 0\n  nesterov: true\n', ('{cfg}',),
                      ['Nesterov momentum needs train.momentum > 0']),
                 id='nesterov-without-momentum'),
    pytest.param(Case('train:\n  epoch: 5\n', ('{cfg}',),
                      ["unknown key in train 'train.epoch'", "did you mean 'train.epochs'", 'valid: ', *TRAIN_KEYS]),
                 id='unknown-key'),
    pytest.param(Case('trian:\n  epochs: 5\n', ('{cfg}',),
                      ["unknown section 'trian'", "did you mean 'train'", 'valid: ', *SECTIONS]),
                 id='unknown-section'),
    pytest.param(Case('train:\n  epochs: five\n', ('{cfg}',),
                      ['train.epochs', '"five"', 'wrong type', 'expected an integer', '> 0']),
                 id='wrong-type-string-for-int'),
    pytest.param(Case('train:\n  epochs: 2.5\n', ('{cfg}',),
                      ['train.epochs', '2.5', 'wrong type', 'expected an integer']),
                 id='wrong-type-float-for-int'),
    pytest.param(Case('train:\n  lr: -0.1\n', ('{cfg}',),
                      ['train.lr', '-0.1', 'out of range', 'expected a number > 0']),
                 id='negative-lr'),
    pytest.param(Case('model:\n  dropout: 1.0\n', ('{cfg}',),
                      ['model.dropout', '1.0', 'out of range', '>= 0 and < 1']),
                 id='dropout-one'),
    pytest.param(Case('train:\n  epochs: 0\n', ('{cfg}',),
                      ['train.epochs', 'out of range', 'expected an integer > 0']),
                 id='zero-epochs'),
    pytest.param(Case(None, ('{cfg}',), ["config file '{cfg}' does not exist", 'cifar10', 'mnist'],
                      file_name='missing/nope.yaml'),
                 id='missing-config-file'),
    pytest.param(Case(None, ('mnsit',), ["unknown config 'mnsit'", "did you mean 'mnist'", 'cifar10, mnist'],
                      origin='mnsit'),
                 id='unknown-builtin-name'),
    pytest.param(Case(MALFORMED, ('{cfg}',),
                      [f'{{cfg}} line {_line_of(MALFORMED, "0.1: 2")}: malformed YAML', 'mapping values']),
                 id='malformed-yaml'),
    pytest.param(Case(MALFORMED_TAB, ('{cfg}',),
                      [f'{{cfg}} line {_line_of(MALFORMED_TAB, chr(9))}: malformed YAML', "'\\t'"]),
                 id='malformed-yaml-tab'),
    pytest.param(Case('- train\n- model\n', ('{cfg}',),
                      ['a config must be a mapping of sections', 'got list', *SECTIONS]),
                 id='top-level-list'),
    pytest.param(Case('train: 5\n', ('{cfg}',),
                      ["section 'train' must be a mapping of keys to values", 'got 5']),
                 id='section-not-mapping'),
    pytest.param(Case(None, ('mnist', '--set', 'train.epochs'),
                      ['--set train.epochs:', 'expected SECTION.KEY=VALUE', 'train.epochs=5'],
                      origin='--set train.epochs'),
                 id='set-without-equals'),
    pytest.param(Case(None, ('mnist', '--set', 'train.epoch=3'),
                      ["unknown key in train 'train.epoch'", "did you mean 'train.epochs'", *TRAIN_KEYS],
                      origin='--set train.epoch=3'),
                 id='set-unknown-key'),
    pytest.param(Case('model:\n  widths: [32, 64, 128]\n  depths: [2, 2]\n  strides: [1, 2, 2]\n', ('{cfg}',),
                      ['model.widths', 'model.depths', 'model.strides', 'one entry per stage', 'got 3, 2 and 3']),
                 id='inconsistent-stages'),
    pytest.param(Case('data:\n  channels: 3\n  mean: [0.5]\n  std: [0.25, 0.25, 0.25]\n', ('{cfg}',),
                      ['data.mean', 'has 1 value but', 'data.channels is 3', 'one per channel']),
                 id='mean-wrong-channels'),
    pytest.param(Case('train:\n  warmup_fraction: 0.8\n  swa_start: 0.5\n', ('{cfg}',),
                      ['train.warmup_fraction = 0.8', 'train.swa_start = 0.5', 'must end before SWA starts']),
                 id='warmup-past-swa-start'),
    pytest.param(Case('train:\n  lr: true\n', ('{cfg}',),
                      ['train.lr', 'wrong type', 'expected a number > 0']),
                 id='bool-for-float'),
    pytest.param(Case(None, ('mnist', '--set', 'train.lr=true'),
                      ['train.lr', 'wrong type', 'expected a number > 0'], origin='--set train.lr=true'),
                 id='set-bool-for-float'),
    # Cross-key checks: the value that breaks the config comes from the override, so the override must be named.
    pytest.param(Case(None, ('mnist', '--set', 'model.depths=[2,2]'),
                      ['model.depths', 'one entry per stage'], origin='--set model.depths=[2,2]'),
                 id='set-inconsistent-stages'),
    pytest.param(Case(None, ('mnist', '--set', 'data.mean=[0.1,0.2]'),
                      ['data.mean', 'one per channel'], origin='--set data.mean=[0.1,0.2]'),
                 id='set-mean-wrong-channels'),
    # An input too small for the network's downsampling is a config mistake, not an internal error.
    pytest.param(Case(None, ('mnist', '--set', 'data.image_size=[1,1]'),
                      ['data.image_size'], origin='--set data.image_size=[1,1]'),
                 id='set-image-too-small'),
]


def _setup(case:Case, tmp_path):
    "Write the case's file (if any); return (argv after 'summary', expected substrings, expected origin)."
    path = tmp_path / case.file_name
    if case.yaml is not None: path.write_text(case.yaml, encoding='utf-8')
    fill = lambda s: s.replace('{cfg}', str(path))
    return case.argv(path), [fill(s) for s in case.expect], fill(case.origin)


@pytest.mark.parametrize('case', CASES)
def test_bad_config_is_one_line_error(case, tmp_path, run_cli):
    argv, expect, origin = _setup(case, tmp_path)
    code, out, err = run_cli('summary', *argv)
    assert code == 2, err
    assert out == ''
    line = error_line(err)
    assert origin in line, f'the error does not name {origin!r}: {line}'
    for s in expect: assert s in line, f'{s!r} missing from: {line}'


def test_file_origin_is_the_file_not_a_builtin(tmp_path, run_cli):
    "A value from a user file is attributed to that file; a value from an override to that override."
    path = tmp_path / 'run.yaml'
    path.write_text('train:\n  epochs: 5\n', encoding='utf-8')
    code, out, err = run_cli('summary', path, '--set', 'train.lr=-1')
    assert code == 2 and out == ''
    line = error_line(err)
    assert line.startswith(f'{ERROR_PREFIX}--set train.lr=-1: train.lr = -1 is out of range'), line
    assert str(path) not in line


def test_debug_prints_traceback(write_yaml, run_cli):
    path = write_yaml('train:\n  epoch: 5\n')
    code, out, err = run_cli('summary', path, '--debug')
    assert code == 2
    assert out == ''
    assert 'Traceback (most recent call last)' in err
    assert 'ConfigError' in err
    last = err.splitlines()[-1]
    assert last.startswith(ERROR_PREFIX) and "did you mean 'train.epochs'" in last and str(path) in last


SUBPROCESS_CASES = [p for p in CASES if p.id in ('unknown-key', 'missing-config-file', 'set-without-equals')]


@pytest.mark.parametrize('case', SUBPROCESS_CASES)
def test_bad_config_real_process(case, tmp_path):
    argv, expect, origin = _setup(case, tmp_path)
    proc = cli_subprocess('summary', *argv, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ''
    line = error_line(proc.stderr)
    assert origin in line
    for s in expect: assert s in line, f'{s!r} missing from: {line}'
