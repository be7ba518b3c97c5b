"""The compiled training step (`train.compile`) against the eager one, on real CIFAR-10 images: the same draws give the
same losses and weights within bf16's rounding, the learning rate is a tensor the schedule fills, and an epoch keeps
one batch shape."""
import json, os

import pytest
import torch
import torch._inductor.config

from adaptive_cnn.config import load_config
from adaptive_cnn.data import load_data
from adaptive_cnn.training import Trainer, current_lr

# the CIFAR-10 recipe (AutoAugment, Cutout, CutMix, crops, flips, SGD-Nesterov, clipping, warmup) on a network small
# enough to compile in about a minute on two cores
SMALL = ['data.train_subset=256', 'data.val_size=64', 'model.stem_channels=16', 'model.widths=[16,32]', 'model.depths=[1,1]',
         'model.strides=[1,2]', 'model.classifier_hidden=32', 'train.batch_size=32', 'train.epochs=2']
STEPS = 4


def trainer(tmp_path, compile:bool, data=None, *extra) -> Trainer:
    cfg = load_config('cifar10', SMALL + [f'train.compile={str(compile).lower()}', f'output.dir={json.dumps(str(tmp_path))}', *extra])
    return Trainer(cfg, device='cpu', overwrite=True, progress=False, echo=False, data=data)


def test_compiled_step_matches_the_eager_step(tmp_path, data_root):
    eager = trainer(tmp_path/'eager', compile=False)
    compiled = trainer(tmp_path/'compiled', compile=True, data=eager.data)
    assert not eager.augment.fixed_shapes and compiled.augment.fixed_shapes
    assert isinstance(compiled.optimizer.param_groups[0]['lr'], torch.Tensor)
    start = {k: v.clone() for k, v in eager.model.state_dict().items()}
    for k, v in compiled.model.state_dict().items(): assert torch.equal(v, start[k]), k   # same seed, same network
    images, labels = eager.data.train.images[:32], eager.data.train.labels[:32]
    losses, mixed = [], []
    # inductor's own random numbers (dropout) differ from eager's; fallback_random makes them the same
    with torch._inductor.config.patch(fallback_random=True):
        for step in range(STEPS):
            # the fixed-shape draws (AutoAugment's looked up in its tables, CutMix boxes in every batch, shrunk to nothing
            # when the coin says no) serve both
            params = compiled.augment.sample(32, 32, 32, torch.Generator().manual_seed(step))
            mixed.append(bool(params['cutmix']['boxes'].any()))
            step_losses = []
            for t in (eager, compiled):
                torch.manual_seed(step); t.model.train()
                t.optimizer.zero_grad(set_to_none=True)
                loss, correct = t.step_body(images, labels, params)
                t.scheduler.step()
                step_losses.append(loss.item())
            losses.append(step_losses)
    assert any(mixed) and not all(mixed), mixed          # steps with and without CutMix
    # the first step starts from the same weights: only the rounding of the fused kernels differs; after that bf16's
    # rounding (a relative 2^-8) compounds through the updates
    assert abs(losses[0][0] - losses[0][1]) < 1e-4 * losses[0][0], losses
    for e, c in losses: assert abs(e - c) < 1e-2 * e, losses
    assert current_lr(compiled.optimizer) == pytest.approx(current_lr(eager.optimizer), rel=1e-6)
    assert current_lr(eager.optimizer) > 0
    moved = 0
    for k, e in eager.model.state_dict().items():
        c = compiled.model.state_dict()[k]
        if not e.is_floating_point(): assert torch.equal(e, c), k; continue
        assert torch.allclose(e, c, rtol=2e-2, atol=2e-2), (k, (e - c).abs().max())
        moved += not torch.equal(e, start[k])
    assert moved > len(start) // 2, moved                # the steps did change the network


def test_compiled_epochs_leave_out_the_last_partial_batch(tmp_path, data_root):
    sizes = [trainer(tmp_path/str(c), c, None, 'data.train_subset=250').images_per_epoch() for c in (False, True)]
    assert sizes == [250, 224]     # 7 full batches of 32; eager keeps the 26 left over as an 8th
