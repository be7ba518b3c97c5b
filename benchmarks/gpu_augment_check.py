"""On a CUDA machine: the batched augmentation gives the same result on the GPU as on the CPU for the same draws.

    python benchmarks/gpu_augment_check.py      # exits 1 on a mismatch, 2 without a GPU

Kept out of the test suite, which runs on CPU-only machines; part of the GPU checks of the performance work.
"""
import sys
import torch
from adaptive_cnn.config import load_config
from adaptive_cnn.augment import BatchAugment

if not torch.cuda.is_available(): sys.exit('no CUDA device: nothing to check')
augment = BatchAugment(load_config('cifar10').augment, 10, fill=(125, 123, 114))
g = lambda: torch.Generator().manual_seed(0)
images = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8)
images = torch.nn.functional.avg_pool2d(images.float(), 3, 1, 1).round().to(torch.uint8)   # smooth, like photos
labels = torch.arange(256) % 10
cpu_out, cpu_targets = augment(images, labels, g())
gpu_out, gpu_targets = augment(images.cuda(), labels.cuda(), g())
torch.testing.assert_close(gpu_targets.cpu(), cpu_targets)
differing = (gpu_out.cpu() != cpu_out).float().mean().item()
print(f'pixels that differ between GPU and CPU: {differing:.2e} (float rounding allows < 1e-3)')
sys.exit(0 if gpu_out.dtype == torch.uint8 and differing < 1e-3 else 1)
