"""CIFAR-10 training-augmentation throughput: batched `BatchAugment` against torchvision's per-image pipeline.

Both pipelines do the same work on real CIFAR-10 training images: random crop 32 with padding 4, horizontal flip,
AutoAugment (CIFAR10 policy), Cutout 16, and CutMix (α = 1) on half of the batches, ending with float images in [0, 1]
and float soft targets.

- batched:   uint8 batches of 512 through `BatchAugment(cifar10 config)`, then `.float() / 255`;
- per-image: PIL images through `transforms.Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(),
             AutoAugment(CIFAR10), ToTensor(), Cutout(16)])`, stacked into batches of 512, then
             `transforms.v2.CutMix(alpha=1)` on half of the batches (one-hot targets otherwise).
             The PIL images are made before timing (a dataset would make them per item), which favours this pipeline.

Measured on 1 thread (torch.set_num_threads(1), in-process) and on all cores: the batched pipeline with
torch.set_num_threads(nproc); the per-image pipeline both in-process and the way one uses all cores with it, a
DataLoader with nproc worker processes. Each figure is the median of --repeats timed runs over --images images, after a
warm-up, with the pipelines interleaved. The table is printed and, unless --no-append, a dated section is
appended to benchmarks/RESULTS.md.

    python benchmarks/augment_throughput.py                     # data from $ADAPTIVE_CNN_DATA
    python benchmarks/augment_throughput.py --data /path/to/data --images 8192
"""
import argparse, os, platform, statistics, subprocess, sys, time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import v2

from adaptive_cnn.augment import BatchAugment
from adaptive_cnn.config import load_config

BATCH = 512


