"""Where the time of one training step goes: `Trainer.train_step` driven as `benchmarks/train_throughput.py`'s
end_to_end drives it (its `epoch_batches`: `epoch_order`, `iterate_batches`, the epoch's augmentation generator), with
the library unchanged. Three passes over the same Trainer, after a warm-up (which includes compiling, if on):

1. phases (no profiler): the step is cut into phases by wrappers this script puts on the Trainer's own attributes
   (`augment`, `forward`, `loss_fn`, `optimizer.zero_grad`, `scaler.unscale_`, `scaler.step`, `scheduler.step`), so
   the library's `train_step` runs as it is. Each boundary takes a host clock reading and, on CUDA, records a CUDA
   event (no synchronisation). Host ms: time the Python thread spent in the phase (waiting for the GPU included);
   device ms: stream time between the phase's events (GPU idle gaps included). Phases: batch (the next batch: index
   gather, `iterate_batches`), augment (`BatchAugment`), normalize (normalisation, memory format), forward, loss,
   zero_grad, backward, clip (unscale + `clip_grad_norm_`), optimizer (`scaler.step` + `update`), sched+book (scheduler,
   non-finite flag, accuracy count, loss accumulation).
2. torch.profiler over a few steps, each phase labelled with `record_function('step::<phase>')`: the
   `key_averages()` table (sorted by self CUDA time on CUDA, self CPU time on the CPU), kernel launches and CUDA
   runtime calls per step, GPU busy time per step, and the host-device synchronisations seen in the trace
   (cudaStreamSynchronize / cudaDeviceSynchronize / cudaEventSynchronize calls, device-to-host copies, copies from
   pageable host memory). --trace FILE also writes the Chrome trace (.json, or .json.gz compressed).
3. CUDA only: `torch.cuda.set_sync_debug_mode('warn')` over a few steps; every synchronising call PyTorch reports is
   counted by the source line that made it (the library's file and line).

    python benchmarks/profile_step.py --config cifar10 --synthetic-only --out profile_cifar10.txt --json profile.json
    python benchmarks/profile_step.py --config mnist --device cpu --batch-size 64 --steps 3 --profile-steps 2 --warmup 1
"""
import argparse, collections, datetime, json, linecache, os, platform, sys, tempfile, time, warnings
from dataclasses import replace
from pathlib import Path

import torch
from torch.autograd import DeviceType

import adaptive_cnn
from adaptive_cnn.errors import AdaptiveCNNError
from adaptive_cnn.config import load_config
from adaptive_cnn.data import load_data, place_data
from adaptive_cnn.models import count_parameters
from adaptive_cnn.training import Trainer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_throughput as tp   # noqa: E402  (benchmarks/ is not a package)

PHASES = ('batch', 'augment', 'normalize', 'forward', 'loss', 'zero_grad', 'backward', 'clip', 'optimizer', 'sched+book')
GROUPS = {'data (batch gather)': ('batch',), 'augmentation + normalisation': ('augment', 'normalize'),
          'forward + loss + backward': ('forward', 'loss', 'zero_grad', 'backward'),
          'clip + optimizer + scheduler': ('clip', 'optimizer', 'sched+book')}
HOST_SYNC_CALLS = ('cudaStreamSynchronize', 'cudaDeviceSynchronize', 'cudaEventSynchronize', 'cudaMemcpy',
                   'cuStreamSynchronize', 'cuCtxSynchronize', 'cuEventSynchronize')
