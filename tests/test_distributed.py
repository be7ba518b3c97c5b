"""DDP on CPU with gloo: equivalence with one process, sharded metrics, SWA statistics, restarts, launcher errors."""
import importlib.util, json, os, signal, socket, subprocess, sys, time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.optim.swa_utils import update_bn

from adaptive_cnn.config import load_config
from adaptive_cnn.data import load_data, iterate_batches, normalize
from adaptive_cnn.training import BN_REFRESH_BATCH
from adaptive_cnn.checkpoint import load_checkpoint, model_from_checkpoint
from adaptive_cnn.runtime import autocast
from adaptive_cnn.testing import TINY_MODEL, sync_bn_worker
from conftest import error_line, history, model_weights

# Augmentation, dropout and SWA off, fp32, contiguous layout (the CPU's channels_last fp32 convolutions are less exact),
# deterministic kernels: only the process layout differs. Plain SGD at a small learning rate: at the recipe's rates
# early training is chaotic, and float rounding alone is amplified beyond 1e-5 in 20 steps -- two single-process runs
# that differ only in their thread count (1 vs 2) end 5e-3 apart -- so equivalence is only measurable where rounding
# is not amplified. Any real difference (unsynchronised BatchNorm, another shard, summed instead of averaged gradients)
# moves the weights or the BatchNorm statistics far more than the tolerances.
PLAIN = ['train.epochs=1', 'train.precision=fp32', 'train.channels_last=false', 'train.deterministic=true',
         'train.optimizer=sgd', 'train.lr=0.001', 'train.warmup_fraction=0', 'train.swa_start=null', 'model.dropout=0',
         'augment.rotation=0', 'augment.translate=0', 'augment.cutout_size=0', 'distributed.sync_bn=true',
         'data.train_subset=1280', 'data.val_size=200']


def train(data_root:Path, out:Path, *args, timeout=600) -> subprocess.CompletedProcess:
    "`python -m adaptive_cnn train mnist --output-dir out --data-root data_root *args`, checked for success."
    cmd = [sys.executable, '-m', 'adaptive_cnn', 'train', 'mnist', '--output-dir', str(out), '--no-progress',
           '--data-root', str(data_root)]
    proc = subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def sets(*overrides) -> list[str]:
    return [a for o in overrides for a in ('--set', o)]


def test_two_processes_of_32_match_one_process_of_64(tmp_path, data_root):
    train(data_root, tmp_path/'one', *sets(*PLAIN, *TINY_MODEL, 'train.batch_size=64'))
    train(data_root, tmp_path/'two', '--num-procs', 2, *sets(*PLAIN, *TINY_MODEL, 'train.batch_size=32'))
    one, two = model_weights(tmp_path/'one'/'checkpoints'/'last.pth'), model_weights(tmp_path/'two'/'checkpoints'/'last.pth')
    assert one.keys() == two.keys()
    assert load_checkpoint(tmp_path/'two'/'checkpoints'/'last.pth')['step'] == 20          # 20 optimiser steps each
    diff = lambda keys: max((one[k].double() - two[k].double()).abs().max().item() for k in keys)
    weights = [k for k in one if one[k].is_floating_point() and 'running' not in k]
    stats = [k for k in one if 'running' in k]
    assert diff(weights) < 1e-5, diff(weights)
    assert diff(stats) < 1e-4, diff(stats)                  # BatchNorm running means and variances
    assert all(torch.equal(one[k], two[k]) for k in one if not one[k].is_floating_point())   # batches counted alike
    start = model_weights(tmp_path/'one'/'checkpoints'/'best_model.pth')
    assert max((one[k] - start[k]).abs().max().item() for k in weights) == 0   # best_model.pth is this epoch's model
    env = json.loads((tmp_path/'two'/'environment.json').read_text())
    assert (env['processes'], env['backend']) == (2, 'gloo')
    # both runs validated all 200 images, to the same accuracy within one image
    assert [h['val_samples'] for h in history(tmp_path/'two')] == [200]
    assert abs(history(tmp_path/'one')[0]['val_acc'] - history(tmp_path/'two')[0]['val_acc']) <= 1 / 200


