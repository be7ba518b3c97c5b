"""Datasets larger than memory (the disk cache, `data.cache`): a run from the cache is the run from memory, a
dataset three times a process's memory allowance trains under that cap, and a build killed halfway is never used."""
import json, os, re, signal, subprocess, sys, time, zipfile
from pathlib import Path

import numpy as np
import pytest

from adaptive_cnn.testing import TINY_MODEL, save_npz_dataset, shapes_data, shapes_dataset
from conftest import history, model_weights

# the mnist recipe pointed at an .npz: everything the data can tell left open
ON_NPZ = ['data.classes=null', 'data.num_classes=null', 'data.mean=null', 'data.std=null', 'data.invert_threshold=null',
          'data.val_size=null',
          'data.image_size=null', 'data.channels=null', *TINY_MODEL]


def sets(*overrides) -> list[str]:
    return [a for o in overrides for a in ('--set', o)]


def test_training_from_the_disk_cache_matches_training_in_memory(tmp_path, run_cli):
    raw = shapes_dataset(600, 200)
    save_npz_dataset(tmp_path/'shapes.npz', raw.train, raw.test, raw.classes)
    for cache in ('memory', 'disk'):
        code, _, err = run_cli('train', 'mnist', '--data', tmp_path/'shapes.npz', '--output-dir', tmp_path/cache,
                               '--no-progress', *sets(*ON_NPZ, f'data.cache={cache}', f'data.cache_dir={tmp_path}/cache',
                                                      'train.epochs=2', 'train.batch_size=64'))
        assert code == 0, err
    built = sorted(p for p in (tmp_path/'cache').iterdir() if p.is_dir())
    assert len(built) == 2 and all((p/'images.u8').is_file() for p in built)      # x and x_test, complete
    memory, disk = (model_weights(tmp_path/c/'checkpoints'/'last.pth') for c in ('memory', 'disk'))
    assert memory.keys() == disk.keys() and all((memory[k] == disk[k]).all() for k in memory)
    assert history(tmp_path/'memory') == history(tmp_path/'disk')
    results = [json.loads((tmp_path/c/'results.json').read_text()) for c in ('memory', 'disk')]
    assert results[0]['test_acc'] == results[1]['test_acc']


# ---- under a memory cap ---------------------------------------------------------------------------------------------

# As in test_out_of_memory: the child caps its address space a margin above what its imports take, so that the cap
# does not depend on the size of the libraries (those the end of a run loads too: scikit-learn's metrics, matplotlib);
# glibc is kept from holding freed memory.
CHILD = r'''
import re, resource, sys
from pathlib import Path
import matplotlib.pyplot, sklearn.metrics
from adaptive_cnn.cli import main
vm = int(re.search(r'VmSize:\s+(\d+)', Path('/proc/self/status').read_text()).group(1)) * 1024
cap = vm + int(sys.argv[1]) * 2**20
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
raise SystemExit(main(sys.argv[2:]))
'''
MARGIN_MB = 250                 # above the imports: a tiny network's run, not a dataset of 750 MB
SIDE = 64                       # 64×64 RGB: 12,288 bytes an image


def write_npz(path:Path, n:int):
    "An uncompressed .npz of `n` 64×64 RGB bar images, written a chunk at a time (the test never holds it all)."
    chunk = shapes_data(4096, num_classes=4, channels=3, size=SIDE)
    x, y = chunk.images.permute(0, 2, 3, 1).numpy(), chunk.labels.numpy()
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open('x.npy', 'w', force_zip64=True) as f:
            np.lib.format.write_array_header_2_0(f, {'descr': '|u1', 'fortran_order': False,
                                                     'shape': (n, SIDE, SIDE, 3)})
            for i in range(0, n, len(x)): f.write(x[:n - i].tobytes())
        with zf.open('y.npy', 'w') as f: np.save(f, np.resize(y, n))


def capped_train(out:Path, data:Path, cache_dir:Path, *overrides) -> subprocess.CompletedProcess:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='1048576', MALLOC_ARENA_MAX='1', OMP_NUM_THREADS='1',
               CUDA_VISIBLE_DEVICES='', PYTHONFAULTHANDLER='1')
    args = ['train', 'mnist', '--data', data, '--output-dir', out, '--no-progress',
            *sets(*ON_NPZ, f'data.cache_dir={cache_dir}', 'data.val_size=1000', 'data.test_fraction=0.01',
                  'train.epochs=1', 'train.steps_per_epoch=4', 'train.batch_size=64', 'train.swa_start=null',
                  *overrides)]
    return subprocess.run([sys.executable, '-c', CHILD, str(MARGIN_MB), *map(str, args)], capture_output=True,
                          text=True, timeout=900, env=env)