LAUNCH_CALLS = ('cudaLaunchKernel', 'cudaLaunchKernelExC', 'cuLaunchKernel', 'cuLaunchKernelEx', 'cudaGraphLaunch')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--config', default='cifar10', help='built-in config name (mnist, cifar10) or YAML path')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', help='cpu or cuda (default: cuda if available)')
    p.add_argument('--warmup', type=int, default=None, help='untimed steps first (default: 10 on CUDA, 2 on CPU; they include compiling)')
    p.add_argument('--steps', type=int, default=None, help='steps of the phase timing pass (default: 30 on CUDA, 3 on CPU)')
    p.add_argument('--profile-steps', type=int, default=None, help='steps under torch.profiler (default: 5 on CUDA, 2 on CPU)')
    p.add_argument('--sync-steps', type=int, default=None, help='steps under set_sync_debug_mode (CUDA only; default 3; 0: skip)')
    p.add_argument('--batch-size', type=int, default=None, help="images per step (default: the config's train.batch_size)")
    p.add_argument('--synthetic-only', action='store_true', help='random uint8 images of the config shape instead of the real dataset')
    p.add_argument('--set', dest='overrides', action='append', default=[], metavar='SECTION.KEY=VALUE',
                   help='config override (repeatable), e.g. --set train.precision=fp32 --set train.compile=true')
    p.add_argument('--data-root', help='dataset folder (default: $ADAPTIVE_CNN_DATA, else ./data)')
    p.add_argument('--row-limit', type=int, default=25, help='rows of the profiler table')
    p.add_argument('--sort-by', help='column of the profiler table (default: self_cuda_time_total on CUDA, self_cpu_time_total on the CPU)')
    p.add_argument('--trace', metavar='FILE', help='also write the Chrome trace of the profiled steps (big; .gz to compress)')
    p.add_argument('--out', metavar='TXT', help='also write the printed report to TXT')
    p.add_argument('--json', metavar='OUT', help='write the figures as JSON to OUT')
    args = p.parse_args(argv)
    cuda = args.device.startswith('cuda')
    if args.warmup is None: args.warmup = 10 if cuda else 2
    if args.steps is None: args.steps = 30 if cuda else 3
    if args.profile_steps is None: args.profile_steps = 5 if cuda else 2
    if args.sync_steps is None: args.sync_steps = 3 if cuda else 0
    if args.steps < 1 or args.profile_steps < 1 or args.warmup < 0 or args.sync_steps < 0:
        p.error('--steps and --profile-steps must be >= 1, --warmup and --sync-steps >= 0')
    if args.sort_by is None: args.sort_by = 'self_cuda_time_total' if cuda else 'self_cpu_time_total'
    return args


class Phases:
    "Phase boundaries of each step: host clock, a CUDA event (on CUDA), and a `record_function` range per phase."
    def __init__(self, device:torch.device):
        self.cuda, self.steps, self.marks, self.range = device.type == 'cuda', [], None, None
        self.annotate = False

    def start_step(self):
        self.marks = []
        self.steps.append(self.marks)
        self.mark('batch')

    def mark(self, name:str|None):
        "Close the open phase and open `name` (None: the step's end)."
        if self.marks is None: return
        if self.range is not None: self.range.__exit__(None, None, None); self.range = None
        event = None
        if self.cuda: event = torch.cuda.Event(enable_timing=True); event.record()
        self.marks.append((name, time.perf_counter(), event))
        if name is not None and self.annotate:
            self.range = torch.profiler.record_function(f'step::{name}'); self.range.__enter__()

    def end_step(self):
        self.mark(None)
        self.marks = None

    def summary(self) -> dict:
        "Per phase: mean host ms and device ms per step (call after synchronising)."
        host, dev = collections.defaultdict(float), collections.defaultdict(float)
        for marks in self.steps:
            for (name, t0, e0), (_, t1, e1) in zip(marks, marks[1:]):
                host[name] += 1000 * (t1 - t0)
                if self.cuda: dev[name] += e0.elapsed_time(e1)
        n = max(len(self.steps), 1)
        names = [p for p in PHASES if p in host] + [p for p in host if p not in PHASES]
        return {p: dict(host_ms=host[p] / n, device_ms=dev[p] / n if self.cuda else None) for p in names}


def instrument(trainer:Trainer, phases:Phases):
    "Wrap the Trainer's own attributes so that `train_step` marks its phase boundaries (instance attributes only)."
    def around(obj, attr, before, after=None):
        inner = getattr(obj, attr)
        def wrapper(*a, **k):
            phases.mark(before)
            out = inner(*a, **k)
            if after: phases.mark(after)
            return out
        setattr(obj, attr, wrapper)
    around(trainer, 'augment', 'augment', 'normalize')
    around(trainer, 'forward', 'forward', 'loss')
    around(trainer.optimizer, 'zero_grad', 'zero_grad', 'backward')
    around(trainer.scaler, 'unscale_', 'clip')
    around(trainer.scaler, 'step', 'optimizer')
    around(trainer.scheduler, 'step', 'sched+book')


