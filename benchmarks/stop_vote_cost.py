"""Cost of the stop vote (`StopVote`) on CPU gloo, two processes: a bare poll loop, then training epochs that
alternate between the vote and a stub (median ms per step over 10 epochs each, after two warm-up epochs). Batch 32 per
process, 63 steps an epoch, fp32, on 4,000 synthetic bar images.

    OMP_NUM_THREADS=1 TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 torchrun --standalone --nproc_per_node 2 \\
        benchmarks/stop_vote_cost.py OUT_DIR mnist|tiny
"""
import os, sys, time, json, statistics
import torch, torch.distributed as dist
from adaptive_cnn.distributed import init_distributed, StopVote, shutdown_distributed
from adaptive_cnn.config import load_config
from adaptive_cnn.training import Trainer
from adaptive_cnn.testing import TINY_MODEL, save_npz_dataset, shapes_dataset
ctx = init_distributed('cpu', 'gloo')
vote = StopVote(ctx)
for _ in range(100): vote.poll(None)
vote.settle(None)
n = 2000
t0 = time.perf_counter()
for _ in range(n): vote.poll(None)
vote.settle(None)
poll_us = (time.perf_counter() - t0) / n * 1e6
out = sys.argv[1]
net = TINY_MODEL if sys.argv[2] == 'tiny' else []
data = f'{out}/bars4k.npz'
if ctx.is_main:
    raw = shapes_dataset(4000, 500, num_classes=10)
    save_npz_dataset(data, raw.train, raw.test, raw.classes)
ctx.barrier()
cfg = load_config('mnist', net + [f'data.dataset={data}', 'data.classes=null', 'data.num_classes=null',
                   'data.mean=null', 'data.std=null', 'data.val_size=128', 'train.epochs=40', 'train.batch_size=32',
                   'train.precision=fp32', 'train.swa_start=null', f'output.dir={out}'])
tr = Trainer(cfg, progress=False, dist=ctx, echo=False, overwrite=True)
real_poll = StopVote.poll
times = {'vote': [], 'none': []}
for e in range(22):
    kind = 'vote' if e % 2 else 'none'
    StopVote.poll = real_poll if kind == 'vote' else (lambda self, s: 0)
    ctx.barrier()
    t0 = time.perf_counter()
    m = tr.train_epoch()
    ctx.barrier()
    if e >= 2: times[kind].append((time.perf_counter() - t0) / tr.steps_per_epoch * 1e3)
    tr.epoch += 1
StopVote.poll = real_poll
if ctx.is_main:
    print(json.dumps(dict(net=sys.argv[2], poll_us=round(poll_us, 1), steps=tr.steps_per_epoch,
                          step_ms_vote=round(statistics.median(times['vote']), 3), step_ms_none=round(statistics.median(times['none']), 3),
                          all_vote=[round(x, 3) for x in times['vote']], all_none=[round(x, 3) for x in times['none']])))
tr.close()
shutdown_distributed()