@pytest.mark.skipif(not sys.platform.startswith('linux'), reason='RLIMIT_AS and /proc/self/status are Linux')
def test_a_dataset_three_times_the_memory_allowance_trains_from_the_disk_cache(tmp_path):
    n = 3 * MARGIN_MB * 2**20 // (SIDE * SIDE * 3) + 1
    write_npz(tmp_path/'large.npz', n)
    assert (tmp_path/'large.npz').stat().st_size > 3 * MARGIN_MB * 2**20
    # in memory, the same cap refuses it: the cap binds
    p = capped_train(tmp_path/'in_memory', tmp_path/'large.npz', tmp_path/'cache', 'data.cache=memory')
    assert p.returncode == 2 and 'more than half the' in p.stderr and 'of memory once decoded' in p.stderr, p.stderr
    # by default it goes to the disk cache, and trains
    p = capped_train(tmp_path/'run', tmp_path/'large.npz', tmp_path/'cache')
    assert p.returncode == 0, p.stderr
    results = json.loads((tmp_path/'run'/'results.json').read_text())
    assert results['epochs'] == 1 and 0 <= results['test_acc'] <= 1
    (built,) = [p for p in (tmp_path/'cache').iterdir() if p.is_dir()]
    assert (built/'images.u8').stat().st_size == n * SIDE * SIDE * 3


# ---- a build killed halfway -----------------------------------------------------------------------------------------

BUILD = r'''
import sys
from adaptive_cnn.data import read_npz
raw = read_npz(sys.argv[1], cache='disk', cache_dir=sys.argv[2])
'''


def test_a_cache_build_killed_halfway_is_rebuilt_whole(tmp_path):
    n = 60_000
    write_npz(tmp_path/'data.npz', n)
    builder = subprocess.Popen([sys.executable, '-c', BUILD, str(tmp_path/'data.npz'), str(tmp_path/'cache')],
                               env=dict(os.environ, OMP_NUM_THREADS='1'))
    deadline = time.monotonic() + 120
    partial = []
    while time.monotonic() < deadline and builder.poll() is None:
        partial = [p for p in (tmp_path/'cache').glob('*.partial/images.u8') if p.stat().st_size > 0]
        if partial: break
        time.sleep(0.01)
    builder.send_signal(signal.SIGKILL)
    builder.wait()
    assert partial, 'the build ended before it could be killed halfway'
    assert partial[0].stat().st_size < n * SIDE * SIDE * 3
    assert not [p for p in (tmp_path/'cache').iterdir() if p.is_dir() and not p.name.endswith('.partial')]
    from adaptive_cnn.data import read_npz
    raw = read_npz(tmp_path/'data.npz', cache='disk', cache_dir=tmp_path/'cache')
    assert raw.train.on_disk and len(raw.train) == n
    assert not list((tmp_path/'cache').glob('*.partial'))
    expected = shapes_data(4096, num_classes=4, channels=3, size=SIDE).images
    rows = np.array([0, 4095, 4096, n - 1])
    assert (raw.train.images[rows].load() == expected[rows % 4096]).all()


def test_a_dataset_on_disk_is_profiled_as_in_memory(tmp_path, run_cli):
    "`profile` (the adaptation rules' measurements: statistics, background, the flip probe) reads the cache a chunk at a time."
    raw = shapes_dataset(600, 200, channels=3)
    save_npz_dataset(tmp_path/'shapes.npz', raw.train, raw.test, raw.classes)
    profiles = []
    for cache in ('memory', 'disk'):
        code, out, err = run_cli('profile', tmp_path/'shapes.npz', '--json',
                                 *sets(f'data.cache={cache}', f'data.cache_dir={tmp_path}/cache'))
        assert code == 0, err
        profiles.append(json.loads(out))
    assert any((tmp_path/'cache').iterdir())
    for profile in profiles:      # where this run kept the images is not something the rules measured
        for key in ('cache', 'cache_dir'): profile['suggested_config']['data'].pop(key)
    memory, disk = profiles
    assert memory == disk and memory['flip_retention'] is not None


def test_two_processes_wanting_one_cache_build_it_once(tmp_path):
    "As the processes of one run (or two runs) do: one builds while the other waits on the lock, then both read it."
    write_npz(tmp_path/'data.npz', 20_000)
    args = [sys.executable, '-c', BUILD + 'print(raw.train.images.path)',
            str(tmp_path/'data.npz'), str(tmp_path/'cache')]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=dict(os.environ, OMP_NUM_THREADS='1'))
             for _ in range(2)]
    paths = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert paths[0] == paths[1]
    assert [p.name for p in (tmp_path/'cache').iterdir() if p.is_dir()] == [Path(paths[0]).parent.name]