def make_trainer(cfg, dataset, device, out_dir:Path) -> Trainer:
    "The Trainer as train_throughput.end_to_end makes it, ready for `train_step` outside `train_epoch`."
    trainer = Trainer(replace(cfg, output=replace(cfg.output, dir=str(out_dir))), device=device, progress=False,
                      overwrite=True, data=dataset)
    trainer.model.train()
    trainer._bad_step = torch.tensor(-1, device=device)   # train_epoch creates it before its loop
    return trainer


def profiler_figures(prof, steps:int, cuda:bool) -> dict:
    "Kernel launches, CUDA runtime calls, GPU busy time and host-device synchronisations per step, from the trace."
    if not cuda:
        return dict(note='CPU run: no CUDA events, host-device synchronisations n/a')
    runtime, device_time, copies, kernels = collections.Counter(), 0.0, collections.Counter(), 0
    for e in prof.events():
        name = e.name
        if e.device_type == DeviceType.CUDA:
            if name.startswith(('step::', 'ProfilerStep')) or getattr(e, 'is_user_annotation', False): continue
            device_time += e.time_range.elapsed_us()
            if name.startswith('Memcpy') or name.startswith('Memset'): copies[name] += 1
            else: kernels += 1
        elif name.startswith('cu'): runtime[name] += 1
    per = lambda c: {k: v / steps for k, v in c.most_common()}
    syncs = {k: v / steps for k, v in runtime.items() if k in HOST_SYNC_CALLS}
    return dict(kernels_per_step=kernels / steps, launches_per_step=sum(v for k, v in runtime.items() if k in LAUNCH_CALLS) / steps,
                gpu_busy_ms_per_step=device_time / 1000 / steps, runtime_calls_per_step=per(runtime), copies_per_step=per(copies),
                host_sync_calls_per_step=syncs, host_syncs_per_step=sum(syncs.values()),
                dtoh_copies_per_step=sum(v for k, v in copies.items() if 'DtoH' in k) / steps,
                pageable_copies_per_step=sum(v for k, v in copies.items() if 'Pageable' in k) / steps)


