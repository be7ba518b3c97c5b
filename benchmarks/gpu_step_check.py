"""The compiled training step (`train.compile`) checked and timed on one device, in one process, in three parts:

1. same:  two Trainers of the config, eager and compiled, run `--check-steps` steps from the same fixed-shape draws
          (inductor's `fallback_random`, so that dropout draws the same masks); losses and weights must agree within
          the precision's rounding (the CPU test `tests/test_compiled_step.py` does the same on a small network).
2. graphs: what the compiler made of the step: graph breaks, recompilations, CUDA-graph skips
          (`torch._dynamo.utils.counters`), and host syncs in steady-state steps (`torch.cuda.set_sync_debug_mode`).
3. speed: images/s of `Trainer.train_step` (sampling, body, schedule) eager and compiled, after a warm-up that pays
          for the compilation (its seconds are reported).

On a GPU `--compile-mode reduce-overhead` (the default there) replays the compiled graphs as CUDA graphs. On a CPU the
script is a dry run of itself (`default` mode, a small network with --small).

    python benchmarks/gpu_step_check.py --config cifar10 --json out.json          # on the GPU machine
    python benchmarks/gpu_step_check.py --config cifar10 --device cpu --small --check-steps 3 --steps 3 --warmup 2
"""
import argparse, collections, json, sys, tempfile, time
from dataclasses import replace
from pathlib import Path

import torch
import torch._dynamo
import torch._inductor.config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from profile_step import sync_check
from train_throughput import device_name, epoch_batches, git_commit, synchronize, synthetic_dataset
from adaptive_cnn.config import load_config
from adaptive_cnn.training import Trainer

SMALL = ['model.stem_channels=16', 'model.widths=[16,32]', 'model.depths=[1,1]', 'model.strides=[1,2]', 'model.classifier_hidden=32']


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--config', default='cifar10', help='built-in config name or YAML path')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--compile-mode', default=None, help='torch.compile mode (default: reduce-overhead on CUDA, default on a CPU)')
    p.add_argument('--check-steps', type=int, default=5, help='steps compared eager against compiled')
    p.add_argument('--warmup', type=int, default=10, help='untimed steps before timing (the compiled ones compile here)')
    p.add_argument('--steps', type=int, default=50, help='timed steps')
    p.add_argument('--batch-size', type=int, default=None, help="images per step (default: the config's)")
    p.add_argument('--small', action='store_true', help='a small network (a dry run on a CPU)')
    p.add_argument('--set', dest='overrides', action='append', default=[], metavar='SECTION.KEY=VALUE', help='extra config override (repeatable)')
    p.add_argument('--json', metavar='OUT', help='write the results as JSON to OUT')
    args = p.parse_args(argv)
    if args.compile_mode is None: args.compile_mode = 'reduce-overhead' if args.device.startswith('cuda') else 'default'
    return args


def make_trainer(args, compile:bool, dataset, out:Path) -> Trainer:
    extra = SMALL if args.small else []
    if args.batch_size: extra = extra + [f'train.batch_size={args.batch_size}']
    cfg = load_config(args.config, extra + args.overrides + [f'train.compile={str(compile).lower()}',
                                                             f'train.compile_mode={args.compile_mode}'])
    cfg = replace(cfg, data=dataset.data, output=replace(cfg.output, dir=str(out)))
    return Trainer(cfg, device=args.device, overwrite=True, progress=False, echo=False, data=dataset)


def same_steps(eager:Trainer, compiled:Trainer, steps:int) -> dict:
    "Losses of both Trainers over `steps` steps from the same draws, and their weights' largest difference after them."
    t = compiled.cfg.train
    batch = next(epoch_batches(compiled))[0].to(compiled.device)
    losses = []
    with torch._inductor.config.patch(fallback_random=True):
        for step in range(steps):
            generator = torch.Generator(compiled.device).manual_seed(step)
            params = compiled.augment.sample(t.batch_size, *batch.images.shape[-2:], generator)
            pair = []
            for trainer in (eager, compiled):
                torch.manual_seed(step); trainer.model.train()
                trainer.optimizer.zero_grad(set_to_none=True)
                loss, _ = trainer.step_body(batch.images, batch.labels, params)
                trainer.scheduler.step()
                pair.append(loss.item())
            losses.append(pair)
    diffs = {k: (e.float() - compiled.model.state_dict()[k].float()).abs().max().item()
             for k, e in eager.model.state_dict().items() if e.is_floating_point()}
    worst = max(diffs, key=diffs.get)
    rel = [abs(e - c) / abs(e) for e, c in losses]
    return dict(losses=losses, max_relative_loss_difference=max(rel), first_step_relative_difference=rel[0],
                max_weight_difference=diffs[worst], worst_tensor=worst,
                agree=rel[0] < 1e-3 and max(rel) < 2e-2 and diffs[worst] < 5e-2)


