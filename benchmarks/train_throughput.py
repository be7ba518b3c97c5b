"""Training throughput (images/s, steady state after a warm-up) of a built-in config, two ways, in one process:

- end_to_end: `Trainer.train_step` on batches drawn as `Trainer.train_epoch` draws them (`epoch_order`, the epoch's
  augmentation generator, `iterate_batches`): augmentation on the device, normalisation, forward, loss, backward,
  clipping, optimiser and scheduler steps. The data is the config's real dataset, or with --synthetic-only random
  uint8 images of the config's shape in a `Dataset` handed to the Trainer (they go through the same augmentation).
- model_only: the same network, precision and memory format on random inputs already normalised on the device,
  without augmentation: forward under `training.autocast`, label-smoothing cross-entropy on one-hot targets,
  backward, gradient clipping to train.grad_clip (as the recipe does) and an optimiser step (`build_optimizer`).

The ratio end_to_end / model_only says how much of the model's speed the training step keeps. Both loops differ from
a real epoch in two ways that matter for a steady-state figure: they drop an epoch's last partial batch (its new
shape would make torch.compile recompile inside the timed window), and they skip the Trainer's progress updates
(a host sync every 5% of an epoch). CUDA is synchronised only at both ends of the timed window.

Variants (--variants): the config's own settings, then each of precision (bf16 <-> fp32), channels_last and compile
flipped on its own; `--variants grid` runs every combination. --no-compile drops the torch.compile variants (slow to
compile on a CPU).

--compile-mode MODE is short for --set train.compile_mode=MODE (used where train.compile is on). --cudnn-benchmark
sets `torch.backends.cudnn.benchmark` for every variant (the library leaves it off: see benchmarks/RESULTS.md).

    python benchmarks/train_throughput.py --config cifar10 --synthetic-only --variants --json out.json
    python benchmarks/train_throughput.py --config mnist --device cpu --steps 5 --warmup 2 --batch-size 64
    python benchmarks/train_throughput.py --config mnist --set train.compile=true --compile-mode reduce-overhead
"""
import argparse, datetime, gc, itertools, json, os, platform, subprocess, sys, tempfile, time
from dataclasses import replace
from pathlib import Path

import torch
import torch._dynamo
import torch.nn.functional as F
from torch import nn

import adaptive_cnn
from adaptive_cnn.errors import AdaptiveCNNError
from adaptive_cnn.config import load_config
from adaptive_cnn.data import Dataset, ImageData, epoch_order, iterate_batches, load_data, place_data
from adaptive_cnn.models import AdaptiveCNN, count_parameters
from adaptive_cnn.training import Trainer, build_optimizer
from adaptive_cnn.runtime import autocast, cpu_name


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--config', default='cifar10', help='built-in config name (mnist, cifar10) or YAML path')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', help='cpu or cuda (default: cuda if available)')
    p.add_argument('--steps', type=int, default=None, help='timed steps per measurement (default: 50 on CUDA, 10 on CPU)')
    p.add_argument('--warmup', type=int, default=None, help='untimed steps first (default: 10 on CUDA, 3 on CPU; they include compiling)')
    p.add_argument('--batch-size', type=int, default=None, help="images per step (default: the config's train.batch_size)")
    p.add_argument('--synthetic-only', action='store_true', help='random uint8 images of the config shape instead of the real dataset')
    p.add_argument('--variants', nargs='?', const='oneway', choices=['oneway', 'grid'], default=None,
                   help='also measure precision / channels_last / compile flipped one at a time (oneway, the default) or every combination (grid)')
    p.add_argument('--no-compile', action='store_true', help='skip the torch.compile variants')
    p.add_argument('--compile-mode', choices=['default', 'reduce-overhead', 'max-autotune', 'max-autotune-no-cudagraphs'],
                   help="short for --set train.compile_mode=MODE: the torch.compile mode of the compiled variants")
    p.add_argument('--cudnn-benchmark', action='store_true', help='torch.backends.cudnn.benchmark on for every variant')
    p.add_argument('--set', dest='overrides', action='append', default=[], metavar='SECTION.KEY=VALUE',
                   help='extra config override for every variant (repeatable), e.g. --set train.compile=true')
    p.add_argument('--data-root', help='dataset folder (default: $ADAPTIVE_CNN_DATA, else ./data)')
    p.add_argument('--json', metavar='OUT', help='write the results as JSON to OUT')
    args = p.parse_args(argv)
    cuda = args.device.startswith('cuda')
    if args.steps is None: args.steps = 50 if cuda else 10
    if args.warmup is None: args.warmup = 10 if cuda else 3
    if args.steps < 1 or args.warmup < 0: p.error('--steps must be >= 1 and --warmup >= 0')
    return args


