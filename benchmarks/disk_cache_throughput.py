"""What reading batches from the disk cache (`data.cache: disk`) costs against memory, on MNIST-sized and 64×64 data.

Two measurements for each dataset, the disk cache warm in the page cache (as it is when the machine's memory holds
it) and, with --cold, after dropping the page cache before each pass (root only: reads then come from the disk):

- loader: a whole epoch of `iterate_batches` in `epoch_order` (batches of 256 read in random order), images/s;
- training: a one-epoch `Trainer` run of --steps steps, the epoch's images/s from its metrics (augmentation, forward,
  backward, optimiser), with the MNIST recipe's network (28×28) or the testing module's tiny network (64×64: the
  data path is then the largest share of a step, the worst case for the cache).

Each figure is the median of --repeats interleaved runs. The datasets are written as .npz files first: the real MNIST
training images ($ADAPTIVE_CNN_DATA) and 50,000 synthetic 64×64 RGB bar images.

    ADAPTIVE_CNN_DATA=../shared/data python benchmarks/disk_cache_throughput.py --markdown benchmarks/RESULTS.md
"""
import argparse, datetime, json, os, platform, statistics, subprocess, tempfile, time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from adaptive_cnn.config import load_config
from adaptive_cnn.data import epoch_order, iterate_batches, load_data, read_dataset
from adaptive_cnn.runtime import cpu_name
from adaptive_cnn.testing import TINY_MODEL, save_npz_dataset, shapes_data
from adaptive_cnn.training import Trainer

OPEN = ['data.classes=null', 'data.num_classes=null', 'data.mean=null', 'data.std=null', 'data.invert_threshold=null',
        'data.image_size=null', 'data.channels=null', 'data.val_size=1000', 'data.test_fraction=0.02']


def write_datasets(folder:Path) -> dict[str, tuple[Path, list[str]]]:
    "name → (.npz, network overrides)."
    mnist = read_dataset(load_config('mnist').data)
    save_npz_dataset(folder/'mnist.npz', mnist.train, None, mnist.classes)
    bars = shapes_data(10_000, num_classes=4, channels=3, size=64)
    x = bars.images.repeat(5, 1, 1, 1)
    labels = bars.labels.repeat(5)
    save_npz_dataset(folder/'bars64.npz', type(bars)(x, labels), None, [str(k) for k in range(4)])
    return {'MNIST 28×28×1 (mnist recipe network)': (folder/'mnist.npz', []),
            '64×64×3 bars (tiny network)': (folder/'bars64.npz', list(TINY_MODEL))}


def drop_page_cache() -> bool:
    try:
        os.sync()
        Path('/proc/sys/vm/drop_caches').write_text('3\n')
        return True
    except OSError: return False


def loader_rate(ds, cold:bool) -> float:
    if cold: drop_page_cache()
    start = time.perf_counter()
    seen = sum(len(b) for b in iterate_batches(ds.train, 256, epoch_order(len(ds.train), 0, 0)))
    return seen / (time.perf_counter() - start)


def training_rate(cfg, ds, steps:int, out:Path, cold:bool) -> float:
    # no SWA: its BatchNorm pass over the whole training split would dwarf the steps being timed
    cfg = load_config(cfg, [f'output.dir={json.dumps(str(out))}', 'train.epochs=1', f'train.steps_per_epoch={steps}',
                            'train.swa_start=null'])
    if cold: drop_page_cache()
    trainer = Trainer(cfg, device='cpu', overwrite=True, progress=False, data=ds, echo=False)
    try: trainer.fit()
    finally: trainer.close()
    return json.loads((out/'metrics.jsonl').read_text().splitlines()[0])['images_per_s']


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--steps', type=int, default=30, help='training steps per run (batch 128)')
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--cold', action='store_true', help='also measure with the page cache dropped (root only)')
    p.add_argument('--markdown', type=Path, help='append the results to this file')
    args = p.parse_args(argv)
    torch.set_num_threads(os.cpu_count())
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, (npz, network) in write_datasets(tmp).items():
            loaded = {}
            for cache in ('memory', 'disk'):
                cfg = load_config('mnist', [f'data.dataset={json.dumps(str(npz))}', *OPEN, *network, 'train.batch_size=128',
                                            f'data.cache={cache}', f'data.cache_dir={json.dumps(str(tmp/"cache"))}'])
                start = time.perf_counter()
                loaded[cache] = (cfg, load_data(cfg), time.perf_counter() - start)
            modes = [('memory', False), ('disk', False)] + ([('disk', True)] if args.cold and drop_page_cache() else [])
            rates = {m: dict(loader=[], training=[]) for m in modes}
            for _ in range(args.repeats):
                for cache, cold in modes:
                    cfg, ds, _ = loaded[cache]
                    rates[(cache, cold)]['loader'].append(loader_rate(ds, cold))
                    rates[(cache, cold)]['training'].append(training_rate(cfg, ds, args.steps, tmp/'run', cold))
            for (cache, cold), r in rates.items():
                rows.append(dict(dataset=name, source=f'{cache}{" (page cache dropped)" if cold else ""}',
                                 load_s=loaded[cache][2], images=len(loaded[cache][1].train),
                                 loader=statistics.median(r['loader']), training=statistics.median(r['training'])))
                print(json.dumps(rows[-1]), flush=True)
    if args.markdown:
        commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()
        lines = [f'\n## Disk cache throughput, {datetime.datetime.now(datetime.timezone.utc):%a %b %d %H:%M:%S UTC %Y}\n',
                 f'- machine: {cpu_name()}, {os.cpu_count()} CPUs; torch {torch.__version__}; no GPU; commit {commit}; '
                 f'load average before the run {" ".join(f"{l:.2f}" for l in load_before)}',
                 '- command: `python benchmarks/disk_cache_throughput.py' + (' --cold' if args.cold else '') +
                 f' --steps {args.steps} --repeats {args.repeats}`',
                 f'- median of {args.repeats} interleaved runs; load: `load_data` wall time (for disk, the first one '
                 'builds the cache); loader: an epoch of batches of 256 in random order; training: one epoch of '
                 f'{args.steps} steps of 128 through `Trainer.fit`\n',
                 '| data | images from | training images | load_data s | loader images/s | training images/s |',
                 '|---|---|---:|---:|---:|---:|']
        lines += [f"| {r['dataset']} | {r['source']} | {r['images']:,} | {r['load_s']:.1f} | {r['loader']:,.0f} | "
                  f"{r['training']:,.0f} |" for r in rows]
        with open(args.markdown, 'a') as f: f.write('\n'.join(lines) + '\n')


if __name__ == '__main__': main()
