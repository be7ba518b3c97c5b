"""README.md's quick start and offline section, run as written: in a fresh copy of the repository, in a fresh virtualenv.

The commands are read from README.md between `<!-- quickstart:begin -->` and `<!-- quickstart:end -->` (and the same
with `offline`), every ```sh block there, and run by bash with `set -euo pipefail`: nothing of them is copied here.
The quick start creates `.venv`, installs the project without extras, trains a first model on real MNIST
($ADAPTIVE_CNN_DATA), evaluates it and classifies an image. The same virtualenv then checks a plain `pip install .`
(training works, Grad-CAM stops with the one-line install hint), and the offline commands run with every download
blocked (proxies set to a closed local port) from datasets placed by hand in the README's layout under a fresh $HOME.

This is the slowest file of the suite: the virtualenv install (PyTorch included) takes minutes, and the virtualenv
(several GB with PyTorch's CUDA build) is deleted at the end.
"""
import json, os, re, shutil, subprocess, sys, time
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNREACHABLE = 'http://127.0.0.1:9'   # the discard port: nothing listens there, so every download fails at once
ACCURACY_FLOOR = 0.90                # the quick start's one epoch on 20,000 digits gives about 0.97; chance is 0.10
HINT = "pip install 'adaptive_cnn[interpret]'"


def readme_block(name:str, text:str|None=None) -> str:
    "The shell commands of README.md (or `text`) between `<!-- NAME:begin -->` and `<!-- NAME:end -->`: its ```sh blocks, in order."
    text = (ROOT/'README.md').read_text(encoding='utf-8') if text is None else text
    begin, end = f'<!-- {name}:begin -->', f'<!-- {name}:end -->'
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ValueError(f'README.md must hold {begin} and {end} once each, in this order, around the {name} commands '
                         f'(found {text.count(begin)} and {text.count(end)})')
    blocks = re.findall(r'^```(?:sh|bash)[ \t]*\n(.*?)^```[ \t]*$', text[text.index(begin):text.index(end)], re.M | re.S)
    if not blocks: raise ValueError(f'README.md: no ```sh block between {begin} and {end}')
    return ''.join(blocks)


def copy_worktree(dst:Path):
    "Copy the files of this checkout that git tracks or would track (uncommitted edits included; ignored files such as .venv not)."
    listed = subprocess.run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], cwd=ROOT,
                            capture_output=True, check=True).stdout
    for name in filter(None, listed.split(b'\0')):
        src = ROOT/os.fsdecode(name)
        if not src.is_file(): continue                     # tracked but deleted in the working tree
        (dst/os.fsdecode(name)).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst/os.fsdecode(name))


def fresh_env(drop=(), **extra) -> dict:
    "This process's environment without its virtualenv (make test puts the project's .venv first on PATH), plus `extra`."
    env = {k: v for k, v in os.environ.items() if k not in ('VIRTUAL_ENV', 'PYTHONPATH', 'PYTHONHOME', *drop)}
    if sys.prefix != sys.base_prefix:
        venv = Path(sys.prefix).resolve()
        env['PATH'] = os.pathsep.join(p for p in env.get('PATH', '').split(os.pathsep)
                                      if p and not Path(p).resolve().is_relative_to(venv))
    env.update(extra)
    return env


def bash(script:str, cwd:Path, env:dict, timeout:int, check:bool=True, trace:bool=True) -> subprocess.CompletedProcess:
    "Run `script` with bash and -euo pipefail (`trace`: -x, each command echoed on stderr); prints the time it took."
    start = time.monotonic()
    p = subprocess.run(['bash', '-c', f'set -euo pipefail{" -x" if trace else ""}\n' + script], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=timeout)
    print(f'{time.monotonic() - start:.0f} s: {script.strip().splitlines()[0]} ...')
    if check: assert p.returncode == 0, f'exit {p.returncode}\n--- stdout (end)\n{p.stdout[-6000:]}\n--- stderr (end)\n{p.stderr[-6000:]}'
    return p


@pytest.fixture(scope='module')
def quickstart(tmp_path_factory, data_root):
    "The quick start, run in a fresh copy of the repository: (base folder, repository, its output)."
    data = str(data_root)
    script = readme_block('quickstart')
    base = tmp_path_factory.mktemp('quickstart')
    try:
        repo = base/'adaptive_cnn'
        repo.mkdir()
        copy_worktree(repo)
        assert not (repo/'.venv').exists()
        out = bash(script, repo, fresh_env(ADAPTIVE_CNN_DATA=data), timeout=2400)
        yield SimpleNamespace(base=base, repo=repo, out=out, data=Path(data))
    finally:
        shutil.rmtree(base, ignore_errors=True)       # the virtualenv: several GB