def variant_overrides(base, kind:str|None, no_compile:bool) -> list[list[str]]:
    "Override lists, one per variant (precision, channels_last, compile); the first is the config's own settings."
    own = (base.precision, base.channels_last, base.compile)
    p, c, k = own
    if kind == 'grid': combos = [own, *itertools.product(['bf16', 'fp32'], [True, False], [False, True])]
    elif kind == 'oneway':   # 'auto' resolves to one of bf16 and fp32: both are measured next to it
        flipped = [q for q in ('bf16', 'fp32') if q != p][:1 if p in ('bf16', 'fp32') else 2]
        combos = [own, *((q, c, k) for q in flipped), (p, not c, k), (p, c, not k)]
    else: combos = [own]
    if no_compile: combos = [(p, c, False) for p, c, _ in combos]
    return [[f'train.precision={p}', f'train.channels_last={str(c).lower()}', f'train.compile={str(k).lower()}']
            for p, c, k in dict.fromkeys(combos)]   # in order, without duplicates


def describe(t, compile_mode:str|None=None) -> str:
    compiled = f'compiled ({compile_mode})' if compile_mode and compile_mode != 'default' else 'compiled'
    return f"{t.precision}, {'channels_last' if t.channels_last else 'NCHW'}, {compiled if t.compile else 'eager'}"


def synchronize(device:torch.device):
    if device.type == 'cuda': torch.cuda.synchronize(device)


def timed(step, warmup:int, steps:int, device:torch.device) -> tuple[float, float]:
    "(warm-up seconds, timed seconds) of `warmup` then `steps` calls of `step`; CUDA synchronised only around each window."
    start = time.perf_counter()
    for _ in range(warmup): step()
    synchronize(device)
    middle = time.perf_counter()
    for _ in range(steps): step()
    synchronize(device)
    return middle - start, time.perf_counter() - middle


def synthetic_dataset(cfg, n_train:int, seed:int=0) -> Dataset:
    "Random uint8 images and labels of the config's shape, with the data config completed as `load_data` would."
    d = cfg.data
    channels, size, k = d.channels or 3, list(d.image_size or [32, 32]), d.num_classes or 10
    g = torch.Generator().manual_seed(seed)
    split = lambda n: ImageData(torch.randint(0, 256, (n, channels, *size), dtype=torch.uint8, generator=g),
                                torch.randint(0, k, (n,), generator=g))
    data = replace(d, channels=channels, image_size=size, num_classes=k, classes=d.classes or [str(i) for i in range(k)],
                   mean=d.mean or [0.5] * channels, std=d.std or [0.25] * channels, val_size=256)
    return Dataset(split(n_train), split(256), None, data, notes=['synthetic random images'])


def epoch_batches(trainer:Trainer):
    "Endless (batch, generator) pairs in the order and with the generators of `Trainer.train_epoch`, full batches only."
    t, epoch = trainer.cfg.train, 0
    if trainer.images_per_epoch() < t.batch_size:
        raise ValueError(f'{len(trainer.data.train)} training images: fewer than one batch of {t.batch_size}')
    while True:
        order = epoch_order(len(trainer.data.train), t.seed, epoch)[:trainer.images_per_epoch()]
        generator = trainer.augment_generator(epoch)   # as train_epoch draws
        for batch in iterate_batches(trainer.data.train, t.batch_size, order, drop_last=True): yield batch, generator
        epoch += 1


def end_to_end(cfg, dataset:Dataset, device:torch.device, warmup:int, steps:int, out_dir:Path) -> dict:
    "Trainer.train_step images/s on `dataset`."
    trainer = Trainer(replace(cfg, output=replace(cfg.output, dir=str(out_dir))), device=device, progress=False,
                      overwrite=True, data=dataset)
    try:
        trainer.model.train()
        # train_epoch creates this flag (the step of the first non-finite loss, -1 while all are finite) before its loop
        trainer._bad_step = torch.tensor(-1, device=device)
        batches = epoch_batches(trainer)
        loss_sum = torch.zeros((), device=device)
        def step():
            batch, generator = next(batches)
            loss_sum.add_(trainer.train_step(batch, generator)[0])
        warm_s, time_s = timed(step, warmup, steps, device)
        images = (warmup + steps) * cfg.train.batch_size
        return dict(images_per_s=steps * cfg.train.batch_size / time_s, ms_per_step=1000 * time_s / steps, warmup_s=warm_s,
                    mean_loss=loss_sum.item() / images, all_finite=int(trainer._bad_step) < 0,
                    precision=trainer.cfg.train.precision, precision_choice=trainer.precision_note,
                    parameters=count_parameters(trainer.model))
    finally: trainer.close()


