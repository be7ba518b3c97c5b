"""`adaptive-cnn test` on a folder of 10,000 images: how fast it classifies, how soon the first row comes, peak memory.

The images are the 10,000 real MNIST test digits written as PNG files ($ADAPTIVE_CNN_DATA); the checkpoint is the MNIST
recipe's network (709,770 parameters) saved by `testing.tiny_run` (trained 40 steps on synthetic bars: the weights do
not change the speed). Each run is a real `python -m adaptive_cnn test` process whose peak resident memory (VmHWM) is
read just before the interpreter tears down (PyTorch's teardown alone adds about 100 MB that says nothing about the
command). A run over the first 1,000 files gives the memory to compare with.

    ADAPTIVE_CNN_DATA=../shared/data python benchmarks/stream_test.py --markdown benchmarks/RESULTS.md
"""
import argparse, datetime, os, re, statistics, subprocess, sys, tempfile, time
from pathlib import Path

import torch
from PIL import Image

from adaptive_cnn.config import load_config
from adaptive_cnn.data import read_dataset
from adaptive_cnn.runtime import cpu_name
from adaptive_cnn.testing import tiny_run

MEASURED = r'''import re, runpy, sys
peak_file = sys.argv.pop(1)
try: runpy.run_module('adaptive_cnn', run_name='__main__', alter_sys=True)
finally:
    peak = re.search(r'VmHWM:\s*(\d+) kB', open('/proc/self/status').read()).group(1)
    with open(peak_file, 'w') as f: f.write(peak)
'''


def prepare(root:Path) -> tuple[Path, Path, Path]:
    "(checkpoint, folder of 10,000 PNGs, folder of the first 1,000)."
    test = read_dataset(load_config('mnist').data).test
    for folder, n in (('digits', 10_000), ('digits1000', 1_000)):
        (root/folder).mkdir()
        for i in range(n): Image.fromarray(test.images[i, 0].numpy()).save(root/folder/f'{i:05d}.png')
    ckpt = tiny_run(root/'run', 'mnist', overrides=(), num_classes=10, num_train=600, num_test=200, steps=40)
    return ckpt, root/'digits', root/'digits1000'


def measure(ckpt:Path, folder:Path, threads:int) -> dict:
    peak = Path(tempfile.mktemp())
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    start = time.perf_counter()
    p = subprocess.Popen([sys.executable, '-c', MEASURED, str(peak), 'test', str(ckpt), str(folder)],
                         stdout=subprocess.PIPE, text=True, env=env)
    p.stdout.readline()                               # the CSV header
    p.stdout.readline()
    first = time.perf_counter() - start
    rows = 1 + sum(1 for _ in p.stdout)
    last = time.perf_counter() - start
    assert p.wait() == 0
    total = time.perf_counter() - start
    return dict(rows=rows, first_row_s=first, whole=rows / total, streaming=rows / (last - first),
                peak_mb=int(peak.read_text()) / 1024)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--threads', type=int, default=os.cpu_count(), help='OMP_NUM_THREADS of the test process')
    p.add_argument('--markdown', type=Path, help='append the results to this file')
    args = p.parse_args(argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, many, few = prepare(Path(tmp))
        runs = {n: [] for n in ('10,000', '1,000')}
        for _ in range(args.repeats):
            runs['10,000'].append(measure(ckpt, many, args.threads))
            runs['1,000'].append(measure(ckpt, few, args.threads))
    rows = []
    for n, r in runs.items():
        med = {k: statistics.median(x[k] for x in r) for k in ('first_row_s', 'whole', 'streaming', 'peak_mb')}
        rows.append(f"| {n} | {med['whole']:,.0f} | {med['streaming']:,.0f} | {med['first_row_s']:.1f} | "
                    f"{med['peak_mb']:,.1f} |")
        print(n, med, flush=True)
    if args.markdown:
        commit = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True, text=True).stdout.strip()
        lines = [f'\n## adaptive-cnn test on 10,000 files, {datetime.datetime.now(datetime.timezone.utc):%a %b %d %H:%M:%S UTC %Y}\n',
                 f'- machine: {cpu_name()}, {os.cpu_count()} CPUs; torch {torch.__version__}; no GPU; commit {commit}; '
                 f'load average before the run {" ".join(f"{l:.2f}" for l in load_before)}',
                 f'- command: `python benchmarks/stream_test.py --repeats {args.repeats} --threads {args.threads}`',
                 '- real MNIST test digits as PNG files, the MNIST recipe network (709,770 parameters), CPU; median of '
                 f'{args.repeats} runs; images/s for the whole command (imports included) and from the first row to the '
                 'last; peak RSS (VmHWM) just before teardown\n',
                 '| files | images/s, whole command | images/s, first to last row | first row after s | peak RSS MB |',
                 '|---:|---:|---:|---:|---:|', *rows]
        with open(args.markdown, 'a') as f: f.write('\n'.join(lines) + '\n')


if __name__ == '__main__': main()