def test_sync_batchnorm_on_cpu_matches_batchnorm_on_the_whole_batch(tmp_path):
    x, w = torch.randn(8, 3, 5, 5) * 3 + 1, torch.randn(8, 3, 5, 5)
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    mp.spawn(sync_bn_worker, args=(2, port, x, w, str(tmp_path/'out')), nprocs=2)
    parts = [torch.load(tmp_path/f'out.{r}') for r in range(2)]
    ref_x = x.clone().requires_grad_()
    ref = nn.BatchNorm2d(3).train()
    y = ref(ref_x); (y * w).sum().backward()
    torch.testing.assert_close(torch.cat([p['y'] for p in parts]), y.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.cat([p['grad'] for p in parts]), ref_x.grad, atol=1e-5, rtol=1e-5)
    for p in parts:
        torch.testing.assert_close(p['mean'], ref.running_mean, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(p['var'], ref.running_var, atol=1e-5, rtol=1e-5)


def test_num_procs_run_writes_one_set_of_artefacts_covering_every_sample(tmp_path, data_root):
    out = tmp_path/'run'
    proc = train(data_root, out, '--num-procs', 2, *sets('train.epochs=1', 'data.train_subset=4000', *TINY_MODEL))
    assert proc.stdout.count('results in') == 1 and proc.stdout.count('epoch   1/1') == 1   # rank 0 reports, once
    tensorboard = ['tensorboard'] if importlib.util.find_spec('tensorboard') else []   # rank 0's event files
    # .lock: rank 0 held the folder while the run lasted
    assert sorted(p.name for p in out.iterdir()) == sorted(['.lock', 'checkpoints', 'config.yaml', 'environment.json', 'metrics.jsonl',
                                                           'results.json', 'summary.csv', 'train.log', 'training_curves.png', *tensorboard])
    if tensorboard: assert len(list((out/'tensorboard').glob('events.out.tfevents.*'))) == 2   # the epochs; the hyperparameters
    assert sorted(p.name for p in (out/'checkpoints').iterdir()) == ['best_epoch.pth', 'best_model.pth', 'last.pth', 'swa_model.pth']
    (epoch,) = history(out)
    assert (epoch['train_samples'], epoch['val_samples']) == (4000, 5000)
    results = json.loads((out/'results.json').read_text())
    assert results['test_samples'] == 10000

    # SWA's BatchNorm statistics are those of one process over the whole training split, not of one rank's half
    swa = load_checkpoint(out/'checkpoints'/'swa_model.pth')
    model, cfg = model_from_checkpoint(swa)
    ds = load_data(cfg)
    assert len(ds.train) == 4000
    def bn_stats(images):
        net = model_from_checkpoint(swa)[0].to(memory_format=torch.channels_last)
        batches = (normalize(b.images, cfg.data.mean, cfg.data.std).contiguous(memory_format=torch.channels_last)
                   for b in iterate_batches(images, BN_REFRESH_BATCH))   # the batches Trainer.refresh_bn uses
        with autocast(torch.device('cpu'), cfg.train.precision): update_bn(batches, net)
        return {k: v for k, v in net.state_dict().items() if 'running' in k}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                    # as each worker had: the same bf16 kernels, the same rounding
    try: whole, half = bn_stats(ds.train), bn_stats(ds.train[torch.arange(0, 4000, 2)])
    finally: torch.set_num_threads(threads)
    saved = {k: v for k, v in swa['model'].items() if 'running' in k}
    for k in saved: torch.testing.assert_close(saved[k], whole[k], atol=1e-6, rtol=1e-6)
    # one rank's half would show: a thousand times the tolerance of the match above
    assert max((saved[k] - half[k]).abs().max().item() for k in saved) > 1e-3


def worker_pids(parent:int) -> dict[int, int]:
    "rank → pid of the torchrun workers under `parent`."
    ranks = {}
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            stat = Path(f'/proc/{pid}/stat').read_text()
            env = Path(f'/proc/{pid}/environ').read_bytes().split(b'\0')
        except OSError: continue
        if int(stat.rsplit(')', 1)[1].split()[1]) != parent: continue
        rank = next((int(e[5:]) for e in env if e.startswith(b'RANK=')), None)
        if rank is not None: ranks[rank] = int(pid)
    return ranks


def test_a_killed_worker_is_restarted_and_the_run_resumes_to_the_same_end(tmp_path, data_root):
    # the tiny network: the restart and the exact resume are the point, not the recipe's network
    args = ['--num-procs', 2, *sets('train.epochs=3', 'train.batch_size=64', 'data.train_subset=3000', 'data.val_size=400',
                                     'train.deterministic=true', *TINY_MODEL)]
    train(data_root, tmp_path/'whole', *args)
    run = tmp_path/'killed'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', '--max-restarts', '1',
           '-m', 'adaptive_cnn', 'train', 'mnist', '--output-dir', str(run), '--no-progress', '--data-root', str(data_root),
           *map(str, args)]
    # torchrun's rendezvous store, shared with the workers, can hand restarted gloo workers the addresses of the dead
    # ones (pytorch/pytorch#135712); `adaptive-cnn train --max-restarts` sets this for its own launches
    env = dict(os.environ, OMP_NUM_THREADS='1', TORCH_DISABLE_SHARE_RDZV_TCP_STORE='1')
    with open(tmp_path/'log.txt', 'w') as log:
        agent = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 300
            while not (run/'checkpoints'/'last.pth').is_file() or len(history(run)) < 1:   # first epoch saved
                assert agent.poll() is None and time.monotonic() < deadline, (tmp_path/'log.txt').read_text()
                time.sleep(0.05)
            victim = worker_pids(agent.pid)[1]
            os.kill(victim, signal.SIGKILL)                 # rank 1 dies in the second epoch
            assert agent.wait(timeout=300) == 0, (tmp_path/'log.txt').read_text()
        finally:
            if agent.poll() is None: agent.kill()
    output = (tmp_path/'log.txt').read_text()
    assert 'resuming' in (run/'train.log').read_text(), output
    assert load_checkpoint(run/'checkpoints'/'last.pth')['epoch'] == 3
    assert history(run) == history(tmp_path/'whole')      # same epochs, same numbers: an exact resume
    a, b = model_weights(tmp_path/'whole'/'checkpoints'/'last.pth'), model_weights(run/'checkpoints'/'last.pth')
    for k in a: assert torch.equal(a[k], b[k]), k