def model_only(cfg, device:torch.device, warmup:int, steps:int) -> dict:
    "Forward, loss, backward, clip and optimiser step images/s on inputs already normalised on the device."
    t, d = cfg.train, cfg.data
    torch.manual_seed(t.seed)
    fmt = torch.channels_last if t.channels_last else torch.contiguous_format
    model = AdaptiveCNN.from_config(cfg).to(device=device, memory_format=fmt).train()
    forward = torch.compile(model, mode=t.compile_mode) if t.compile else model
    optimizer = build_optimizer(model, t)
    scaler = torch.amp.GradScaler(device.type, enabled=t.precision == 'fp16')
    # two batches, alternated, so that no step reuses the last one's input
    xs = [torch.randn(t.batch_size, d.channels, *d.image_size, device=device).contiguous(memory_format=fmt) for _ in range(2)]
    ys = [F.one_hot(torch.randint(0, d.num_classes, (t.batch_size,), device=device), d.num_classes).float() for _ in range(2)]
    i = 0
    def step():
        nonlocal i
        x, y = xs[i % 2], ys[i % 2]; i += 1
        with autocast(device, t.precision): logits = forward(x)
        loss = F.cross_entropy(logits.float(), y, label_smoothing=t.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if t.grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        scaler.step(optimizer)
        scaler.update()
    warm_s, time_s = timed(step, warmup, steps, device)
    return dict(images_per_s=steps * t.batch_size / time_s, ms_per_step=1000 * time_s / steps, warmup_s=warm_s)


def release(device:torch.device):
    "Free what a measurement left behind, compiled graphs included, so the next one starts alike."
    gc.collect()
    torch._dynamo.reset()
    if device.type == 'cuda': torch.cuda.empty_cache()


def device_name(device:torch.device) -> str:
    if device.type == 'cuda': return torch.cuda.get_device_name(device)
    return f'{cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads'


def git_commit() -> str|None:
    try:
        r = subprocess.run(['git', 'describe', '--always', '--dirty'], capture_output=True, text=True, timeout=5,
                           cwd=Path(__file__).resolve().parent)
        return r.stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired): return None


def error_text(e:BaseException) -> str:
    return f'{type(e).__name__}: ' + (str(e).strip().splitlines() or [''])[0][:300]


def format_table(rows:list[dict]) -> str:
    head = f"{'variant':<48}{'end_to_end img/s':>18}{'model_only img/s':>18}{'ratio':>8}{'e2e ms/step':>13}{'model ms/step':>15}{'warm-up s e2e/model':>21}"
    lines = [head, '-' * len(head)]
    num = lambda r, k, f: format(r[k], f) if r.get(k) is not None else '-'
    for r in rows:
        e, m = r.get('end_to_end') or {}, r.get('model_only') or {}
        lines.append(f"{r['variant']:<48}{num(e, 'images_per_s', ',.0f'):>18}{num(m, 'images_per_s', ',.0f'):>18}"
                     f"{num(r, 'ratio', '.2f'):>8}{num(e, 'ms_per_step', '.1f'):>13}{num(m, 'ms_per_step', '.1f'):>15}"
                     f"{num(e, 'warmup_s', '.1f') + ' / ' + num(m, 'warmup_s', '.1f'):>21}")
        for what in ('end_to_end', 'model_only'):
            if r.get(f'{what}_error'): lines.append(f"    {what} failed: {r[f'{what}_error']}")
    return '\n'.join(lines)