def timed_steps(trainer:Trainer, warmup:int, steps:int, sync_steps:int=3) -> dict:
    "Images/s of `train_step` on the config's batches after `warmup` steps; host syncs counted over `sync_steps` more."
    batches, device, n = epoch_batches(trainer), trainer.device, trainer.cfg.train.batch_size
    trainer.model.train(); trainer._bad_step = torch.tensor(-1, device=device)
    def step(): trainer.train_step(*next(batches))   # the batch and the generator train_epoch would use
    start = time.perf_counter()
    for _ in range(warmup): step()
    synchronize(device)
    warm = time.perf_counter() - start
    syncs = sync_check(step, sync_steps) if device.type == 'cuda' else dict(syncs_per_step=0.0, locations=[])
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps): step()
    synchronize(device)
    seconds = time.perf_counter() - start
    return dict(images_per_s=steps * n / seconds, ms_per_step=1e3 * seconds / steps, warmup_s=warm,
                precision=trainer.cfg.train.precision, host_syncs_per_step=syncs['syncs_per_step'], sync_locations=syncs['locations'][:8])


def compiler_counters() -> dict:
    c = torch._dynamo.utils.counters
    reasons = collections.Counter()
    for reason, n in c['graph_break'].items(): reasons[str(reason).strip().splitlines()[0][:120]] += n
    return dict(graph_breaks=sum(c['graph_break'].values()), graph_break_reasons=dict(reasons.most_common(8)),
                unique_graphs=c['stats'].get('unique_graphs', 0), cudagraph_skips=c['inductor'].get('cudagraph_skips', 0),
                recompiles=sum(v for k, v in c['recompiles'].items()) if 'recompiles' in c else None)


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    base = load_config(args.config, (SMALL if args.small else []) + args.overrides)
    batch = args.batch_size or base.train.batch_size
    dataset = synthetic_dataset(base, max(4 * batch, 1024))
    out = dict(config=args.config, device=device_name(device), torch=torch.__version__, git_commit=git_commit(),
               compile_mode=args.compile_mode, small=args.small, batch_size=batch, overrides=args.overrides)
    print(f"gpu_step_check: {args.config} on {out['device']}, torch {out['torch']}, compile mode {args.compile_mode}, batch {batch}", flush=True)
    failed = False
    with tempfile.TemporaryDirectory(prefix='gpu_step_check_') as tmp:
        try:
            torch._dynamo.reset(); torch._dynamo.utils.counters.clear()
            eager, compiled = make_trainer(args, False, dataset, Path(tmp)/'eager'), make_trainer(args, True, dataset, Path(tmp)/'compiled')
            start = time.perf_counter()
            out['same'] = same_steps(eager, compiled, args.check_steps)
            out['same']['seconds'] = time.perf_counter() - start
            s = out['same']
            print(f"  same draws, {args.check_steps} steps: losses {s['losses']}, largest relative difference "
                  f"{s['max_relative_loss_difference']:.2e}, largest weight difference {s['max_weight_difference']:.2e} "
                  f"({s['worst_tensor']}): {'agree' if s['agree'] else 'DISAGREE'} ({s['seconds']:.0f} s, compiling included)", flush=True)
            failed |= not s['agree']
            for t in (eager, compiled): t.close()
        except Exception as e:
            out['same'] = dict(error=f'{type(e).__name__}: {e}'); failed = True
            print(f"  same draws: FAILED {out['same']['error']}", flush=True)
        for name, compile in (('eager', False), ('compiled', True)):
            try:
                if compile: torch._dynamo.reset(); torch._dynamo.utils.counters.clear()
                trainer = make_trainer(args, compile, dataset, Path(tmp)/name)
                r = out[name] = timed_steps(trainer, args.warmup, args.steps)
                trainer.close()
                if compile: r['compiler'] = compiler_counters()
                print(f"  {name}: {r['images_per_s']:,.0f} img/s, {r['ms_per_step']:.2f} ms/step ({r['precision']}), warm-up {r['warmup_s']:.1f} s, "
                      f"host syncs/step {r['host_syncs_per_step']:.1f} {r['sync_locations'] or ''}", flush=True)
                if compile: print(f"  compiler: {r['compiler']}", flush=True)
            except Exception as e:
                out[name] = dict(error=f'{type(e).__name__}: {e}'); failed = True
                print(f"  {name}: FAILED {out[name]['error']}", flush=True)
            if args.json: Path(args.json).write_text(json.dumps(out, indent=1) + '\n')
    if args.json: Path(args.json).write_text(json.dumps(out, indent=1) + '\n')
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
