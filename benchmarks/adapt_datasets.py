"""Write the eight datasets of the dataset-adaptation benchmark as .npz files, with their known properties in truth.json.

    ADAPTIVE_CNN_DATA=/path/to/data python benchmarks/adapt_datasets.py OUT_DIR [--force]

Each dataset is built from real data (scikit-learn's 8×8 digits, MNIST, CIFAR-10) and changes one or two things a
built-in config takes for granted: image size, polarity, class balance, number of classes, aspect ratio, colour,
mirror symmetry, dataset size. truth.json records what `adaptive-cnn profile` should find (plain background, polarity,
whether horizontal flips keep labels), the training budget, the nearest built-in config and the dataset's shape.
Everything is deterministic; a dataset whose .npz exists is kept unless --force.
"""
import argparse, functools, json, os, sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from adaptive_cnn.testing import save_npz_dataset
from adaptive_cnn.data import ImageData, RawDataset, read_cifar10, read_mnist_family

SEED = 0
CHUNK = 4096                                       # images resized at once: bounds the float copy
LUMA = torch.tensor([0.299, 0.587, 0.114])          # ITU-R 601
CIFAR_CAT, CIFAR_DOG = 3, 5


# ---------------------------------------------------------------- sources and image operations

def data_root() -> Path:
    "The folder holding MNIST/ and cifar-10-batches-bin/, from $ADAPTIVE_CNN_DATA."
    root = os.environ.get('ADAPTIVE_CNN_DATA')
    if not root: sys.exit('adapt_datasets.py: set ADAPTIVE_CNN_DATA to the folder holding MNIST/ and cifar-10-batches-bin/')
    return Path(root)

@functools.cache
def mnist() -> RawDataset: return read_mnist_family('mnist', data_root(), download=False)

@functools.cache
def cifar10() -> RawDataset: return read_cifar10(data_root(), download=False)

def resize(images:torch.Tensor, size:tuple[int, int]) -> torch.Tensor:
    "uint8 N×C×H×W images resized to `size` (bilinear, antialiased), in chunks."
    return torch.cat([F.interpolate(x.float(), size, mode='bilinear', antialias=True, align_corners=False)
                      .round().clamp(0, 255).to(torch.uint8) for x in images.split(CHUNK)])

def luma(images:torch.Tensor) -> torch.Tensor:
    "Grey levels (float N×H×W) of uint8 RGB images N×3×H×W."
    return torch.cat([torch.einsum('nchw,c->nhw', x.float(), LUMA) for x in images.split(CHUNK)])

def to_grey(images:torch.Tensor) -> torch.Tensor:
    "uint8 N×1×H×W grey images from uint8 RGB images."
    return luma(images).round().clamp(0, 255).to(torch.uint8)[:, None]

def first_per_class(labels:torch.Tensor, counts:list[int]) -> torch.Tensor:
    "Indices of the first `counts[c]` images of each class c, in file order."
    keep = [(labels == c).nonzero().flatten()[:n] for c, n in enumerate(counts)]
    return torch.cat(keep).sort().values

def mapped(split:ImageData, transform, idx=None) -> ImageData:
    "`split` restricted to `idx` (default: all of it), its images passed through `transform`."
    split = split if idx is None else split[idx]
    return ImageData(transform(split.images), split.labels)


# ---------------------------------------------------------------- the eight datasets: each returns (train, test, classes)

def digits8():
    "scikit-learn's 8×8 digits, stratified 80/20."
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    d = load_digits()
    x = np.rint(d.images * 255 / 16).astype(np.uint8)[:, None]
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.2, random_state=SEED, stratify=d.target)
    split = lambda x, y: ImageData(torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)))
    return split(xtr, ytr), split(xte, yte), [str(c) for c in d.target_names]

def mnist_crop20():
    "MNIST centre-cropped to 20×20: strokes reach the border."
    crop = lambda x: x[:, :, 4:24, 4:24].contiguous()
    return mapped(mnist().train, crop), mapped(mnist().test, crop), mnist().classes

