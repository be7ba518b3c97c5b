"""Crash safety through the real command line: a run killed at any moment (SIGKILL), or stopped with Ctrl-C or SIGTERM,
leaves only complete files, and `--resume` finishes it with exactly the weights of an uninterrupted run."""
import json, os, random, re, signal, subprocess, sys, time
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from adaptive_cnn.config import load_config
from adaptive_cnn.run_folder import LOCK_FILE, RUN_FILES
from adaptive_cnn.checkpoint import load_checkpoint
from conftest import cli_subprocess, history, model_weights

# A tiny but real run: 1,024 real MNIST digits, a 5,618-parameter network, 3 epochs of 16 steps with SWA over the last two
# (so a resume restores the weight average) and the 10,000 test digits at the end: about 2 s of work after 4 s of start-up
# on one core. Deterministic kernels and one thread, so an interrupted run can end bit-identical to a whole one.
OVERRIDES = ('model.stem_channels=8', 'model.widths=[8,16]', 'model.depths=[1,1]', 'model.strides=[1,2]',
             'model.classifier_hidden=16', 'data.train_subset=1024', 'data.val_size=128', 'train.epochs=3',
             'train.batch_size=64', 'train.swa_start=0.5', 'train.deterministic=true')
EPOCHS = 3
DEFAULT_SEEDS = (0, 1)              # the default suite; random.Random(seed).random() = 0.84 and 0.13 of the training time
SLOW_SEEDS = tuple(range(2, 12))    # -m slow: ten more moments
TIMEOUT_S = 120                     # as conftest's cli_subprocess


def train_args(out:Path, *extra:str) -> list[str]:
    "The arguments of `adaptive-cnn` for the run in `out`, the same for every run of this file."
    return ['train', 'mnist', '--output-dir', str(out), '--no-progress', *[a for o in OVERRIDES for a in ('--set', o)], *extra]


def child_env() -> dict:
    "The environment of a run (the tests that start one ask for `data_root`, through `reference`)."
    return dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='')   # the same run on any machine


def default_sigint():
    "In the child, before Python starts: SIGINT at its default, so Python turns it into KeyboardInterrupt even when the test runner ignores it."
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_run(out:Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, '-m', 'adaptive_cnn', *train_args(out)], env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)


def resume(out:Path) -> subprocess.CompletedProcess:
    return cli_subprocess(*train_args(out, '--resume'), env=child_env())


@pytest.fixture(scope='module')
def reference(tmp_path_factory, data_root):
    "One uninterrupted run: its folder and the time from its log's 'training' line to its end (epochs, SWA, test, writes)."
    out = tmp_path_factory.mktemp('crash_safety')/'reference'
    child = start_run(out)
    wait_for_log(out, 'training ', child)
    start = time.perf_counter()
    stdout, stderr = child.communicate(timeout=TIMEOUT_S)
    wall_s = time.perf_counter() - start
    assert child.returncode == 0, stderr
    assert 'Traceback' not in stderr and stderr.strip() == '', stderr
    epoch_s = [json.loads(line)['train_time_s'] for line in (out/'metrics.jsonl').read_text().splitlines()]
    return dict(out=out, wall_s=wall_s, epoch_s=epoch_s)


# ---- what a folder may hold at any moment ---------------------------------------------------------------------

TEMPORARY = re.compile(r'\.[^/]+\.[^/]*\.tmp')   # atomic_write's hidden `.NAME.XXXXXX.tmp` files
PNG_END = b'IEND\xaeB`\x82'


