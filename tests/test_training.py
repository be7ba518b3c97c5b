"""Training on small subsets of the real data: resume equivalence, crash-safe checkpoints, the NaN guard, the CLI."""
import json, os, re, signal, subprocess, sys, time

import pytest
import torch

from adaptive_cnn.config import load_config
from adaptive_cnn.data import load_data
from adaptive_cnn.training import Trainer
from adaptive_cnn.errors import TrainingError
from adaptive_cnn.checkpoint import load_checkpoint, save_checkpoint
from adaptive_cnn.testing import TINY_MODEL
from conftest import error_line


def small_mnist(tmp_path, *extra, network=TINY_MODEL):
    """The MNIST recipe on 512 real digits (tests using it ask for `data_root`, through `mnist_data`), with the tiny
    network of `adaptive_cnn.testing` unless `network=()`: resuming, overwriting, the NaN guard do not depend on its size."""
    return load_config('mnist', ['data.train_subset=512', 'data.val_size=256', 'train.batch_size=64', 'train.epochs=4',
                                 'train.swa_start=0.5', 'train.deterministic=true', f'output.dir={json.dumps(str(tmp_path))}',
                                 *network, *extra])


@pytest.fixture(scope='module')
def mnist_data(tmp_path_factory, data_root):
    return load_data(small_mnist(tmp_path_factory.mktemp('data')))


def weights(path):
    return load_checkpoint(path)['model']


@pytest.mark.parametrize('stop_after', [1, 3])    # before SWA starts, and inside the SWA phase
def test_resumed_run_ends_with_the_same_weights(tmp_path, mnist_data, stop_after):
    whole = Trainer(small_mnist(tmp_path/'whole'), progress=False, data=mnist_data)
    whole.fit(); whole.close()
    first = Trainer(small_mnist(tmp_path/'split'), progress=False, data=mnist_data)
    assert first.fit(until_epoch=stop_after) == {'epochs_done': stop_after}
    first.close()
    second = Trainer(small_mnist(tmp_path/'split'), resume=True, progress=False, data=mnist_data)
    assert second.epoch == stop_after
    second.fit(); second.close()
    a, b = weights(tmp_path/'whole'/'checkpoints'/'last.pth'), weights(tmp_path/'split'/'checkpoints'/'last.pth')
    assert a.keys() == b.keys()
    for k in a: assert torch.equal(a[k], b[k]), k
    swa_a, swa_b = weights(tmp_path/'whole'/'checkpoints'/'swa_model.pth'), weights(tmp_path/'split'/'checkpoints'/'swa_model.pth')
    for k in swa_a: assert torch.equal(swa_a[k], swa_b[k]), k
    history = lambda p: [{k: v for k, v in json.loads(l).items() if 'time' not in k and 'per_s' not in k}
                         for l in (p/'metrics.jsonl').read_text().splitlines()]
    assert history(tmp_path/'whole') == history(tmp_path/'split')


def test_loss_decreases_on_real_subset(tmp_path, mnist_data):
    trainer = Trainer(small_mnist(tmp_path, 'train.deterministic=false', network=()), progress=False, data=mnist_data)
    results = trainer.fit(); trainer.close()
    history = trainer.history
    assert history[-1]['train_loss'] < history[0]['train_loss'] - 0.3, history
    assert results['test_acc'] > 0.5, results       # 512 training images, 4 epochs; chance is 0.1


def test_nan_loss_stops_with_epoch_and_step_and_keeps_last_checkpoint(tmp_path, mnist_data):
    trainer = Trainer(small_mnist(tmp_path), progress=False, data=mnist_data)
    trainer.fit(until_epoch=1)
    good = weights(tmp_path/'checkpoints'/'last.pth')
    calls = []
    def poisoned(logits, targets):
        calls.append(1)
        loss = torch.nn.functional.cross_entropy(logits, targets)
        return loss * float('nan') if len(calls) >= 3 else loss
    trainer.loss_fn = poisoned
    with pytest.raises(TrainingError, match=r'NaN or infinite at epoch 2, step 3 \(global step 11\)'):
        trainer.fit()
    trainer.close()
    state = load_checkpoint(tmp_path/'checkpoints'/'last.pth')
    assert state['epoch'] == 1
    for k in good: assert torch.equal(state['model'][k], good[k])


CHILD = r'''
import sys, torch
from adaptive_cnn.checkpoint import save_checkpoint
state = {"model": {"w": torch.randn(4_000_000)}, "config": {}}
print("ready", flush=True)
while True: save_checkpoint(state, sys.argv[1])
'''