def mnist16_inv_lt():
    "MNIST at 16×16, dark ink on a light ground, training set long-tailed 10:1."
    inv16 = lambda x: 255 - resize(x, (16, 16))
    counts = [round(5000 * 0.1 ** (c / 9)) for c in range(10)]
    return (mapped(mnist().train, inv16, first_per_class(mnist().train.labels, counts)),
            mapped(mnist().test, inv16), mnist().classes)

def digit_pairs(split:ImageData, per_class:int, rng:np.random.RandomState) -> ImageData:
    "`per_class` images of each number 00–99: a random digit of the tens beside a random digit of the ones."
    pools = [(split.labels == d).nonzero().flatten().numpy() for d in range(10)]
    left, right, labels = [], [], []
    for number in range(100):
        tens, ones = divmod(number, 10)
        left.append(rng.choice(pools[tens], per_class, replace=False))
        right.append(rng.choice(pools[ones], per_class, replace=False))
        labels.append(np.full(per_class, number))
    order = rng.permutation(100 * per_class)     # classes interleaved, as a real dataset would be
    left, right, labels = (torch.from_numpy(np.concatenate(a)[order]) for a in (left, right, labels))
    return ImageData(torch.cat([split.images[left], split.images[right]], dim=3), labels)

def mnist_pairs100():
    "Two-digit numbers 00–99 from pairs of MNIST digits side by side (28×56)."
    rng = np.random.RandomState(SEED)
    return digit_pairs(mnist().train, 300, rng), digit_pairs(mnist().test, 50, rng), [f'{n:02d}' for n in range(100)]

def cifar_grey():
    "CIFAR-10 in grey."
    return mapped(cifar10().train, to_grey), mapped(cifar10().test, to_grey), cifar10().classes

def face_left(images:torch.Tensor) -> torch.Tensor:
    "`images` mirrored where needed so that the left half of each is at least as bright as its right half."
    grey = luma(images)
    flip = grey[:, :, 16:].mean((1, 2)) > grey[:, :, :16].mean((1, 2))
    out = images.clone()
    out[flip] = images[flip].flip(-1)
    return out

def cifar_facing():
    "CIFAR-10 (2,000 per class) with every image turned to face one way: class means lose their mirror symmetry."
    idx = first_per_class(cifar10().train.labels, [2000] * 10)
    return mapped(cifar10().train, face_left, idx), mapped(cifar10().test, face_left), cifar10().classes

def cat_dog(split:ImageData, per_class:int|None) -> ImageData:
    "Cats (label 0) and dogs (label 1) of a CIFAR-10 split at 64×64, the first `per_class` of each (None: all)."
    counts = [0] * 10
    counts[CIFAR_CAT] = counts[CIFAR_DOG] = per_class or len(split)
    idx = first_per_class(split.labels, counts)
    return ImageData(resize(split.images[idx], (64, 64)), (split.labels[idx] == CIFAR_DOG).long())

def cifar2_64():
    "Cat vs dog, upscaled to 64×64, 1,000 training images per class."
    return cat_dog(cifar10().train, 1000), cat_dog(cifar10().test, None), ['cat', 'dog']

def cifar10_16():
    "CIFAR-10 (2,000 per class) downscaled to 16×16."
    small = lambda x: resize(x, (16, 16))
    idx = first_per_class(cifar10().train.labels, [2000] * 10)
    return mapped(cifar10().train, small, idx), mapped(cifar10().test, small), cifar10().classes