def read_cifar10_train(root: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    "The first `n` CIFAR-10 training images (N×3×32×32 uint8) and labels, from the binary version's data_batch_*.bin."
    folder = root / 'cifar-10-batches-bin'
    records = np.concatenate([np.fromfile(folder / f'data_batch_{i}.bin', np.uint8).reshape(-1, 3073) for i in range(1, 6)])
    if len(records) < n: sys.exit(f'only {len(records)} CIFAR-10 training images in {folder}, asked for {n}')
    return records[:n, 1:].reshape(n, 3, 32, 32), records[:n, 0].astype(np.int64)


class Cutout:
    "Per-image Cutout (DeVries & Taylor, 2017) on a C×H×W tensor: zero a size×size square around a random centre, clipped."
    def __init__(self, size: int): self.size = size
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        y1, x1 = max(cy - self.size // 2, 0), max(cx - self.size // 2, 0)
        x = x.clone()
        x[:, y1:cy - self.size // 2 + self.size, x1:cx - self.size // 2 + self.size] = 0
        return x


def per_image_transform(aug) -> T.Compose:
    return T.Compose([T.RandomCrop(32, padding=aug.crop_padding), T.RandomHorizontalFlip(),
                      T.AutoAugment(T.AutoAugmentPolicy.CIFAR10), T.ToTensor(), Cutout(aug.cutout_size)])


class PerImageDataset(torch.utils.data.Dataset):
    "PIL images through the per-image transform, as a torchvision dataset would serve them."
    def __init__(self, pils, labels, transform): self.pils, self.labels, self.transform = pils, labels, transform
    def __len__(self): return len(self.pils)
    def __getitem__(self, i): return self.transform(self.pils[i]), self.labels[i]


def batch_cutmix(images, labels, cutmix, prob, num_classes=10):
    "torchvision v2 CutMix on a batch with probability `prob`; one-hot targets otherwise."
    if torch.rand(()) < prob: return cutmix(images, labels)
    return images, torch.nn.functional.one_hot(labels, num_classes).float()


def time_runs(runs: dict, images: int, repeats: int) -> dict:
    """Median images/s of each of `runs` (name → callable processing `images` images), after one warm-up call each.
    The runs are interleaved (a, b, a, b, ...) so that a change in the machine's load hits all of them alike."""
    for run in runs.values(): run()
    rates = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            rates[name].append(images / (time.perf_counter() - start))
    return {name: statistics.median(r) for name, r in rates.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data', default=os.environ.get('ADAPTIVE_CNN_DATA', 'data'), help='data root holding cifar-10-batches-bin/')
    parser.add_argument('--images', type=int, default=4096, help='images per timed run (a multiple of 512)')
    parser.add_argument('--repeats', type=int, default=3, help='timed runs per figure; the median is reported')
    parser.add_argument('--results', default=str(Path(__file__).parent / 'RESULTS.md'), help='Markdown file to append to')
    parser.add_argument('--no-append', action='store_true', help='print only')
    args = parser.parse_args()
    n = args.images - args.images % BATCH
    cores = os.cpu_count()

    load_before = Path('/proc/loadavg').read_text().split()[:3] if Path('/proc/loadavg').exists() else ['?'] * 3
    cfg = load_config('cifar10')
    images, labels = read_cifar10_train(Path(args.data), n)
    batches = [(torch.from_numpy(images[i:i + BATCH].copy()), torch.from_numpy(labels[i:i + BATCH])) for i in range(0, n, BATCH)]
    pils = [Image.fromarray(np.ascontiguousarray(x.transpose(1, 2, 0))) for x in images]
    mean_uint8 = tuple(round(255 * m) for m in cfg.data.mean)
    batched = BatchAugment(cfg.augment, cfg.data.num_classes, fill=mean_uint8)
    generator = torch.Generator().manual_seed(0)
    transform = per_image_transform(cfg.augment)
    cutmix = v2.CutMix(num_classes=cfg.data.num_classes, alpha=cfg.augment.cutmix_alpha)
    label_tensor = torch.from_numpy(labels)

    def run_batched():
        for x, y in batches:
            out, targets = batched(x, y, generator)
            out = out.float().div_(255)

    def run_per_image():
        for i in range(0, n, BATCH):
            x = torch.stack([transform(p) for p in pils[i:i + BATCH]])
            x, targets = batch_cutmix(x, label_tensor[i:i + BATCH], cutmix, cfg.augment.cutmix_prob)

    loader = torch.utils.data.DataLoader(PerImageDataset(pils, label_tensor, transform), batch_size=BATCH,
                                         num_workers=cores, persistent_workers=True)
    def run_loader():
        for x, y in loader: x, targets = batch_cutmix(x, y, cutmix, cfg.augment.cutmix_prob)

    results = {}
    torch.set_num_threads(1)
    results['1 thread'] = time_runs(dict(batched=run_batched, per_image=run_per_image), n, args.repeats)
    torch.set_num_threads(cores)
    results[f'all {cores} cores'] = time_runs(dict(batched=run_batched, per_image=run_per_image, per_image_loader=run_loader),
                                              n, args.repeats)

    rows = [('1 thread', 'batched BatchAugment, 1 thread', results['1 thread']['batched']),
            ('1 thread', 'per-image torchvision, in-process', results['1 thread']['per_image'])]
    all_cores = results[f'all {cores} cores']
    rows += [(f'all {cores} cores', f'batched BatchAugment, {cores} threads', all_cores['batched']),
             (f'all {cores} cores', 'per-image torchvision, in-process', all_cores['per_image']),
             (f'all {cores} cores', f'per-image torchvision, DataLoader {cores} workers', all_cores['per_image_loader'])]
    ratio_1 = results['1 thread']['batched'] / results['1 thread']['per_image']
    best_per_image = max(all_cores['per_image'], all_cores['per_image_loader'])
    ratio_all = all_cores['batched'] / best_per_image

    table = ['| setting | pipeline | images/s |', '|---|---|---:|']
    table += [f'| {s} | {p} | {v:,.0f} |' for s, p, v in rows]
    summary = [f'- ratio on 1 thread (batched / per-image): **{ratio_1:.1f}×**',
               f'- ratio on all {cores} cores (batched / best per-image): **{ratio_all:.1f}×**',
               f'- target ≥ 10×: {"met" if min(ratio_1, ratio_all) >= 10 else "NOT met"}']
    print('\n'.join(table + [''] + summary))

    if args.no_append: return
    date = subprocess.run(['date'], capture_output=True, text=True).stdout.strip()
    model = next((l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines() if l.startswith('model name')), platform.processor())
    env = f'ADAPTIVE_CNN_DATA={os.environ["ADAPTIVE_CNN_DATA"]} ' if 'ADAPTIVE_CNN_DATA' in os.environ else ''
    command = env + ' '.join([os.path.relpath(sys.executable), os.path.relpath(sys.argv[0])] + sys.argv[1:])
    section = [f'## CIFAR-10 augmentation throughput, {date}', '',
               f'- machine: {model}, {cores} CPUs (nproc); torch {torch.__version__}, no GPU used; '
               f'load average (1, 5, 15 min) just before the run {" ".join(load_before)}: it trails earlier work, and work '
               'running alongside would slow both pipelines',
               f'- command: `{command}`',
               f'- data: {Path(args.data).resolve()}/cifar-10-batches-bin, the first {n:,} training images',
               f'- {n:,} real CIFAR-10 training images per timed run, batch {BATCH}, median of {args.repeats} interleaved runs after a warm-up',
               '- both pipelines: crop 32 pad 4 → flip → AutoAugment CIFAR10 → Cutout 16 → CutMix α=1 on half of the batches, '
               'ending in float images and float targets', '', *table, '', *summary, '', '']
    path = Path(args.results)
    if not path.exists(): path.write_text('# Benchmark results\n\nEach section is appended by the script it names.\n\n')
    with path.open('a') as f: f.write('\n'.join(section))
    print(f'appended to {path}')


if __name__ == '__main__':
    main()
