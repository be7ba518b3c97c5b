"""One writer per run folder: two real `adaptive-cnn train` processes on one folder, as a user starts them by mistake.
The loser exits with one line naming the holder (process, host, start time); the winner's files stay its own."""
import json, os, socket, subprocess, sys, time
from pathlib import Path

import pytest
import yaml

from adaptive_cnn.checkpoint import load_checkpoint
from adaptive_cnn.run_folder import lock_holder
from adaptive_cnn.testing import save_npz_dataset, shapes_dataset
from conftest import error_line, history


@pytest.fixture(scope='module')
def shapes(tmp_path_factory) -> Path:
    "600 synthetic 28×28 grey images of 10 classes: MNIST's network trains on them in a fraction of a second an epoch."
    raw = shapes_dataset(num_train=600, num_test=100, num_classes=10)
    path = tmp_path_factory.mktemp('data')/'shapes.npz'
    save_npz_dataset(path, raw.train, raw.test, raw.classes)
    return path


# a 5,618-parameter network (as in test_crash_safety.py): an epoch of 600 images takes a fraction of a second
TINY = ('model.stem_channels=8', 'model.widths=[8,16]', 'model.depths=[1,1]', 'model.strides=[1,2]',
        'model.classifier_hidden=16')


def train(out:Path, data:Path, seed:int, epochs:int, *extra:str) -> subprocess.Popen:
    "Start `adaptive-cnn train mnist` on `data` into `out` in its own process."
    args = ['train', 'mnist', '--data', str(data), '--output-dir', str(out), '--no-progress', '--set', f'train.seed={seed}',
            '--set', f'train.epochs={epochs}', '--set', 'data.val_size=100', '--set', 'train.batch_size=64',
            '--set', 'train.swa_start=null', *[a for o in TINY for a in ('--set', o)], *extra]
    return subprocess.Popen([sys.executable, '-m', 'adaptive_cnn', *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS='1'))


def finish(proc:subprocess.Popen, timeout:float=300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_for_holder(out:Path, proc:subprocess.Popen, timeout:float=120) -> str:
    "The holder line of `out`'s lock once `proc` has taken it."
    deadline = time.monotonic() + timeout
    while (holder := lock_holder(out)) is None:
        assert proc.poll() is None, f'the run ended before it was seen holding its folder:\n{proc.communicate()}'
        assert time.monotonic() < deadline, 'the run never took the lock on its folder'
        time.sleep(0.05)
    return holder


def assert_whole_run(out:Path, seed:int, epochs:int):
    "The folder holds one run, the one with `seed`: its config, every epoch once, results and loadable checkpoints."
    assert yaml.safe_load((out/'config.yaml').read_text())['train']['seed'] == seed
    assert [h['epoch'] for h in history(out)] == list(range(1, epochs + 1))
    assert json.loads((out/'results.json').read_text())['test_acc'] > 0.2       # chance is 0.1
    for name in ('last.pth', 'best_model.pth'):
        assert load_checkpoint(out/'checkpoints'/name)['config']['train']['seed'] == seed


def test_two_runs_started_a_second_apart(shapes, tmp_path):
    "The issue's case: the same command twice, one second apart, different seeds: one trains, the other is refused."
    out = tmp_path/'run'
    first = train(out, shapes, seed=1, epochs=12)
    time.sleep(1)
    second = train(out, shapes, seed=7, epochs=12)
    (code1, _, err1), (code2, _, err2) = finish(first), finish(second)
    assert sorted([code1, code2]) == [0, 2], (code1, err1, code2, err2)
    winner, loser_err, seed = (first, err2, 1) if code1 == 0 else (second, err1, 7)
    line = error_line(loser_err)
    assert f'{out} is in use by a run that is still going (process {winner.pid} on {socket.gethostname()}, started ' in line
    assert line.endswith('wait for it to end or stop it, or choose another --output-dir'), line
    assert_whole_run(out, seed, 12)
    assert lock_holder(out) is None                      # the winner let go when it ended


def test_resume_and_overwrite_are_refused_while_the_run_goes_on(shapes, tmp_path):
    "--overwrite one second into a run used to replace the folder under it; now it, and --resume, name the holder."
    out = tmp_path/'run'
    running = train(out, shapes, seed=1, epochs=12)
    holder = wait_for_holder(out, running)
    assert holder.startswith(f'process {running.pid} on {socket.gethostname()}, started '), holder
    refused = [train(out, shapes, 7, 12, flag) for flag in ('--overwrite', '--resume')] + [train(out, shapes, 7, 12)]
    for proc in refused:
        code, _, err = finish(proc)
        assert code == 2, err
        assert f'{out} is in use by a run that is still going ({holder});' in error_line(err)
    code, stdout, err = finish(running)
    assert code == 0, err
    assert stdout.count('epoch  12/12') == 1 and 'results in' in stdout
    assert_whole_run(out, 1, 12)