STROKES = dict(plain_background=True, polarity='light_on_dark', hflip=False, nearest_builtin='mnist')
PHOTOS = dict(plain_background=False, polarity='mixed', hflip=True, nearest_builtin='cifar10')
DATASETS = {   # name → (builder, truth)
    'digits8': (digits8, dict(STROKES, budget='1m', covers='tiny 8×8 images, small dataset (1,437 training images)')),
    'mnist_crop20': (mnist_crop20, dict(STROKES, budget='2m', covers='odd size 20×20, strokes touching the border')),
    'mnist16_inv_lt': (mnist16_inv_lt, dict(STROKES, budget='2m', polarity='dark_on_light',
                                            covers='16×16, dark ink on a light ground, classes imbalanced 10:1')),
    'mnist_pairs100': (mnist_pairs100, dict(STROKES, budget='2m', covers='100 classes, non-square 28×56 images')),
    'cifar_grey': (cifar_grey, dict(PHOTOS, budget='2m', covers='photographs in grey (1 channel)')),
    'cifar_facing': (cifar_facing, dict(PHOTOS, budget='2m',
                                        covers='photographs all facing one way: asymmetric class means, flips still keep labels')),
    'cifar2_64': (cifar2_64, dict(PHOTOS, budget='1m', covers='2 classes, 64×64 upscaled, small dataset (2,000 images)')),
    'cifar10_16': (cifar10_16, dict(PHOTOS, budget='2m', covers='low-resolution 16×16 colour photographs')),
}


# ---------------------------------------------------------------- writing

def shape_facts(path:Path) -> dict:
    "Sizes of the dataset saved at `path`, as truth.json records them."
    with np.load(path, allow_pickle=False) as z:
        x, y, y_test, classes = z['x'], z['y'], z['y_test'], z['classes']
    return dict(num_train=len(y), num_test=len(y_test), image_size=list(x.shape[1:3]), channels=int(x.shape[3]),
                num_classes=len(classes))

def check_classes(train:ImageData, test:ImageData, classes:list[str], name:str):
    "Fail loudly when the labels do not index `classes` exactly (a builder bug would otherwise pass silently)."
    for what, split in (('train', train), ('test', test)):
        present = torch.unique(split.labels).tolist()
        if present != list(range(len(classes))):
            sys.exit(f'{name}: {what} labels {present[:5]}…{present[-5:]} do not cover the {len(classes)} classes {classes[:5]}…')

def write_dataset(name:str, out:Path, force:bool) -> dict:
    "Build dataset `name` into `out/name.npz` (unless it exists) and return its truth.json entry."
    build, truth = DATASETS[name]
    path = out/f'{name}.npz'
    kept = path.exists() and not force
    if not kept:
        train, test, classes = build()
        check_classes(train, test, classes, name)
        save_npz_dataset(path, train, test, classes)
    facts = shape_facts(path)
    h, w = facts['image_size']
    print(f'{name:15s} {"kept" if kept else "wrote"}: train {facts["num_train"]:,} × {h}×{w}×{facts["channels"]}, '
          f'test {facts["num_test"]:,}, {facts["num_classes"]} classes, {path.stat().st_size / 2**20:,.1f} MiB', flush=True)
    return dict(file=path.name, **{k: truth[k] for k in ('plain_background', 'polarity', 'hflip', 'budget',
                                                          'nearest_builtin', 'covers')}, **facts)

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('out', metavar='OUT_DIR', type=Path, help='folder for the .npz files and truth.json')
    parser.add_argument('--force', action='store_true', help='rebuild datasets whose .npz exists')
    parser.add_argument('--only', nargs='+', choices=list(DATASETS), metavar='NAME', help='build only these datasets')
    args = parser.parse_args(argv)
    data_root()                                   # fail before any work when the data cannot be found
    args.out.mkdir(parents=True, exist_ok=True)
    truth_path = args.out/'truth.json'
    truth = json.loads(truth_path.read_text()) if truth_path.exists() else {}
    for name in args.only or DATASETS: truth[name] = write_dataset(name, args.out, args.force)
    truth = {name: truth[name] for name in DATASETS if name in truth}   # benchmark order
    truth_path.write_text(json.dumps(truth, indent=1) + '\n')
    print(f'truth.json: {len(truth)} datasets in {args.out}')

if __name__ == '__main__': main()