def test_killed_while_writing_leaves_a_loadable_checkpoint(tmp_path):
    path = tmp_path/'last.pth'
    old = {'model': {'w': torch.arange(10.)}, 'config': {'marker': 'old'}}
    save_checkpoint(old, path)
    for trial, delay in enumerate((0.15, 0.4, 0.9)):
        child = subprocess.Popen([sys.executable, '-c', CHILD, str(path)], stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == 'ready'
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        child.communicate()                         # waits, and closes the pipe
        state = load_checkpoint(path)               # whichever version, it is complete
        assert state['config'] in ({'marker': 'old'}, {}), trial
        assert state['model']['w'].numel() in (10, 4_000_000)


# ---- through the command line ---------------------------------------------------------------------------------

def test_cli_train_writes_every_artefact_then_evaluate_agrees(tmp_path, run_cli, data_root):
    out = tmp_path/'run'
    args = ['mnist', '--output-dir', str(out), '--no-progress', '--set', 'train.epochs=2', '--set', 'data.train_subset=512',
            '--set', 'data.val_size=256', '--set', 'train.batch_size=128']
    code, stdout, err = run_cli('train', *args)
    assert code == 0, err
    for name in ('config.yaml', 'environment.json', 'train.log', 'metrics.jsonl', 'summary.csv', 'training_curves.png', 'results.json',
                 'checkpoints/last.pth', 'checkpoints/best_model.pth', 'checkpoints/swa_model.pth'):
        assert (out/name).is_file() and (out/name).stat().st_size > 0, name
    assert len((out/'metrics.jsonl').read_text().splitlines()) == 2
    assert len((out/'summary.csv').read_text().splitlines()) == 3             # a header and an epoch a row
    assert 'epoch   2/2' in (out/'train.log').read_text()
    env = json.loads((out/'environment.json').read_text())
    assert env['torch'] == torch.__version__ and env['python'] == '.'.join(map(str, sys.version_info[:3]))
    results = json.loads((out/'results.json').read_text())
    code, stdout, err = run_cli('evaluate', 'mnist', str(out/'checkpoints'/'best_model.pth'))
    assert code == 0, err
    assert f'test accuracy: {results["test_acc"]:.4f}' in stdout

    # the same folder again: refused without --resume or --overwrite, and nothing is touched
    before = (out/'checkpoints'/'last.pth').read_bytes()
    code, stdout, err = run_cli('train', *args)
    assert code == 2 and 'already holds a run; pass --resume' in error_line(err)
    assert (out/'checkpoints'/'last.pth').read_bytes() == before
    # another architecture is named at its first differing layer
    code, stdout, err = run_cli('evaluate', 'cifar10', str(out/'checkpoints'/'best_model.pth'))
    assert code == 2 and 'stem.0.0.weight has shape [32, 1, 3, 3] in the checkpoint but [64, 1, 3, 3]' in error_line(err)


def test_cli_cifar10_smoke_run_with_autoaugment_cutmix_and_swa(tmp_path, run_cli, data_root):
    out = tmp_path/'cifar'
    # the recipe at a quarter of the width (a sixteenth of the compute): the recipe is the point, not the 17.6M weights
    code, stdout, err = run_cli('train', 'cifar10', '--output-dir', str(out), '--no-progress', '--set', 'train.epochs=2',
                                '--set', 'data.train_subset=256', '--set', 'data.val_size=200', '--set', 'train.batch_size=128',
                                '--set', 'model.stem_channels=16', '--set', 'model.widths=[16,32,64,128]')
    assert code == 0, err
    cfg = load_checkpoint(out/'checkpoints'/'last.pth')['config']
    assert cfg['augment']['autoaugment'] == 'cifar10' and cfg['augment']['cutmix_alpha'] == 1.0
    swa = load_checkpoint(out/'checkpoints'/'swa_model.pth')
    results = json.loads((out/'results.json').read_text())
    assert swa['kind'] == 'SWA model' and swa['val_acc'] == results['swa_val_acc']
    last = load_checkpoint(out/'checkpoints'/'last.pth')
    assert last['swa_model'] is not None and last['swa_scheduler']['anneal_epochs'] == 2   # 256 images / 128 per step


def test_resume_without_a_checkpoint_starts_from_the_beginning(tmp_path, mnist_data):
    # a run killed before its first epoch ended has no last.pth: --resume starts it again, and says so
    cfg = small_mnist(tmp_path/'run', 'train.epochs=1')
    (tmp_path/'run').mkdir(); (tmp_path/'run'/'config.yaml').write_text('left by a run killed at its start\n')
    trainer = Trainer(cfg, resume=True, progress=False, data=mnist_data); trainer.fit(); trainer.close()
    log = (tmp_path/'run'/'train.log').read_text()
    assert 'no checkpoint to resume from (checkpoints/last.pth); starting from the beginning' in log
    assert load_checkpoint(tmp_path/'run'/'checkpoints'/'last.pth')['epoch'] == 1
    assert load_config(tmp_path/'run'/'config.yaml').train.epochs == 1        # the stale file was replaced


def test_overwrite_starts_clean_and_stale_temporary_files_go(tmp_path, mnist_data):
    cfg = small_mnist(tmp_path, 'train.epochs=1')
    first = Trainer(cfg, progress=False, data=mnist_data); first.fit(); first.close()
    (tmp_path/'checkpoints'/'.last.pth.abc123.tmp').write_bytes(b'half a checkpoint')
    second = Trainer(cfg, overwrite=True, progress=False, data=mnist_data); second.fit(); second.close()
    assert len(re.findall(r'training [\d,]+ parameters', (tmp_path/'train.log').read_text())) == 1   # the old log is gone
    assert not list((tmp_path/'checkpoints').glob('.*.tmp'))


def test_resume_reads_data_from_the_new_root(tmp_path, mnist_data, data_root):
    cfg = small_mnist(tmp_path, 'train.epochs=2')
    first = Trainer(cfg, progress=False, data=mnist_data); first.fit(until_epoch=1); first.close()
    elsewhere = str(data_root).rstrip('/') + '/./'          # the same folder, named differently
    moved = load_config('mnist', [f'output.dir={json.dumps(str(tmp_path))}', f'data.root={json.dumps(elsewhere)}'])
    second = Trainer(moved, resume=True, progress=False)                       # reads the data from the new root
    assert second.cfg.data.root == elsewhere and second.cfg.train.epochs == 2   # root from this call, recipe from the run
    assert len(second.data.train) == 512
    second.fit(); second.close()
    assert second.epoch == 2


def test_evaluate_without_a_test_split_uses_the_checkpoints_seed(tmp_path, run_cli):
    import numpy as np
    rng = np.random.default_rng(0)
    x = rng.integers(0, 60, (400, 12, 12), dtype=np.uint8); y = np.arange(400) % 2
    x[y == 1, 3:9, 3:9] = 220                           # class 1: a bright square
    np.savez(tmp_path/'sq.npz', x=x, y=y)
    out = tmp_path/'run'
    overrides = [f'data.dataset={json.dumps(str(tmp_path/"sq.npz"))}', 'data.image_size=null', 'data.mean=null', 'data.std=null',
                 'data.classes=null', 'data.num_classes=null', 'data.val_size=40', 'data.invert_threshold=null',
                 'model.stem_pool=false', 'train.epochs=2', 'train.batch_size=64', 'train.seed=1']
    code, stdout, err = run_cli('train', 'mnist', '--output-dir', str(out), '--no-progress', *sum((['--set', o] for o in overrides), []))
    assert code == 0, err
    results = json.loads((out/'results.json').read_text())
    code, stdout, err = run_cli('evaluate', 'mnist', str(out/'checkpoints'/'best_model.pth'), '--set', 'model.stem_pool=false')
    assert code == 0, err
    assert f'test accuracy: {results["test_acc"]:.4f} (' in stdout and 'of 40)' in stdout   # the split the run held out


def test_runs_compares_two_real_runs(mnist_one_epoch, tmp_path, run_cli):
    first = mnist_one_epoch[0]
    code, _, err = run_cli('train', 'mnist', '--output-dir', tmp_path/'second', '--no-progress', '--set', 'train.epochs=1',
                           '--set', 'data.train_subset=3000', '--set', 'data.val_size=500', '--set', 'train.batch_size=128')
    assert code == 0, err
    code, out, err = run_cli('runs', first, tmp_path)                    # a run folder, and a folder holding one
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split() == ['run', 'epochs', 'best_val_acc', 'last_val_acc', 'test_acc', 'best_model', 'wall_s', 'train.batch_size']
    assert [r.split()[0] for r in rows] == [str(first), str(tmp_path/'second')] and rows[1].split()[-1] == '128'
    code, out, err = run_cli('runs', '--json', first, tmp_path/'second')
    records = [json.loads(l) for l in out.splitlines()]
    assert [r['differs'] for r in records] == [['train.batch_size']] * 2
    assert records[1]['test_acc'] == json.loads((tmp_path/'second'/'results.json').read_text())['test_acc']
    assert records[1]['epochs'] == '1/1' and records[1]['best_val_acc'] == json.loads(
        (tmp_path/'second'/'metrics.jsonl').read_text().splitlines()[0])['val_acc']
    code, out, err = run_cli('runs', tmp_path/'nowhere')
    assert code == 2 and 'nowhere: no such folder' in error_line(err)
