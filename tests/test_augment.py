"""Tests of `adaptive_cnn.augment`: each batched operation against torchvision image by image, the AutoAugment and
CutMix distributions, and the `BatchAugment` contract the trainer relies on."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torchvision.transforms.v2 import AutoAugment, AutoAugmentPolicy, InterpolationMode
from torchvision.transforms.v2 import functional as TF

from adaptive_cnn.augment import (AUTOAUGMENT_OPS, AUTOAUGMENT_POLICIES, BatchAugment, apply_autoaugment,
                                  autoaugment_magnitudes, autoaugment_op, autoaugment_stage, batch_affine,
                                  batch_crop, batch_cutout, batch_hflip, box_masks, centred_boxes, cutmix,
                                  sample_autoaugment, sample_beta, sample_cutmix)
from adaptive_cnn.config import AugmentConfig, load_config

CIFAR_FILL = (125, 123, 114)


def smooth_images(n, channels=3, size=32, seed=0):
    "uint8 images with structure and varied contrast (pure noise would make AutoContrast and Equalize trivial)."
    g = torch.Generator().manual_seed(seed)
    field = F.interpolate(torch.rand(n, channels, 4, 4, generator=g), size=size, mode='bicubic', align_corners=False)
    low, span = torch.rand(2, n, 1, 1, 1, generator=g) * torch.tensor([120., 255.]).view(2, 1, 1, 1, 1)
    return (low + field.clamp(0, 1) * span.clamp(max=255 - low)).round().to(torch.uint8)


@pytest.fixture(scope='module')
def images(): return smooth_images(24)


def gen(seed): return torch.Generator().manual_seed(seed)


# --- the operations against torchvision, with fixed parameters ---------------------------------------------------

@pytest.mark.parametrize('interpolation,fill,tv_fill', [('nearest', 7, [7.0]), ('nearest', (10, 20, 30), [10.0, 20.0, 30.0]),
                                                        ('bilinear', 0, None)])
def test_affine_matches_torchvision(images, interpolation, fill, tv_fill):
    angles = torch.linspace(-30, 30, len(images))
    shifts = torch.randint(-4, 5, (len(images), 2), generator=gen(1)).double()
    # nearest: exact, fill included; bilinear: exact against zero padding (torchvision's fill=None)
    mode = InterpolationMode.NEAREST if interpolation == 'nearest' else InterpolationMode.BILINEAR
    expected = torch.stack([TF.affine(x, angle=float(a), translate=t.tolist(), scale=1.0, shear=[0.0, 0.0],
                                      interpolation=mode, fill=tv_fill) for x, a, t in zip(images, angles, shifts)])
    out = batch_affine(images, angles, shifts, fill, interpolation)
    assert out.dtype == torch.uint8
    assert torch.equal(out, expected)


def test_affine_conventions(images):
    # rotation about the image centre: 90° on a square image is rot90, clockwise for F.affine's sign
    assert torch.equal(batch_affine(images[:3], torch.full((3,), 90.), torch.zeros(3, 2), interpolation='nearest'),
                       images[:3].rot90(-1, (2, 3)))
    # F.rotate's angle is the negative of ours
    assert torch.equal(batch_affine(images[:1], torch.tensor([-23.]), torch.zeros(1, 2), interpolation='nearest')[0],
                       TF.rotate(images[0], 23.0, interpolation=InterpolationMode.NEAREST))


def test_bilinear_fill_takes_the_outside_weight_once():
    # half a pixel to the right: the first column is half image (200), half fill (100)
    out = batch_affine(torch.full((1, 1, 8, 8), 200, dtype=torch.uint8), torch.zeros(1), torch.tensor([[0.5, 0.]]), fill=100)
    assert torch.equal(out[0, 0, :, 0], torch.full((8,), 150, dtype=torch.uint8))
    assert torch.equal(out[0, 0, :, 1:], torch.full((8, 7), 200, dtype=torch.uint8))


def test_crop_matches_torchvision(images):
    offsets = torch.randint(0, 9, (len(images), 2), generator=gen(2))
    expected = torch.stack([TF.crop(TF.pad(x, [4], fill=list(CIFAR_FILL)), int(t), int(l), 32, 32)
                            for x, (t, l) in zip(images, offsets)])
    assert torch.equal(batch_crop(images, 4, offsets, CIFAR_FILL), expected)


def test_crop_rejects_offsets_outside_the_padding(images):
    with pytest.raises(ValueError, match=r'crop offsets must be in \[0, 8\]'):
        batch_crop(images, 4, torch.full((len(images), 2), 9))


def test_hflip_matches_torchvision(images):
    mask = torch.arange(len(images)) % 3 == 0
    expected = torch.stack([TF.horizontal_flip(x) if m else x for x, m in zip(images, mask)])
    assert torch.equal(batch_hflip(images, mask), expected)


def test_cutout_matches_torchvision(images):
    centers = torch.randint(0, 32, (len(images), 2), generator=gen(3))
    boxes = centred_boxes(centers, torch.tensor([16, 16]), 32, 32)
    value = torch.tensor(CIFAR_FILL, dtype=torch.uint8).view(3, 1, 1)
    expected = torch.stack([TF.erase(x, int(y1), int(x1), int(y2 - y1), int(x2 - x1), value)
                            for x, (y1, x1, y2, x2) in zip(images, boxes)])
    assert torch.equal(batch_cutout(images, centers, 16, CIFAR_FILL), expected)
    # the square is clipped at the border, not moved inside
    assert centred_boxes(torch.tensor([[0, 31]]), torch.tensor([16, 16]), 32, 32).tolist() == [[0, 23, 8, 32]]


# --- AutoAugment -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('name,enum', [('cifar10', AutoAugmentPolicy.CIFAR10), ('imagenet', AutoAugmentPolicy.IMAGENET),
                                       ('svhn', AutoAugmentPolicy.SVHN)])
def test_policy_tables_are_torchvisions(name, enum):
    assert AUTOAUGMENT_POLICIES[name] == AutoAugment(enum)._policies


def test_magnitudes_are_torchvisions():
    ours = autoaugment_magnitudes(32, 32)
    assert set(ours) == set(AutoAugment._AUGMENTATION_SPACE) == set(AUTOAUGMENT_OPS)
    for name, (fn, signed) in AutoAugment._AUGMENTATION_SPACE.items():
        expected = fn(10, 32, 32)
        assert ours[name][1] == signed
        assert (ours[name][0] is None) if expected is None else torch.equal(ours[name][0], expected)


_tv_autoaugment = AutoAugment(AutoAugmentPolicy.CIFAR10)

def tv_op(image, op, magnitude):
    "torchvision AutoAugment's own per-image operation code (private: used here only as the reference)."
    return _tv_autoaugment._apply_image_or_video_transform(image, op, magnitude, InterpolationMode.NEAREST,
                                                           _tv_autoaugment._fill)


@pytest.mark.parametrize('channels', [3, 1])
@pytest.mark.parametrize('op', AUTOAUGMENT_OPS)
def test_autoaugment_op_matches_torchvision(op, channels):
    images = smooth_images(20, channels)
    bins, signed = autoaugment_magnitudes(32, 32)[op]
    magnitudes = torch.zeros(20, dtype=torch.float64) if bins is None else bins[torch.arange(20) % 10].double()
    if signed: magnitudes = torch.where(torch.arange(20) % 2 == 1, -magnitudes, magnitudes)
    expected = torch.stack([tv_op(x, op, float(m)) for x, m in zip(images, magnitudes)])
    assert torch.equal(autoaugment_op(images, op, magnitudes), expected)


def test_apply_autoaugment_matches_torchvision_replay():
    images = smooth_images(200, seed=4)
    params = sample_autoaugment(200, gen(0))
    stages = [autoaugment_stage(params, s, 32, 32) for s in range(2)]
    def replay(i):
        x = images[i]
        for op, magnitude, applied in stages:
            if applied[i]: x = tv_op(x, AUTOAUGMENT_OPS[op[i]], float(magnitude[i]))
        return x
    out = apply_autoaugment(images, params)
    assert torch.equal(out, torch.stack([replay(i) for i in range(200)]))
    assert (out != images).flatten(1).any(1).float().mean() > 0.5      # most images changed


def _application_pvalue(draws, probs):
    "Chi-square p-value of the (sub-policy, stage, applied or not) counts against the probabilities `probs` (25×2)."
    totals = torch.bincount(draws['policy'], minlength=len(probs)).double()
    observed, expected = [], []
    for s in range(2):
        hits = torch.bincount(draws['policy'][draws['apply'][:, s]], minlength=len(probs)).double()
        p = torch.tensor([row[s] for row in probs], dtype=torch.float64)
        certain = (p == 0) | (p == 1)          # never or always: nothing random to test, but it must hold exactly
        assert torch.equal(hits[certain], totals[certain] * p[certain])
        observed += [hits[~certain], (totals - hits)[~certain]]
        expected += [(totals * p)[~certain], (totals * (1 - p))[~certain]]
    return stats.chisquare(torch.cat(observed).numpy(), torch.cat(expected).numpy()).pvalue


def test_autoaugment_sampling_follows_the_policy():
    n = 100_000
    draws = sample_autoaugment(n, gen(1))
    # sub-policies uniform over the 25
    assert stats.chisquare(torch.bincount(draws['policy'], minlength=25).numpy()).pvalue > 1e-3
    # each operation applied at its probability, and the test has the power to see a sampler off by 3 points
    probs = [[p for _, p, _ in sub] for sub in AUTOAUGMENT_POLICIES['cifar10']]
    assert _application_pvalue(draws, probs) > 1e-3
    assert _application_pvalue(draws, [[p + 0.03 if 0 < p < 1 else p for p in sub] for sub in probs]) < 1e-6
    # signs: negative half of the time
    signs = draws['negate'][draws['apply']].long()
    assert stats.chisquare(torch.bincount(signs, minlength=2).numpy()).pvalue > 1e-3


def test_signed_magnitudes_have_both_signs_and_unsigned_never_negative():
    params = sample_autoaugment(5000, gen(2))
    ops, magnitudes = zip(*[autoaugment_stage(params, s, 32, 32)[:2] for s in range(2)])
    op, magnitude = torch.cat(ops), torch.cat(magnitudes)
    for name in ('Rotate', 'TranslateX', 'ShearY', 'Brightness', 'Color', 'Contrast', 'Sharpness'):
        chosen = magnitude[(op == AUTOAUGMENT_OPS.index(name)) & (magnitude != 0)]
        assert (chosen < 0).any() and (chosen > 0).any(), name
    for name in ('Posterize', 'Solarize'):
        assert (magnitude[op == AUTOAUGMENT_OPS.index(name)] >= 0).all(), name


# --- CutMix ------------------------------------------------------------------------------------------------------

def test_cutmix_pastes_the_partner_and_weights_by_area(images):
    labels = torch.arange(len(images)) % 10
    draws = sample_cutmix(len(images), 32, 32, 1.0, gen(5))
    mixed, targets = cutmix(images, F.one_hot(labels, 10).float(), **draws)
    torch.testing.assert_close(targets.sum(1), torch.ones(len(images)))
    inside = box_masks(draws['boxes'], 32, 32).expand_as(images)
    checked = 0
    for i, j in enumerate(draws['perm'].tolist()):
        assert torch.equal(mixed[i][inside[i]], images[j][inside[i]])
        assert torch.equal(mixed[i][~inside[i]], images[i][~inside[i]])
        pasted = inside[i, 0].sum() / (32 * 32)
        if labels[i] != labels[j]:
            assert targets[i, labels[j]] == pasted and targets[i, labels[i]] == 1 - pasted   # exactly the pasted area
            checked += 1
    assert checked > len(images) // 2


def test_beta_sampler_matches_scipy():
    lam = sample_beta(20_000, 0.4, gen(6)).numpy()
    assert stats.kstest(lam, stats.beta(0.4, 0.4).cdf).pvalue > 1e-3
    assert stats.kstest(lam, stats.beta(0.5, 0.5).cdf).pvalue < 1e-3


# --- BatchAugment, as the trainer uses it -------------------------------------------------------------------------

@pytest.fixture(scope='module')
def cifar_augment():
    aug = dataclasses.replace(load_config('cifar10').augment, cutmix_prob=1.0)
    return BatchAugment(aug, 10, fill=CIFAR_FILL)


def test_seeded_generator_is_deterministic(cifar_augment):
    images, labels = smooth_images(64, seed=8), torch.arange(64) % 10
    first = cifar_augment(images, labels, gen(0))
    second = cifar_augment(images, labels, gen(0))
    other = cifar_augment(images, labels, gen(1))
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert not torch.equal(first[0], other[0])


def test_output_dtype_shape_device(cifar_augment):
    images, labels = smooth_images(16), torch.arange(16) % 10
    out, targets = cifar_augment(images, labels, gen(0))
    assert (out.dtype, out.shape, out.device) == (torch.uint8, images.shape, images.device)
    assert (targets.dtype, targets.shape, targets.device) == (torch.float32, (16, 10), images.device)
    torch.testing.assert_close(targets.sum(1), torch.ones(16))
    assert (targets.max(1).values < 1).any()                            # CutMix forced on: some rows mixed


def test_targets_are_one_hot_without_cutmix():
    aug = BatchAugment(load_config('mnist').augment, 10, fill=(33,))
    labels = torch.arange(32) % 10
    _, targets = aug(smooth_images(32, 1, 28), labels, gen(0))
    assert torch.equal(targets, F.one_hot(labels, 10).float())


def test_cutmix_probability_is_per_batch():
    aug = BatchAugment(AugmentConfig(cutmix_alpha=1.0, cutmix_prob=0.5), 10)
    g = gen(3)
    fired = sum('cutmix' in aug.sample(8, 32, 32, g) for _ in range(2000))
    assert stats.binomtest(fired, 2000, 0.5).pvalue > 1e-3


@pytest.mark.parametrize('off', [AugmentConfig(), AugmentConfig(rotation=0, translate=0.0, crop_padding=0, hflip=False,
                                                                autoaugment=None, cutout_size=0, cutmix_alpha=0.0, cutmix_prob=1.0)])
def test_operations_off_leave_images_unchanged(off):
    images, labels = smooth_images(16), torch.arange(16) % 10
    aug = BatchAugment(off, 10)
    assert aug.sample(16, 32, 32, gen(0)) == {}
    out, targets = aug(images, labels, gen(0))
    assert torch.equal(out, images) and out.data_ptr() != images.data_ptr()   # equal, but a copy
    assert torch.equal(targets, F.one_hot(labels, 10).float())


@pytest.mark.parametrize('field,value,key', [('rotation', 10.0, 'angles'), ('crop_padding', 4, 'offsets'),
                                             ('hflip', True, 'flip'), ('autoaugment', 'cifar10', 'autoaugment'),
                                             ('cutout_size', 8, 'cutout')])
def test_each_operation_switches_on_alone(field, value, key):
    aug = BatchAugment(dataclasses.replace(AugmentConfig(), **{field: value}), 10)
    params = aug.sample(64, 32, 32, gen(0))
    assert list(params) == (['angles', 'translations'] if key == 'angles' else [key])
    images = smooth_images(64)
    assert not torch.equal(aug.apply(images, torch.zeros(64, dtype=torch.long), params)[0], images)


def test_each_mnist_sample_gets_its_own_rotation():
    aug = BatchAugment(load_config('mnist').augment, 10)
    params = aug.sample(256, 28, 28, gen(0))
    angles = params['angles']
    assert angles.unique().numel() == 256                                # every image its own angle
    assert angles.abs().max() <= 10 and angles.min() < -8 and angles.max() > 8
    assert params['translations'].abs().max() <= round(0.1 * 28)
    assert params['translations'].unique(dim=0).shape[0] > 20            # and its own shift
    # the same digit repeated comes out differently in every slot
    digit = smooth_images(1, 1, 28, seed=9).expand(8, -1, -1, -1).contiguous()
    out, _ = aug(digit, torch.zeros(8, dtype=torch.long), gen(1))
    assert len({tuple(x.flatten().tolist()) for x in out}) == 8


def test_bad_inputs_fail_clearly(cifar_augment):
    images, labels = smooth_images(4), torch.arange(4)
    with pytest.raises(TypeError, match='uint8'): cifar_augment(images.float(), labels)
    with pytest.raises(ValueError, match='expected 4 labels'): cifar_augment(images, labels[:3])
    with pytest.raises(ValueError, match='unknown AutoAugment policy'):
        BatchAugment(AugmentConfig(autoaugment='mnist'), 10)
    with pytest.raises(ValueError, match='fill values must be in'): BatchAugment(AugmentConfig(), 10, fill=(300,))