def test_readme_blocks_are_marked():
    for name in ('quickstart', 'offline'): assert readme_block(name).strip()
    commands = readme_block('quickstart')
    for step in ('python3 -m venv .venv', '. .venv/bin/activate', 'pip install -e .', 'adaptive-cnn train mnist',
                 'adaptive-cnn evaluate', 'adaptive-cnn predict'):
        assert step in commands, step
    assert 'data.download=false' in readme_block('offline')
    with pytest.raises(ValueError, match='quickstart:begin'): readme_block('quickstart', '# no markers\n```sh\nls\n```\n')
    with pytest.raises(ValueError, match='no ```sh block'): readme_block('x', '<!-- x:begin -->\ntext\n<!-- x:end -->\n')


def test_quickstart(quickstart):
    repo, out = quickstart.repo, quickstart.out.stdout
    run = repo/'runs'/'first'
    results = json.loads((run/'results.json').read_text())
    assert results['test_acc'] >= ACCURACY_FLOOR, results
    # evaluate printed the metrics of that model on the test set, and wrote its report
    accuracy = re.search(r'^test accuracy: ([0-9.]+) \(', out, re.M)
    assert accuracy and abs(float(accuracy.group(1)) - results['test_acc']) < 0.002, out[-3000:]
    assert (run/'evaluation'/'report.md').is_file() and (run/'evaluation'/'metrics.json').is_file()
    # predict classified the image: test digit 0 is a 7
    assert (repo/'digit.png').is_file()
    assert re.search(r'^digit\.png: 7 \(0\.\d{4}\)$', out, re.M), out[-3000:]
    # a fresh virtualenv with the core install: no extras
    venv_python = repo/'.venv'/'bin'/'python'
    found = subprocess.run([venv_python, '-c', 'import importlib.util as u; print([m for m in ("pytorch_grad_cam", "onnx", "nbdev") if u.find_spec(m)])'],
                           capture_output=True, text=True, check=True).stdout.strip()
    assert found == '[]', found


def test_plain_install_without_extras(quickstart):
    "`pip install .` (not editable) without extras: training works from anywhere, Grad-CAM stops with the install hint."
    repo, elsewhere = quickstart.repo, quickstart.base/'elsewhere'
    elsewhere.mkdir()
    env = fresh_env(ADAPTIVE_CNN_DATA=str(quickstart.data))
    bash('. .venv/bin/activate\npip install .', repo, env, timeout=900)
    activate = f'. {repo}/.venv/bin/activate\n'
    where = bash(activate + 'python -c "import adaptive_cnn; print(adaptive_cnn.__file__)"', elsewhere, env, timeout=120).stdout
    assert 'site-packages' in where and str(repo/'adaptive_cnn') not in where, where
    bash(activate + 'adaptive-cnn train mnist --set train.epochs=1 --set data.train_subset=2000 --set data.val_size=500 '
         '--output-dir run --no-progress', elsewhere, env, timeout=900)
    assert json.loads((elsewhere/'run'/'results.json').read_text())['epochs'] == 1
    p = bash(activate + f'adaptive-cnn predict run {repo/"digit.png"} --gradcam cam.png', elsewhere, env, timeout=300,
             check=False, trace=False)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith('adaptive-cnn: error: ') and HINT in lines[0], p.stderr
    assert not (elsewhere/'cam.png').exists()


def test_offline(quickstart):
    "The offline commands, every download blocked, from datasets placed by hand in the README's layout in ~/datasets."
    home = quickstart.base/'home'
    datasets = home/'datasets'
    for folder in ('MNIST/raw', 'cifar-10-batches-bin'):
        (datasets/folder).mkdir(parents=True)
        for f in (quickstart.data/folder).iterdir(): (datasets/folder/f.name).symlink_to(f)
    listing = lambda: sorted(p.relative_to(datasets).as_posix() for p in datasets.rglob('*'))
    before = listing()
    proxies = {k: UNREACHABLE for k in ('http_proxy', 'https_proxy', 'all_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY')}
    env = fresh_env(drop=('ADAPTIVE_CNN_DATA', 'no_proxy', 'NO_PROXY'), HOME=str(home), **proxies)
    out = bash('. .venv/bin/activate\n' + readme_block('offline'), quickstart.repo, env, timeout=900).stdout
    assert re.search(r'^dataset +mnist$', out, re.M) and re.search(r'^splits +train 55,000 +val 5,000 +test 10,000$', out, re.M), out
    assert re.search(r'^dataset +cifar10$', out, re.M) and re.search(r'^splits +train 45,000 +val 5,000 +test 10,000$', out, re.M), out
    assert listing() == before
    # downloads really are blocked here: a dataset that is not in ~/datasets fails with the reason, and leaves nothing
    p = bash('. .venv/bin/activate\nadaptive-cnn profile kmnist --data-root ~/datasets', quickstart.repo, env, timeout=300,
             check=False, trace=False)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert 'KMNIST not found' in p.stderr and 'the network could not be reached' in p.stderr, p.stderr
    assert listing() == before
