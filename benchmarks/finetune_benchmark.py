"""Fine-tuning against training from scratch, on a small dataset and the same budget.

    ADAPTIVE_CNN_DATA=/path/to/data python benchmarks/finetune_benchmark.py OUT_DIR [--pretrained RUN] [--seeds 0 1 2 3 4]

The small dataset is scikit-learn's 8×8 handwritten digits (1,797 scans from the UCI collection, other writers and
another scanner than MNIST's), enlarged to 28×28: 40 images per class to learn from (400: 300 to train, 100 to
validate) and the other 1,397 to test. Both arms train the MNIST network with the MNIST recipe, for the same epochs
and steps; one starts from random weights, the other from a network trained on MNIST (`train.init_from`, the first
epochs training only the classifier: `train.freeze_epochs`), once with the recipe's learning rates and once with a
quarter of them. Without --pretrained the MNIST network is trained first
(`PRETRAIN_EPOCHS` epochs of the built-in recipe). Every run goes through the command line, as a user would run it.
Prints one line per run and a table (mean ± standard deviation over the seeds); writes OUT_DIR/finetune.json.
"""
import argparse, json, os, statistics, subprocess, sys, time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from adaptive_cnn.testing import save_npz_dataset
from adaptive_cnn.config import load_config
from adaptive_cnn.data import ImageData

PRETRAIN_EPOCHS = 5
PER_CLASS = 40          # images per class to learn from
VAL_SIZE = 100          # of those, held out for validation (best checkpoint, EMA)
EPOCHS, BATCH = 20, 64  # the budget of both arms: 20 epochs of 5 steps
FREEZE_EPOCHS = 2
DIGITS_SIZE = 28

# both arms: the MNIST network and recipe on the small dataset (its size, statistics and classes read from the data)
COMMON = ['data.image_size=null', 'data.mean=null', 'data.std=null', 'data.classes=null', 'data.num_classes=null',
          f'data.val_size={VAL_SIZE}', f'train.epochs={EPOCHS}', f'train.batch_size={BATCH}']


def small_digits(path:Path, seed:int=0) -> Path:
    "scikit-learn's digits at 28×28: `PER_CLASS` per class to learn from, the rest to test."
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.from_numpy(d.images).float()[:, None] / 16                 # 0..16 ink levels, strokes bright on dark like MNIST
    x = F.interpolate(x, size=(DIGITS_SIZE, DIGITS_SIZE), mode='bilinear', align_corners=False)
    x = (x * 255).round().clamp(0, 255).to(torch.uint8)
    y = torch.from_numpy(d.target.astype(np.int64))
    rng = np.random.default_rng(seed)
    learn = np.concatenate([rng.permutation(np.flatnonzero(d.target == c))[:PER_CLASS] for c in range(10)])
    test = np.setdiff1d(np.arange(len(y)), learn)
    save_npz_dataset(path, ImageData(x[learn], y[learn]), ImageData(x[test], y[test]), [str(c) for c in range(10)])
    return path


def train(out:Path, config:str, overrides:list[str], data:str|None=None) -> dict:
    "One `adaptive-cnn train` run; its results.json, with the wall time of the whole command."
    cmd = [sys.executable, '-m', 'adaptive_cnn', 'train', config, '--no-progress', '--overwrite', '--output-dir', str(out)]
    if data: cmd += ['--data', data]
    for o in overrides: cmd += ['--set', o]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode: sys.exit(f'{" ".join(cmd)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}')
    return json.loads((out/'results.json').read_text()) | dict(command_s=time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('out', type=Path)
    ap.add_argument('--pretrained', help='an MNIST run folder or checkpoint to start from (default: train one)')
    ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2, 3, 4])
    args = ap.parse_args()
    if not os.environ.get('ADAPTIVE_CNN_DATA'): sys.exit('set ADAPTIVE_CNN_DATA to the folder holding MNIST/')
    args.out.mkdir(parents=True, exist_ok=True)
    pretrained = args.pretrained
    if pretrained is None:
        pretrained = str(args.out/'mnist')
        r = train(Path(pretrained), 'mnist', [f'train.epochs={PRETRAIN_EPOCHS}'])
        print(f'pretrained: MNIST, {PRETRAIN_EPOCHS} epochs, test accuracy {r["test_acc"]:.4f}, {r["command_s"]:.0f} s', flush=True)
    data = str(small_digits(args.out/'digits28.npz'))
    tuned = [f'train.init_from={pretrained}', f'train.freeze_epochs={FREEZE_EPOCHS}']
    recipe = load_config('mnist').train
    arms = {'from scratch': [], 'fine-tuned': tuned,
            # a pretrained network usually wants smaller steps: the same run at a quarter of the recipe's learning rates
            'fine-tuned, lr / 4': tuned + [f'train.lr={recipe.lr / 4:g}', f'train.swa_lr={recipe.swa_lr / 4:g}']}
    rows = {arm: [] for arm in arms}
    for seed in args.seeds:
        for arm, extra in arms.items():
            r = train(args.out/f'{"".join(c if c.isalnum() else "_" for c in arm)}_{seed}', 'mnist', COMMON + extra + [f'train.seed={seed}'], data)
            rows[arm].append(r)
            print(f'seed {seed} {arm:>18}: test accuracy {r["test_acc"]:.4f} (best validation {r["best_val_acc"]:.4f}, '
                  f'{r["best_model"]}), {r["command_s"]:.0f} s', flush=True)
    summary = {arm: dict(test_acc=[r['test_acc'] for r in rs], mean=statistics.mean(r['test_acc'] for r in rs),
                         sd=statistics.stdev(r['test_acc'] for r in rs) if len(rs) > 1 else 0.0,
                         seconds=statistics.mean(r['command_s'] for r in rs)) for arm, rs in rows.items()}
    print(f'\n| {len(args.seeds)} seeds, {EPOCHS} epochs of {PER_CLASS * 10 - VAL_SIZE} images | test accuracy (1,397 digits) | wall time per run |')
    print('|---|---:|---:|')
    for arm, s in summary.items():
        print(f'| {arm} | {100 * s["mean"]:.2f}% ± {100 * s["sd"]:.2f} | {s["seconds"]:.0f} s |')
    margin = summary['fine-tuned']['mean'] - summary['from scratch']['mean']
    wins = sum(t['test_acc'] > s['test_acc'] for t, s in zip(rows['fine-tuned'], rows['from scratch']))
    print(f'fine-tuning minus scratch: {100 * margin:+.2f} points; fine-tuning better for {wins} of {len(args.seeds)} seeds')
    (args.out/'finetune.json').write_text(json.dumps(dict(pretrained=pretrained, summary=summary, margin=margin,
                                                         runs={a: rs for a, rs in rows.items()}), indent=1))


if __name__ == '__main__':
    main()