def sync_check(step, steps:int) -> dict:
    "Synchronising CUDA calls of `steps` steps, counted by the source line PyTorch reports them at."
    counts = collections.Counter()
    torch.cuda.set_sync_debug_mode('warn')
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter('always')
            for _ in range(steps): step()
    finally: torch.cuda.set_sync_debug_mode(0)
    for w in caught:
        if 'synchroniz' not in str(w.message): continue
        counts[(w.filename, w.lineno)] += 1
    root = Path(adaptive_cnn.__file__).resolve().parent.parent
    def where(f, n):
        try: shown = str(Path(f).resolve().relative_to(root))
        except ValueError: shown = f
        return f'{shown}:{n}: {linecache.getline(f, n).strip()[:110]}'
    return dict(steps=steps, syncs_per_step=sum(counts.values()) / steps,
                locations=[dict(where=where(f, n), per_step=c / steps) for (f, n), c in counts.most_common()])


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == 'cuda'
    if cuda and not torch.cuda.is_available(): sys.exit('--device cuda: no CUDA device here')
    extra = list(args.overrides)
    if args.batch_size is not None: extra.append(f'train.batch_size={args.batch_size}')
    if args.data_root is not None: extra.append(f'data.root={json.dumps(args.data_root)}')
    try: cfg = load_config(args.config, extra)
    except AdaptiveCNNError as e: sys.exit(f'profile_step: {e}')
    batch = cfg.train.batch_size
    need = batch * (args.warmup + args.steps + args.profile_steps + args.sync_steps + 1)
    if args.synthetic_only:
        n_train = min(max(need, batch), max(45_000, batch))
        dataset, source = tp.synthetic_dataset(cfg, n_train, cfg.train.seed), f'synthetic: {n_train:,} random uint8 images'
    else:
        try: dataset = load_data(cfg)
        except AdaptiveCNNError as e: sys.exit(f'profile_step: {e}\n(no real data: pass --synthetic-only, or point $ADAPTIVE_CNN_DATA / --data-root at the datasets)')
        source = f'{cfg.data.dataset} from {cfg.data.root}: {len(dataset.train):,} training images'
    dataset = place_data(dataset, device)
    cfg = replace(cfg, data=dataset.data)
    where = 'on the device' if dataset.train.images.device.type == device.type else 'in pinned host memory'
    t = cfg.train
    meta = dict(config=args.config, device=str(device), device_name=tp.device_name(device), torch=torch.__version__,
                python=platform.python_version(), adaptive_cnn=adaptive_cnn.__version__, git=tp.git_commit(),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'), batch_size=batch,
                variant=tp.describe(t), warmup=args.warmup, steps=args.steps, profile_steps=args.profile_steps,
                sync_steps=args.sync_steps, data=f'{source}, {where}', overrides=extra,
                command=' '.join([Path(sys.argv[0]).name, *sys.argv[1:]]))
    lines = []
    def say(s=''):
        print(s, flush=True); lines.append(s)
    say(f"profile_step: {args.config} ({meta['variant']}, batch {batch}) on {meta['device_name']} ({device}), torch {torch.__version__}, {meta['date']}")
    say(f"  data {meta['data']}; {args.warmup} warm-up, {args.steps} timed, {args.profile_steps} profiled"
        + (f", {args.sync_steps} sync-checked" if cuda and args.sync_steps else '') + ' steps')

    result = dict(meta)
    with tempfile.TemporaryDirectory(prefix='profile_step_') as tmp:
        trainer = make_trainer(cfg, dataset, device, Path(tmp)/'run')
        try:
            result['parameters'] = count_parameters(trainer.model)
            phases = Phases(device)
            instrument(trainer, phases)
            batches = tp.epoch_batches(trainer)
            loss_sum, done = torch.zeros((), device=device), [0]
            def step():
                done[0] += 1
                phases.start_step()
                b, generator = next(batches)
                loss_sum.add_(trainer.train_step(b, generator)[0])
                phases.end_step()

            start = time.perf_counter()
            for _ in range(args.warmup): step()
            tp.synchronize(device)
            result['warmup_s'] = time.perf_counter() - start

            # 1. phases, no profiler
            phases.steps.clear()
            start = time.perf_counter()
            for _ in range(args.steps): step()
            tp.synchronize(device)
            wall = time.perf_counter() - start
            ms = 1000 * wall / args.steps
            table = phases.summary()
            result.update(ms_per_step=ms, images_per_s=batch * args.steps / wall, phases=table)
            say(f"\n=== 1. phases: {ms:.2f} ms/step, {batch * args.steps / wall:,.0f} img/s (mean of {args.steps} steps, "
                f"synchronised only at both ends)")
            say(f"{'phase':<14}{'host ms':>10}{'host %':>8}{'device ms':>11}{'device %':>10}")
            host_total = sum(r['host_ms'] for r in table.values())
            dev_total = sum(r['device_ms'] for r in table.values()) if cuda else None
            pct = lambda v, tot: f'{100 * v / tot:.1f}' if tot else '-'
            for name, r in table.items():
                say(f"{name:<14}{r['host_ms']:>10.3f}{pct(r['host_ms'], host_total):>8}"
                    + (f"{r['device_ms']:>11.3f}{pct(r['device_ms'], dev_total):>10}" if cuda else f"{'-':>11}{'-':>10}"))
            say(f"{'total':<14}{host_total:>10.3f}{'100':>8}" + (f"{dev_total:>11.3f}{'100':>10}" if cuda else f"{'-':>11}{'-':>10}"))
            groups = {}
            for g, members in GROUPS.items():
                h = sum(table[p]['host_ms'] for p in members if p in table)
                d = sum(table[p]['device_ms'] for p in members if p in table) if cuda else None
                groups[g] = dict(host_ms=h, host_share=h / host_total if host_total else None,
                                 device_ms=d, device_share=d / dev_total if cuda and dev_total else None)
            result['groups'] = groups
            basis = 'device (stream) time' if cuda else 'host time'
            say(f"shares of the step ({basis}): " + ', '.join(
                f"{g} {100 * (r['device_share'] if cuda else r['host_share'] or 0):.1f}%" for g, r in groups.items()))

            # 2. torch.profiler
            activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
            phases.annotate = True
            with torch.profiler.profile(activities=activities) as prof:
                for _ in range(args.profile_steps): step()
                tp.synchronize(device)
            phases.annotate = False
            averages = prof.key_averages()
            say(f"\n=== 2. torch.profiler, {args.profile_steps} steps, key_averages sorted by {args.sort_by} (top {args.row_limit})")
            say(averages.table(sort_by=args.sort_by, row_limit=args.row_limit))
            labelled = sorted((e for e in averages if e.key.startswith('step::')), key=lambda e: -e.cpu_time_total)
            say('record_function ranges (host time, whole window): ' + ', '.join(
                f"{e.key[6:]} {e.cpu_time_total / 1000 / args.profile_steps:.2f} ms/step" for e in labelled))
            figures = profiler_figures(prof, args.profile_steps, cuda)
            top = sorted(averages, key=lambda e: -(getattr(e, 'self_device_time_total', 0) if cuda else e.self_cpu_time_total))
            figures['top'] = [dict(key=e.key, count=e.count, self_cpu_us=e.self_cpu_time_total,
                                   self_device_us=getattr(e, 'self_device_time_total', 0)) for e in top[:args.row_limit]]
            result['profiler'] = figures
            if cuda:
                say(f"per step: {figures['kernels_per_step']:.0f} GPU kernels, {figures['launches_per_step']:.0f} launch calls, "
                    f"GPU busy {figures['gpu_busy_ms_per_step']:.2f} ms of {ms:.2f} ms wall ({100 * figures['gpu_busy_ms_per_step'] / ms:.0f}%, "
                    f"wall from pass 1)")
                say(f"host-device synchronisations in the trace, per step: {figures['host_syncs_per_step']:.1f} "
                    f"({', '.join(f'{k} {v:.1f}' for k, v in figures['host_sync_calls_per_step'].items()) or 'none'}); "
                    f"device-to-host copies {figures['dtoh_copies_per_step']:.1f}; copies from pageable host memory "
                    f"{figures['pageable_copies_per_step']:.1f}")
                say('copies per step: ' + (', '.join(f'{k} {v:.1f}' for k, v in figures['copies_per_step'].items()) or 'none'))
                say('CUDA runtime calls per step: ' + ', '.join(f'{k} {v:.1f}' for k, v in list(figures['runtime_calls_per_step'].items())[:8]))
            else: say('host-device synchronisations: n/a (CPU run)')
            if args.trace:
                Path(args.trace).parent.mkdir(parents=True, exist_ok=True)
                prof.export_chrome_trace(args.trace)
                say(f"Chrome trace written to {args.trace} ({Path(args.trace).stat().st_size / 1e6:.1f} MB)")

            # 3. synchronising calls by source line
            if cuda and args.sync_steps:
                sc = sync_check(step, args.sync_steps)
                result['sync_debug'] = sc
                say(f"\n=== 3. set_sync_debug_mode('warn') over {sc['steps']} steps: {sc['syncs_per_step']:.1f} synchronising calls per step")
                for loc in sc['locations']: say(f"  {loc['per_step']:>5.1f}/step  {loc['where']}")
            elif cuda: say('\n=== 3. sync check skipped (--sync-steps 0)')
            else: say('\n=== 3. sync check: n/a on the CPU')
            tp.synchronize(device)
            result['mean_loss'] = loss_sum.item() / (batch * done[0])
            if cuda: result['max_memory_allocated_gib'] = torch.cuda.max_memory_allocated(device) / 2**30
        finally: trainer.close()

    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text('\n'.join(lines) + '\n')
        print(f'\nreport written to {args.out}')
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1, default=str) + '\n')
        print(f'figures written to {args.json}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