def test_two_processes_draw_different_augmentations_and_repeat_them(tmp_path):
    from adaptive_cnn.runtime import seeded_generator
    from adaptive_cnn.augment import BatchAugment
    cfg = load_config('mnist')
    aug = BatchAugment(cfg.augment, 10, fill=(33,))
    images, labels = torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8), torch.arange(16) % 10
    draw = lambda rank: aug(images, labels, seeded_generator(42, 'augment', 3, rank))[0]
    assert torch.equal(draw(0), draw(0)) and torch.equal(draw(1), draw(1))
    assert not torch.equal(draw(0), draw(1))


@pytest.mark.parametrize('args, message', [
    (['--num-gpus', '3'], '--num-gpus 3: this machine has'),
    (['--num-gpus', '2', '--num-procs', '2'], '--num-gpus and --num-procs contradict each other'),
    (['--num-procs', '0'], '--num-procs 0: give a number of at least 1'),
    (['--num-procs', '2', '--set', 'distributed.backend=nccl'], 'distributed.backend = nccl needs GPUs'),
    (['--num-procs', '2', '--set', 'train.precision=fp16'], 'fp16 needs a CUDA GPU'),
    (['--num-procs', '2', '--max-restarts', '-1'], '--max-restarts -1'),
])
def test_launcher_refuses_before_starting_workers(run_cli, tmp_path, args, message):
    if args[:2] == ['--num-gpus', '3'] and torch.cuda.device_count() >= 3: pytest.fail('this test needs fewer than 3 GPUs')
    code, out, err = run_cli('train', 'mnist', '--output-dir', tmp_path/'run', *args)
    line = error_line(err)
    assert code == 2 and message in line, line
    if args[:2] == ['--num-gpus', '3']: assert '--num-procs 3' in line
    assert not (tmp_path/'run'/'checkpoints').exists()


