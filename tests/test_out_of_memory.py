"""Running out of memory for real: a training process whose address space is capped a little above what it needs
after its imports. The batch size is too large, the run stops with one line naming the largest batch size that fits
(found by halving), and that batch size then trains under the same cap."""
import json, os, re, subprocess, sys

import pytest

# The child caps its own address space after importing torch, so the cap does not depend on how large the libraries
# are on this machine. glibc would otherwise keep freed blocks mapped (its mmap threshold grows as blocks are freed),
# and the halving would see memory that a GPU's caching allocator, after empty_cache(), would have given back.
CHILD = r'''
import re, resource, sys
from pathlib import Path
from adaptive_cnn.cli import main
vm = int(re.search(r'VmSize:\s+(\d+)', Path('/proc/self/status').read_text()).group(1)) * 1024
cap = vm + int(sys.argv[1]) * 2**20
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
raise SystemExit(main(sys.argv[2:]))
'''
MARGIN_MB = 700          # room above the imports: enough for MNIST and a batch of about a thousand, not four thousand


def _train(out, batch_size, *extra):
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='1048576', MALLOC_ARENA_MAX='1', OMP_NUM_THREADS='2', CUDA_VISIBLE_DEVICES='')
    args = ['train', 'mnist', '--output-dir', out, '--no-progress', '--set', f'train.batch_size={batch_size}',
            '--set', f'data.train_subset={batch_size + 100}', '--set', 'data.val_size=1000', '--set', 'train.epochs=1', *extra]
    return subprocess.run([sys.executable, '-c', CHILD, str(MARGIN_MB), *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=env)


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='RLIMIT_AS and /proc/self/status are Linux')
def test_a_batch_size_too_large_names_the_one_that_fits(tmp_path, data_root):
    run = tmp_path/'run'
    p = _train(run, 4096)
    assert p.returncode == 1, p.stderr
    assert 'Traceback' not in p.stderr and len(p.stderr.splitlines()) == 1, p.stderr
    line = p.stderr.strip()
    assert line.startswith('adaptive-cnn: error: out of memory on the CPU (cpu) with train.batch_size 4096: '), line
    found = re.search(r'the largest batch size that fits is (\d+) \(found by halving\); start again with '
                      r'--overwrite --set train.batch_size=(\d+) \(and train.lr × ([\d.]+) to keep the recipe\)', line)
    assert found, line
    fits = int(found[1])
    assert fits == int(found[2]) and fits in (2048, 1024, 512, 256) and float(found[3]) == fits / 4096, line
    assert not (run/'checkpoints'/'last.pth').exists()            # nothing was trained, nothing claims it was
    # the advice works: the batch size it names trains under the same cap
    p = _train(run, fits, '--overwrite')
    assert p.returncode == 0, p.stderr
    assert json.loads((run/'results.json').read_text())['epochs'] == 1