def check_files_complete(out:Path, ref:Path, ctx:str):
    "Every file in the run folder `out` is complete, or a hidden temporary file; nothing is half-written under a final name."
    if not out.exists(): return
    for path in sorted(p for p in out.rglob('*') if p.is_file()):
        name = path.relative_to(out).as_posix()
        folder, _, base = name.rpartition('/')
        if TEMPORARY.fullmatch(base) and folder in ('', 'checkpoints'): continue
        # TensorBoard's event files are logs like train.log, appended record by record (each with its checksum):
        # a record cut short by a crash is dropped by the reader, and a resumed run purges what follows its checkpoint
        if folder == 'tensorboard' and base.startswith('events.out.tfevents.'): continue
        assert name in RUN_FILES or name == LOCK_FILE, f'{ctx}: unexpected file {name} in the run folder'
    for path in sorted((out/'checkpoints').glob('*.pth')) if (out/'checkpoints').is_dir() else []:
        state = load_checkpoint(path)                     # raises CheckpointError for a truncated file
        assert isinstance(state['model'], dict) and state['model'], f'{ctx}: {path.name} holds no weights'
    if (out/'metrics.jsonl').exists():
        text = (out/'metrics.jsonl').read_text(encoding='utf-8')
        assert text == '' or text.endswith('\n'), f'{ctx}: metrics.jsonl ends in the middle of a line: {text[-200:]!r}'
        lines = text.splitlines()
        for i, line in enumerate(lines):
            try: json.loads(line)
            except json.JSONDecodeError: pytest.fail(f'{ctx}: metrics.jsonl line {i + 1} is not JSON: {line!r}')
        epochs = [json.loads(l)['epoch'] for l in lines]
        assert epochs == list(range(1, len(epochs) + 1)), f'{ctx}: metrics.jsonl epochs {epochs}'
    for name in ('results.json', 'environment.json'):
        if (out/name).exists():
            try: json.loads((out/name).read_text(encoding='utf-8'))
            except json.JSONDecodeError: pytest.fail(f'{ctx}: {name} is not complete JSON: {(out/name).read_text()[-200:]!r}')
    if (out/'config.yaml').exists():   # YAML cut short may still parse: it must be the whole config
        cfg, expected = load_config(str(out/'config.yaml')), load_config(str(ref/'config.yaml'))
        assert replace(cfg, output=expected.output) == expected, f'{ctx}: config.yaml differs from the reference run\'s'
    if (out/'training_curves.png').exists():
        png = (out/'training_curves.png').read_bytes()
        assert png.startswith(b'\x89PNG') and png.endswith(PNG_END), f'{ctx}: training_curves.png is truncated ({len(png)} bytes)'


def check_same_as_reference(out:Path, ref:Path, ctx:str):
    "The finished run in `out` ended exactly as the uninterrupted reference run did."
    results, expected = json.loads((out/'results.json').read_text()), json.loads((ref/'results.json').read_text())
    assert results['test_acc'] == expected['test_acc'], f'{ctx}: test_acc {results["test_acc"]} != {expected["test_acc"]}'
    assert results['best_model'] == expected['best_model'], ctx
    for name in ('best_model.pth', 'best_epoch.pth', 'last.pth', 'swa_model.pth'):
        a, b = model_weights(out/'checkpoints'/name), model_weights(ref/'checkpoints'/name)
        assert a.keys() == b.keys(), f'{ctx}: {name}'
        for k in a: assert torch.equal(a[k], b[k]), f'{ctx}: {name}: {k} differs from the uninterrupted run'
    assert [h['epoch'] for h in history(out)] == list(range(1, EPOCHS + 1)), ctx
    assert history(out) == history(ref), f'{ctx}: metrics.jsonl differs from the uninterrupted run\'s'
    left = [p.name for p in out.rglob('.*') if p.is_file() and p.name != LOCK_FILE]
    assert not left, f'{ctx}: temporary files left after the resumed run'


# ---- SIGKILL at a random moment -------------------------------------------------------------------------------

def sigkill_trial(seed:int, reference:dict, tmp_path:Path):
    "Kill a run at a random moment of its training (as long as the reference's), check its files, resume it and compare."
    out = tmp_path/'run'
    delay = random.Random(seed).uniform(0, reference['wall_s'])
    child = start_run(out)
    wait_for_log(out, 'training ', child)         # the start-up (imports, data) is not what this tests
    time.sleep(delay)
    finished = child.poll() is not None
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=TIMEOUT_S)
    ctx = (f'seed {seed}: SIGKILL {delay:.2f} s into training (the reference trained for {reference["wall_s"]:.2f} s)'
           + (' (the run had already finished)' if finished else ''))
    check_files_complete(out, reference['out'], ctx)
    last = out/'checkpoints'/'last.pth'
    had_checkpoint = last.is_file()
    print(f'{ctx}; left: {sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) if out.exists() else "no folder"}'
          + (f', last.pth after epoch {load_checkpoint(last)["epoch"]}' if had_checkpoint else ''))
    p = resume(out)
    assert p.returncode == 0, f'{ctx}; --resume exited {p.returncode}:\n{p.stderr}'
    assert 'Traceback' not in p.stderr, f'{ctx}:\n{p.stderr}'
    if not had_checkpoint:
        assert 'starting from the beginning' in p.stdout + p.stderr, f'{ctx}; no last.pth, yet --resume said:\n{p.stdout}{p.stderr}'
    check_files_complete(out, reference['out'], ctx + ', after --resume')
    check_same_as_reference(out, reference['out'], ctx)