def test_bad_data_under_num_procs_is_reported_once(tmp_path):
    proc = subprocess.run([sys.executable, '-m', 'adaptive_cnn', 'train', 'mnist', '--set', f'data.dataset={tmp_path/"missing.npz"}',
                           '--num-procs', '2', '--output-dir', str(tmp_path/'run')], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert 'missing.npz' in error_line(proc.stderr)


def test_existing_run_is_refused_once_and_kept(tmp_path):
    out = tmp_path/'run'
    (out/'checkpoints').mkdir(parents=True)
    (out/'checkpoints'/'last.pth').write_bytes(b'precious')
    proc = subprocess.run([sys.executable, '-m', 'adaptive_cnn', 'train', 'mnist', '--num-procs', '2', '--output-dir', str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and 'already holds a run' in error_line(proc.stderr)
    assert (out/'checkpoints'/'last.pth').read_bytes() == b'precious'


# ---- several machines, interruptions, restarts: synthetic data, a tiny network --------------------------------------
# 4,000 images of bars (adaptive_cnn.testing), a 5,516-parameter network, 3 epochs of 63 steps of 32 images per process
# with SWA over the last two, fp32 (`auto` would choose by timing), deterministic kernels, one thread per process: two
# runs of the same process layout end bit-identical, so every comparison below is exact.
TINY = ['model.stem_channels=8', 'model.widths=[8,16]', 'model.depths=[1,1]', 'model.strides=[1,2]',
        'model.classifier_hidden=16', 'data.classes=null', 'data.num_classes=null', 'data.mean=null', 'data.std=null',
        'data.val_size=128', 'train.epochs=3', 'train.batch_size=32', 'train.swa_start=0.5', 'train.precision=fp32',
        'train.deterministic=true']


def child_env() -> dict:
    "The environment of every process of these runs: one thread, no GPU, workers with their own store (see above)."
    return dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='',
                TORCH_DISABLE_SHARE_RDZV_TCP_STORE='1')


def free_port() -> int:
    "A TCP port of 127.0.0.1 that nothing listens on now."
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def bars(tmp_path_factory) -> Path:
    "The dataset of these runs, as a .npz file."
    from adaptive_cnn.testing import shapes_dataset, save_npz_dataset
    raw = shapes_dataset(4000 + 128, 256, num_classes=4, size=28)
    path = tmp_path_factory.mktemp('bars')/'bars.npz'
    save_npz_dataset(path, raw.train, raw.test, raw.classes)
    return path


def tiny_args(out:Path, bars:Path, *extra) -> list[str]:
    "`adaptive_cnn`'s arguments for a run of the tiny network on `bars` into `out`."
    return ['train', 'mnist', '--output-dir', str(out), '--no-progress', *sets(*TINY, f'data.dataset={bars}'),
            *map(str, extra)]


@pytest.fixture(scope='module')
def two_procs(tmp_path_factory, bars) -> dict:
    "The uninterrupted run of one machine with two processes (`--num-procs 2`): its folder and its epochs' seconds."
    out = tmp_path_factory.mktemp('two_procs')/'run'
    proc = subprocess.run([sys.executable, '-m', 'adaptive_cnn', *tiny_args(out, bars, '--num-procs', 2)],
                          capture_output=True, text=True, timeout=300, env=child_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    epochs = [json.loads(line) for line in (out/'metrics.jsonl').read_text().splitlines()]
    return dict(out=out, epoch_s=[h['train_time_s'] for h in epochs])


def check_same_end(out:Path, ref:Path):
    "The run in `out` ended exactly as the run in `ref`: epochs, metrics and every checkpoint's weights."
    assert history(out) == history(ref)
    for name in ('last.pth', 'best_model.pth', 'swa_model.pth'):
        a, b = model_weights(ref/'checkpoints'/name), model_weights(out/'checkpoints'/name)
        assert a.keys() == b.keys(), name
        for k in a: assert torch.equal(a[k], b[k]), f'{name}: {k}'
    test_acc = lambda run: json.loads((run/'results.json').read_text())['test_acc']
    assert test_acc(out) == test_acc(ref)


def start_agent(out:Path, bars:Path, port:int, host:bool, log:Path, restarts:int=0) -> subprocess.Popen:
    """One machine of two: a torchrun agent with one worker, meeting the other at 127.0.0.1:`port` (c10d). The `host`
    agent serves the rendezvous store; the agent is the leader of its own process group, as on a machine of its own."""
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nnodes', '2', '--nproc_per_node', '1',
           '--rdzv_backend', 'c10d', '--rdzv_endpoint', f'127.0.0.1:{port}', '--rdzv_id', f'two-nodes-{port}',
           '--rdzv_conf', f'is_host={int(host)}',
           '--max-restarts', str(restarts), '-m', 'adaptive_cnn', *tiny_args(out, bars)]
    with open(log, 'a') as f:
        return subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=child_env(), start_new_session=True)


def wait_all(agents:list[subprocess.Popen], logs:list[Path], timeout_s:float=300):
    "Wait for `agents` to end, each with exit code 0; kill what is left on failure."
    try:
        for agent in agents: assert agent.wait(timeout=timeout_s) == 0, '\n'.join(l.read_text() for l in logs)
    finally:
        for agent in agents:
            if agent.poll() is None: os.killpg(agent.pid, signal.SIGKILL)


def test_two_machines_of_one_process_end_as_one_machine_of_two(tmp_path, bars, two_procs):
    # Two torchrun agents on this machine play two machines sharing the output folder (a shared file system).
    # Bit-identical, not just close: each rank's shard, augmentation and dropout draws follow from its rank alone,
    # and gloo's all-reduce over two ranks adds two numbers, in whichever order, exactly.
    out, port, logs = tmp_path/'run', free_port(), [tmp_path/'a.log', tmp_path/'b.log']
    agents = [start_agent(out, bars, port, host, log) for host, log in zip((True, False), logs)]
    wait_all(agents, logs)
    check_same_end(out, two_procs['out'])
    env = json.loads((out/'environment.json').read_text())
    assert (env['processes'], env['torchelastic_run_id']) == (2, f'two-nodes-{port}')


@pytest.mark.slow      # 31 s on two idle cores (40 s busy): two start-ups, an epoch, the restart, the rest of the run
def test_a_machine_killed_and_started_again_rejoins_and_the_run_ends_as_uninterrupted(tmp_path, bars, two_procs):
    out, port, logs = tmp_path/'run', free_port(), [tmp_path/'a.log', tmp_path/'b.log']
    host = start_agent(out, bars, port, True, logs[0], restarts=1)
    other = start_agent(out, bars, port, False, logs[1], restarts=1)
    try:
        deadline = time.monotonic() + 300
        while not (out/'checkpoints'/'last.pth').is_file() or len(history(out)) < 1:   # the first epoch is saved
            assert host.poll() is None and other.poll() is None and time.monotonic() < deadline, logs[0].read_text()
            time.sleep(0.05)
        workers = worker_pids(other.pid)
        os.killpg(other.pid, signal.SIGKILL)            # the machine dies: its agent and its worker, mid-epoch
        for pid in workers.values(): os.kill(pid, signal.SIGKILL)
        other.wait(timeout=60)
        again = start_agent(out, bars, port, False, logs[1], restarts=1)   # as a scheduler would, same command
        wait_all([host, again], logs)
    finally:
        for agent in (host, other):
            if agent.poll() is None: os.killpg(agent.pid, signal.SIGKILL)
    assert 'resuming' in (out/'train.log').read_text(), logs[0].read_text()
    check_same_end(out, two_procs['out'])


# each 24 s on two idle cores (a launch and a resume): SIGINT takes the same path as SIGTERM, so it waits for -m slow
@pytest.mark.parametrize('sig', [pytest.param(signal.SIGINT, marks=pytest.mark.slow), signal.SIGTERM],
                         ids=['SIGINT', 'SIGTERM'])
def test_num_procs_run_interrupted_mid_epoch_resumes_to_the_same_end(tmp_path, bars, two_procs, sig):
    out = tmp_path/'run'
    cmd = [sys.executable, '-m', 'adaptive_cnn', *tiny_args(out, bars, '--num-procs', 2)]
    launcher = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 300
        while not ((out/'train.log').is_file() and 'epoch   1/' in (out/'train.log').read_text()):   # epoch 2 starts
            assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()
            time.sleep(0.01)
        time.sleep(two_procs['epoch_s'][1] / 2)
        launcher.send_signal(sig)                       # Ctrl-C (or a scheduler's SIGTERM) to the launcher
        stdout, stderr = launcher.communicate(timeout=120)
    finally:
        if launcher.poll() is None: launcher.kill()
    assert launcher.returncode == 128 + sig, stdout + stderr
    assert 'Traceback' not in stderr, stderr
    assert f'adaptive-cnn: interrupted ({sig.name}); continue with --resume' in stderr, stderr
    assert f'adaptive-cnn: interrupted by {sig.name} in epoch 2/' in stderr and '[rank 1]' not in stderr, stderr
    state = load_checkpoint(out/'checkpoints'/'last.pth')
    progress = state['epoch_progress']
    assert state['epoch'] == 1 and progress is not None, f'not stopped inside epoch 2: {stderr}'
    # one position for both ranks, with each rank's own generators
    assert 0 < progress['batches'] < 63 and len(progress['ranks']) == 2
    assert not torch.equal(progress['ranks'][0]['generator'], progress['ranks'][1]['generator'])
    assert state['step'] == 63 + progress['batches']
    proc = subprocess.run([*cmd, '--resume'], capture_output=True, text=True, timeout=300, env=child_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f'in epoch 2 of 3, after step {progress["batches"]} of 63' in proc.stdout
    check_same_end(out, two_procs['out'])
