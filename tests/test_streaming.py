"""`adaptive-cnn test` on a folder of 10,000 images, run as the user runs it (`python -m adaptive_cnn` in a process of
its own): rows arrive while the run goes on, bad files are reported and passed, memory does not grow with the number
of files, a progress bar shows on a terminal's stderr and never in the CSV, and `| head` stops it quietly.

The images are tiny synthetic 28×28 PNGs and the network the tiny one of `adaptive_cnn.testing` (about 6,000
parameters), written once for the module: the point is the stream, not the accuracy."""
import fcntl, os, pty, struct, subprocess, sys, termios, threading
from pathlib import Path

import pytest
from PIL import Image


def corrupt_files(n:int) -> dict[int, bytes]:
    "The bad files of a folder of `n` images, index → bytes: a text file, a PNG cut after its header, an empty file."
    return {17: b'not an image\n', n // 2: b'\x89PNG\r\n\x1a\n' + b'\x00' * 40, n - 1: b''}


# Peak RSS with 10,000 files may exceed the peak with 1,000 by this much. What legitimately grows with the number of
# files is the sorted list of a folder's names and the names of the bad files: measured +1.7 MB from 1,000 to 10,000
# files, ±0.1 MB from run to run. Keeping every record in memory, as `test` did before it streamed, adds 9.5 MB;
# keeping every decoded input adds at least its 7.5 MB of pixels. (Both folders hold the same kinds of bad file: the
# first one Pillow cannot identify makes it import all its format plugins, a few MB once.)
RSS_MARGIN_MB = 4
# runs `python -m adaptive_cnn ARGS...` in this process and writes its peak RSS (VmHWM, KiB) to RSS_FILE on the way
# out, before the interpreter's teardown (PyTorch's adds ~100 MB whatever the command did: it would hide any growth).
# Not getrusage's ru_maxrss: a child forked from this test process (1 GB) inherits that peak through exec.
MEASURED = '''import re, runpy, sys
rss_file = sys.argv.pop(1)
try: runpy.run_module('adaptive_cnn', run_name='__main__', alter_sys=True)
finally:
    peak = re.search(r'VmHWM:\\s*(\\d+) kB', open('/proc/self/status').read()).group(1)
    with open(rss_file, 'w') as f: f.write(peak)
'''
# A fixed mmap threshold: glibc's sliding one keeps some freed blocks of the network's activations (6 MB a chunk) on
# the heap or not, depending on timing, which made the peak vary by ±5 MB from run to run; this way RSS follows the
# memory in use.
ENV = dict(os.environ, OMP_NUM_THREADS='1', MALLOC_MMAP_THRESHOLD_='131072')


@pytest.fixture(scope='module')
def folders(tmp_path_factory):
    "(checkpoint, folder of 1,000 PNGs, folder of 10,000 PNGs), the files of `corrupt_files` in each bad."
    from adaptive_cnn.testing import TINY_MODEL, shapes_data, tiny_run
    root = tmp_path_factory.mktemp('streaming')
    ckpt = tiny_run(root/'run', 'mnist', TINY_MODEL, num_classes=10, num_train=300, num_test=100, steps=10)
    images = shapes_data(10_000, 10).images[:, 0].numpy()
    for n in (1_000, 10_000):
        (root/f'{n}').mkdir()
        for i in range(n): Image.fromarray(images[i]).save(root/f'{n}'/f'{i:05d}.png')
        for i, data in corrupt_files(n).items(): (root/f'{n}'/f'{i:05d}.png').write_bytes(data)
    return ckpt, root/'1000', root/'10000'


def measured_run(ckpt:Path, folder:Path, tmp:Path) -> dict:
    """`test ckpt folder` in a process of its own, its stdout read line by line: exit code, header, rows, stderr, peak
    RSS in MB, and what had happened when the first row came: was the run still going, what was on stderr."""
    rss_file, err_file = tmp/f'rss_{folder.name}', tmp/f'err_{folder.name}'
    with open(err_file, 'w') as err:
        proc = subprocess.Popen([sys.executable, '-c', MEASURED, rss_file, 'test', ckpt, folder], env=ENV,
                                stdout=subprocess.PIPE, stderr=err, text=True)
    header, first = proc.stdout.readline(), proc.stdout.readline()
    # while this reader holds back, the run can get at most a pipe's worth of rows ahead (64 KB, some 600 rows)
    at_first_row = dict(running=proc.poll() is None, err=err_file.read_text())
    rows = [first] + proc.stdout.readlines()
    proc.stdout.close()
    rc = proc.wait(timeout=120)
    return dict(rc=rc, header=header, rows=rows, at_first_row=at_first_row, err=err_file.read_text(),
                rss_mb=int(rss_file.read_text()) / 1024)


@pytest.fixture(scope='module')
def ten_thousand(folders, tmp_path_factory):
    ckpt, _, big = folders
    return measured_run(ckpt, big, tmp_path_factory.mktemp('ten_thousand'))


def test_ten_thousand_files_give_a_row_each_in_order_and_pass_the_bad_ones(folders, ten_thousand):
    _, _, big = folders
    run, bad = ten_thousand, corrupt_files(10_000)
    assert run['rc'] == 2, run['err']
    assert run['header'].startswith('file,prediction,probability,class1,p1')
    good = [str(big/f'{i:05d}.png') for i in range(10_000) if i not in bad]
    assert [r.split(',', 1)[0] for r in run['rows']] == good
    errors = run['err'].splitlines()
    assert 'Traceback' not in run['err'] and len(errors) == len(bad) + 1, run['err']
    for line, i in zip(errors, sorted(bad)): assert line.startswith(f'adaptive-cnn: error: {big}/{i:05d}.png: ')
    assert errors[-1].startswith(f'adaptive-cnn: {len(bad)} of 10000 files could not be classified: ')


def test_rows_arrive_while_the_run_goes_on(folders, ten_thousand):
    "The first row comes before the run has reached the last file (a bad one: its error line is not out yet)."
    _, _, big = folders
    last = f'{big}/{9_999:05d}.png'
    assert 9_999 in corrupt_files(10_000)
    assert ten_thousand['at_first_row']['running']
    assert last not in ten_thousand['at_first_row']['err'] and last in ten_thousand['err']


def test_memory_does_not_grow_with_the_number_of_files(folders, ten_thousand, tmp_path):
    ckpt, small, _ = folders
    thousand = measured_run(ckpt, small, tmp_path)
    assert thousand['rc'] == 2 and len(thousand['rows']) == 1_000 - len(corrupt_files(1_000)), thousand['err']
    assert ten_thousand['rss_mb'] <= thousand['rss_mb'] + RSS_MARGIN_MB, (ten_thousand['rss_mb'], thousand['rss_mb'])


def read_all(fd:int, into:list):
    "Append what `fd` gives to `into` until the other side is closed."
    while True:
        try: data = os.read(fd, 65536)
        except OSError: return          # EIO: the terminal's last writer has gone
        if not data: return
        into.append(data)


def test_a_terminal_gets_a_progress_bar_on_stderr_and_the_csv_stays_clean(folders, tmp_path):
    ckpt, small, _ = folders
    bad = tmp_path/'notes.png'
    bad.write_text('not an image')
    terminal, stderr = pty.openpty()
    fcntl.ioctl(stderr, termios.TIOCSWINSZ, struct.pack('HHHH', 24, 100, 0, 0))     # 24 rows, 100 columns
    proc = subprocess.Popen([sys.executable, '-m', 'adaptive_cnn', 'test', ckpt, small, bad], env=ENV,
                            stdout=subprocess.PIPE, stderr=stderr)
    os.close(stderr)
    shown = []
    reader = threading.Thread(target=read_all, args=(terminal, shown))
    reader.start()
    out, _ = proc.communicate(timeout=120)
    reader.join()
    os.close(terminal)
    shown = b''.join(shown).decode()
    assert proc.returncode == 2
    rows = out.decode().splitlines()
    assert len(rows) == 1 + 1_000 - len(corrupt_files(1_000)) and all(r.count(',') == 8 for r in rows), rows[:3]
    assert '1001/1001' in shown and 'img/s' in shown, shown[-500:]
    assert f'adaptive-cnn: error: {bad}: not an image' in shown


def test_a_reader_that_stops_stops_the_run_quietly(folders):
    ckpt, _, big = folders
    proc = subprocess.Popen([sys.executable, '-m', 'adaptive_cnn', 'test', ckpt, big], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith('file,') and proc.stdout.readline().startswith(str(big))
    proc.stdout.close()                     # as `| head -2` does
    rc = proc.wait(timeout=120)
    err = proc.stderr.read()
    proc.stderr.close()
    # the bad files met before the reader left are reported; no error about the pipe, and no summary: it stopped early
    assert rc == 141 and all(line.startswith('adaptive-cnn: error: ') for line in err.splitlines()), err
    assert 'Broken pipe' not in err and 'could not be classified' not in err, err


@pytest.mark.slow
def test_the_mnist_network_streams_in_flat_memory_too(folders, tmp_path):
    "The same with the MNIST recipe's own network (709,770 parameters, 25 MB of activations a chunk), about a minute."
    from adaptive_cnn.testing import tiny_run
    _, small, big = folders
    ckpt = tiny_run(tmp_path/'run', 'mnist', overrides=(), num_classes=10, num_train=300, num_test=100, steps=10)
    thousand, ten_thousand = measured_run(ckpt, small, tmp_path), measured_run(ckpt, big, tmp_path)
    assert (thousand['rc'], ten_thousand['rc']) == (2, 2), ten_thousand['err']
    assert len(thousand['rows']) == 1_000 - len(corrupt_files(1_000))
    assert len(ten_thousand['rows']) == 10_000 - len(corrupt_files(10_000))
    assert ten_thousand['rss_mb'] <= thousand['rss_mb'] + RSS_MARGIN_MB, (ten_thousand['rss_mb'], thousand['rss_mb'])