@pytest.mark.parametrize('seed', DEFAULT_SEEDS, ids=range(len(DEFAULT_SEEDS)))
def test_sigkill_then_resume_completes(seed, reference, tmp_path):
    sigkill_trial(seed, reference, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize('seed', SLOW_SEEDS)
def test_sigkill_then_resume_completes_ten_more(seed, reference, tmp_path):
    sigkill_trial(seed, reference, tmp_path)


# ---- Ctrl-C and SIGTERM -----------------------------------------------------------------------------------------

def wait_for_log(out:Path, text:str, child:subprocess.Popen, timeout_s:float=TIMEOUT_S):
    "Wait until a line of out/train.log contains `text` (the run writes it as it goes)."
    log, end = out/'train.log', time.monotonic() + timeout_s
    while time.monotonic() < end:
        if log.exists() and text in log.read_text(encoding='utf-8', errors='replace'): return
        if child.poll() is not None:
            pytest.fail(f'the run ended (exit {child.returncode}) before its log said {text!r}:\n{child.stderr.read()}')
        time.sleep(0.005)
    pytest.fail(f'no {text!r} in {log} after {timeout_s} s')


# SIGINT half-way through epoch 1 (no epoch finished, no best_model.pth yet), SIGTERM half-way through epoch 2 (the first
# SWA epoch: the weight average and SWALR must be restored mid-epoch)
@pytest.mark.parametrize('sig, code, epoch, started', [(signal.SIGINT, 130, 1, 'training '), (signal.SIGTERM, 143, 2, 'epoch   1/')],
                         ids=['SIGINT', 'SIGTERM'])
def test_interrupt_saves_last_checkpoint_then_resume_completes(sig, code, epoch, started, reference, tmp_path):
    out = tmp_path/'run'
    child = start_run(out)
    wait_for_log(out, started, child)             # the epoch starts right after this line
    delay = reference['epoch_s'][epoch - 1] / 2   # about half-way through it
    time.sleep(delay)
    child.send_signal(sig)
    stdout, stderr = child.communicate(timeout=TIMEOUT_S)
    mid_epoch = f'epoch {epoch:>3}/' not in (out/'train.log').read_text(encoding='utf-8')   # the epoch had not ended
    ctx = f'{sig.name} {delay:.2f} s into epoch {epoch} ({"mid-epoch" if mid_epoch else "it had ended"})'
    print(ctx)
    assert child.returncode == code, f'{ctx}: exit {child.returncode}, expected {code}\nstdout:\n{stdout}\nstderr:\n{stderr}'
    assert 'Traceback' not in stderr, f'{ctx}:\n{stderr}'
    lines = stderr.splitlines()
    assert len(lines) == 1, f'{ctx}: expected one line on stderr, got {len(lines)}:\n{stderr}'
    assert lines[0].startswith('adaptive-cnn: interrupted') and '--resume' in lines[0], f'{ctx}: {lines[0]}'
    last = out/'checkpoints'/'last.pth'
    assert last.is_file(), f'{ctx}: no checkpoints/last.pth after the interruption'
    state = load_checkpoint(last)
    if mid_epoch:
        assert state.get('epoch_progress') is not None, f'{ctx}: last.pth does not store the position inside the epoch'
    assert state['epoch'] == epoch - (1 if mid_epoch else 0), f'{ctx}: last.pth is from after epoch {state["epoch"]}'
    check_files_complete(out, reference['out'], ctx)
    p = resume(out)
    assert p.returncode == 0, f'{ctx}; --resume exited {p.returncode}:\n{p.stderr}'
    assert 'Traceback' not in p.stderr, f'{ctx}:\n{p.stderr}'
    check_same_as_reference(out, reference['out'], ctx)


# ---- a kill between the two writes at the end of an epoch -------------------------------------------------------

class Killed(BaseException):
    "A SIGKILL at that point of the run: nothing after it runs, no handler sees it."


@pytest.fixture
def one_thread():
    "Train in this process on one thread, as the runs above do (and fast on a busy machine: no threads spinning)."
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize('kind', ['best single model', 'EMA model'])
def test_kill_between_last_and_best_checkpoint_is_repaired_by_resume(tmp_path, monkeypatch, one_thread, kind):
    from adaptive_cnn import training
    from adaptive_cnn.testing import TINY_MODEL, save_npz_dataset, shapes_dataset
    raw = shapes_dataset(600, 100, num_classes=4, size=28)
    save_npz_dataset(tmp_path/'bars.npz', raw.train, raw.test, raw.classes)
    cfg = lambda name: load_config('mnist', [
        *TINY_MODEL, f'data.dataset={tmp_path/"bars.npz"}', 'data.classes=null', 'data.num_classes=null', 'data.mean=null',
        'data.std=null', 'data.val_size=200', 'train.epochs=4', 'train.steps_per_epoch=3', 'train.batch_size=32',
        'train.swa_start=null', 'train.ema_decay=0.9', 'train.precision=fp32', 'train.deterministic=true',
        f'output.dir={tmp_path/name}'])
    if kind == 'EMA model':   # the EMA wins every epoch that improves: best_model.pth is rebuilt from last.pth's EMA
        monkeypatch.setattr(training.Trainer, '_best_of_epoch', lambda self, m: (kind, self.ema_model.module, m['ema_val_acc']))
    whole = training.Trainer(cfg('whole'), progress=False, echo=False)
    whole.fit()
    whole.close()
    accs = [max(h['val_acc'], h['ema_val_acc']) if kind == 'EMA model' else h['val_acc'] for h in whole.history]
    improving = [e + 1 for e, a in enumerate(accs) if a > max(accs[:e], default=-1)]
    assert len(improving) >= 2, f'the data must improve after the first epoch: {accs}'
    epoch = improving[1]           # best_model.pth of an earlier epoch is on disk when this one's is written

    write = training.save_checkpoint
    def killed_before_best(state, path):
        if Path(path).name == 'best_model.pth' and state['epoch'] == epoch: raise Killed
        write(state, path)
    monkeypatch.setattr(training, 'save_checkpoint', killed_before_best)
    killed = training.Trainer(cfg('killed'), progress=False, echo=False)
    with pytest.raises(Killed): killed.fit()
    killed.close()
    monkeypatch.setattr(training, 'save_checkpoint', write)
    ckpt = tmp_path/'killed'/'checkpoints'
    last, best = load_checkpoint(ckpt/'last.pth'), load_checkpoint(ckpt/'best_model.pth')
    assert (last['epoch'], last['best_epoch'], last['best_kind']) == (epoch, epoch, kind)
    assert best['epoch'] == improving[0]                         # one improvement behind: the two disagree

    resumed = training.Trainer(cfg('killed'), resume=True, progress=False, echo=False)
    best = load_checkpoint(ckpt/'best_model.pth')
    assert (best['epoch'], best['kind']) == (epoch, kind)       # repaired as the run resumed, before any training
    assert 'written again from last.pth' in (tmp_path/'killed'/'train.log').read_text()
    resumed.fit()
    resumed.close()
    for name in ('best_model.pth', 'last.pth'):
        a, b = load_checkpoint(tmp_path/'whole'/'checkpoints'/name), load_checkpoint(ckpt/name)
        assert (a['epoch'], a.get('kind'), a.get('best_epoch')) == (b['epoch'], b.get('kind'), b.get('best_epoch')), name
        assert a['model'].keys() == b['model'].keys()
        for k in a['model']: assert torch.equal(a['model'][k], b['model'][k]), f'{name}: {k}'