def write_json(path, obj):
    "Write `obj` to `path` whole (a temporary file, then a rename)."
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}.tmp')
    tmp.write_text(json.dumps(obj, indent=1) + '\n'); os.replace(tmp, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == 'cuda' and not torch.cuda.is_available(): sys.exit('--device cuda: no CUDA device here')
    extra = list(args.overrides)
    if args.batch_size is not None: extra.append(f'train.batch_size={args.batch_size}')
    if args.data_root is not None: extra.append(f'data.root={json.dumps(args.data_root)}')
    if args.compile_mode is not None: extra.append(f'train.compile_mode={args.compile_mode}')
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    try: base = load_config(args.config, extra)
    except AdaptiveCNNError as e: sys.exit(f'train_throughput: {e}')
    batch = base.train.batch_size

    start = time.perf_counter()
    if args.synthetic_only:
        n_train = min(max(batch * (args.warmup + args.steps), batch), max(45_000, batch))
        dataset, source = synthetic_dataset(base, n_train, base.train.seed), f'synthetic: {n_train:,} random uint8 images'
    else:
        try: dataset = load_data(base)
        except AdaptiveCNNError as e: sys.exit(f'train_throughput: {e}\n(no real data: pass --synthetic-only, or point $ADAPTIVE_CNN_DATA / --data-root at the datasets)')
        source = f'{base.data.dataset} from {base.data.root}: {len(dataset.train):,} training images'
    dataset = place_data(dataset, device)
    load_s = time.perf_counter() - start
    where = 'on the device' if dataset.train.images.device.type == device.type else 'in pinned host memory'
    base = replace(base, data=dataset.data)

    meta = dict(config=args.config, device=str(device), device_name=device_name(device), torch=torch.__version__,
                python=platform.python_version(), adaptive_cnn=adaptive_cnn.__version__, git=git_commit(),
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
                batch_size=batch, steps=args.steps, warmup=args.warmup, data=f'{source}, {where}', data_load_s=load_s,
                overrides=extra, cudnn_benchmark=args.cudnn_benchmark, command=' '.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                loadavg=list(os.getloadavg()) if hasattr(os, 'getloadavg') else None)
    print(f"train_throughput: {args.config} on {meta['device_name']} ({device}), torch {meta['torch']}, {meta['date']}")
    print(f"  data {meta['data']} (loaded in {load_s:.1f} s); batch {batch}, {args.warmup} warm-up + {args.steps} timed steps"
          + (f"; load average {' '.join(f'{x:.2f}' for x in meta['loadavg'])}" if meta['loadavg'] else ''), flush=True)

    rows, failed = [], False
    with tempfile.TemporaryDirectory(prefix='train_throughput_') as tmp:
        for k, overrides in enumerate(variant_overrides(base.train, args.variants, args.no_compile)):
            cfg = load_config(args.config, extra + overrides)
            cfg = replace(cfg, data=dataset.data)
            mode = cfg.train.compile_mode if cfg.train.compile else None
            row = dict(variant=describe(cfg.train, mode), precision=cfg.train.precision, channels_last=cfg.train.channels_last,
                       compile=cfg.train.compile, compile_mode=mode, overrides=overrides)
            for what, measure in (('end_to_end', lambda: end_to_end(cfg, dataset, device, args.warmup, args.steps, Path(tmp)/f'run{k}')),
                                  ('model_only', lambda: model_only(cfg, device, args.warmup, args.steps))):
                try: row[what] = measure()
                except Exception as e:   # one variant failing (a compiler missing, out of memory) leaves the others
                    row[what], row[f'{what}_error'], failed = None, error_text(e), True
                release(device)
                r = row[what]   # shown at once: a run cut short by a time limit keeps what it measured
                print(f"    {row['variant']}: {what} " + (f"{r['images_per_s']:,.0f} img/s, {r['ms_per_step']:.2f} ms/step, warm-up {r['warmup_s']:.1f} s"
                                                      if r else f"failed: {row[f'{what}_error']}"), flush=True)
            if row['end_to_end'] and row['model_only']:
                row['ratio'] = row['end_to_end']['images_per_s'] / row['model_only']['images_per_s']
            rows.append(row)
            print(f"  {row['variant']}: " + ', '.join(f"{w} {row[w]['images_per_s']:,.0f} img/s" if row[w] else f'{w} failed'
                                                       for w in ('end_to_end', 'model_only')), flush=True)
            if args.json: write_json(args.json, dict(meta, results=rows, complete=False))   # kept if a later variant is cut short

    print()
    print(format_table(rows))
    if args.json:
        write_json(args.json, dict(meta, results=rows, complete=True))
        print(f'\nresults written to {args.json}')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
