"""The docs: nbdev leaves the hand-written README.md alone, and tools/check_docs.py passes here and fails on broken docs."""
import importlib.util, json, os, re, shutil, subprocess, sys, textwrap
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location('check_docs', ROOT/'tools'/'check_docs.py')
check_docs = importlib.util.module_from_spec(_spec); _spec.loader.exec_module(check_docs)


# --- README.md is not rendered from a notebook -----------------------------------------------------------------------

class QuartoCalled(Exception): pass


@pytest.fixture
def nbdev_quarto(monkeypatch):
    "nbdev.quarto with a fresh config cache, and with Quarto rendering and notebook processing recorded instead of run."
    import nbdev.config, nbdev.quarto
    calls = []
    def record(what):
        def f(*args, **kwargs): calls.append((what, args)); raise QuartoCalled(what)
        return f
    monkeypatch.setattr(nbdev.quarto, '_sprun', record('quarto'))
    monkeypatch.setattr(nbdev.quarto, 'proc_nbs', record('proc_nbs'))
    nbdev.config.get_config.cache_clear()
    yield nbdev.quarto, calls
    nbdev.config.get_config.cache_clear()


def test_readme_nb_names_no_notebook(monkeypatch, nbdev_quarto):
    import nbdev.config
    monkeypatch.chdir(ROOT)
    cfg = nbdev.config.get_config()
    assert cfg.config_path == ROOT
    assert cfg.readme_nb != 'index.ipynb' and not (cfg.nbs_path/cfg.readme_nb).exists(), cfg.readme_nb


def test_nbdev_readme_leaves_readme_alone(monkeypatch, capsys, nbdev_quarto):
    "What nbdev_prepare and nbdev_docs call, with the repository's config: no Quarto run, README.md byte-identical."
    quarto, calls = nbdev_quarto
    monkeypatch.chdir(ROOT)
    before = (ROOT/'README.md').read_bytes()
    quarto.nbdev_readme.__wrapped__(chk_time=True)
    assert calls == []
    assert (ROOT/'README.md').read_bytes() == before
    assert 'Could not find' in capsys.readouterr().out


def _copy_project(dst:Path, readme_nb_line:str|None) -> Path:
    "settings.ini (its readme_nb line replaced, or dropped if None), README.md and nbs/index.ipynb, README the oldest."
    settings = (ROOT/'settings.ini').read_text()
    assert len(re.findall(r'^readme_nb *=.*$', settings, re.M)) == 1
    settings = re.sub(r'^readme_nb *=.*\n', '' if readme_nb_line is None else readme_nb_line + '\n', settings, flags=re.M)
    (dst/'nbs').mkdir()
    (dst/'settings.ini').write_text(settings)
    shutil.copy(ROOT/'nbs'/'index.ipynb', dst/'nbs'/'index.ipynb')
    (dst/'README.md').write_text('hand-written\n')
    os.utime(dst/'README.md', (1_000_000_000, 1_000_000_000))      # older than index.ipynb: nbdev would rebuild it
    return dst


@pytest.mark.parametrize('line, renders', [(None, True),                          # no key: nbdev's default index.ipynb
                                           ('readme_nb = index.ipynb', True),     # the setting this repository had
                                           ('repository', False)])                # this repository's line
def test_readme_nb_setting_is_what_protects_readme(tmp_path, monkeypatch, nbdev_quarto, line, renders):
    quarto, calls = nbdev_quarto
    if line == 'repository':
        line = re.search(r'^readme_nb *=.*$', (ROOT/'settings.ini').read_text(), re.M).group(0)
    monkeypatch.chdir(_copy_project(tmp_path, line))
    if renders:
        with pytest.raises(QuartoCalled): quarto.nbdev_readme.__wrapped__(chk_time=True)
        assert calls and calls[0][0] == 'proc_nbs'         # processing, then `quarto render ... -o README.md`
    else:
        quarto.nbdev_readme.__wrapped__(chk_time=True)
        assert calls == []
    assert (tmp_path/'README.md').read_text() == 'hand-written\n'
    assert (tmp_path/'nbs'/'index.ipynb').exists() and not (tmp_path/'nbs'/'sidebar.yml.bak').exists()


# --- tools/check_docs.py: sidebar, _quarto.yml and links -------------------------------------------------------------

def test_repository_docs_resolve():
    assert check_docs.config_problems(ROOT) == []
    assert check_docs.link_problems(ROOT) == []
    assert len(check_docs.Repo(ROOT).doc_sources()) >= 10       # the notebooks and tutorials were found


def _notebook(path:Path, *cells):
    "Write a notebook of ('md'|'code', source) cells."
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(s) if kind == 'md' else nbformat.v4.new_code_cell(s) for kind, s in cells]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def _write(path:Path, text:str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


@pytest.fixture
def docs_tree(tmp_path) -> Path:
    "A small docs tree whose every link and sidebar entry resolves (the tests below break it)."
    nbs = tmp_path/'nbs'
    _write(nbs/'sidebar.yml', '''\
        website:
          sidebar:
            contents:
              - index.ipynb
              - section: Guides
                contents:
                  - tutorials/guide.md
                  - text: The API
                    href: 00_api.ipynb
                  - text: Elsewhere
                    href: https://example.com/missing.ipynb
                  - auto: "tutorials/*.md"
        ''')
    _write(nbs/'_quarto.yml', '''\
        format:
          html:
            css: styles.css
        website:
          navbar:
            left:
              - text: API
                href: 00_api.html
        metadata-files: [sidebar.yml]
        ''')
    _write(nbs/'styles.css', '')
    _notebook(nbs/'index.ipynb', ('md', '# Home\nSee [the API](00_api.ipynb), [the guide](tutorials/guide.md#setup), '
                                        '[a page](00_api.html), [up here](#home), [web](https://example.com/x.md) '
                                        'and `[in code](nowhere.md)`.'),
              ('code', '# [a link in code](nowhere.ipynb)'))
    _notebook(nbs/'00_api.ipynb', ('md', '# API\n<a href="index.ipynb">home</a> <img src="tutorials/pic.png">'))
    _write(nbs/'tutorials'/'guide.md', '# Guide\n\n[home](../index.ipynb) ![pic](pic.png)\n\n[ref]: ../00_api.ipynb\n'
                                       '```\n[fenced](nowhere.md)\n```\n')
    (nbs/'tutorials'/'pic.png').write_bytes(b'')
    _write(tmp_path/'README.md', '[docs](nbs/index.ipynb), [guide](nbs/tutorials/guide.md#top), [me](mailto:a@b.c), '
                                 '[top](#top), [folder](nbs)\n')
    return tmp_path


def test_check_passes_on_a_good_tree(docs_tree, capsys):
    assert check_docs.config_problems(docs_tree) == []
    assert check_docs.link_problems(docs_tree) == []
    assert check_docs.main(['--root', str(docs_tree), '--no-proc']) == 0


def test_check_fails_on_a_broken_tree(docs_tree, capsys):
    nbs = docs_tree/'nbs'
    sidebar = (nbs/'sidebar.yml').read_text()
    (nbs/'sidebar.yml').write_text(sidebar.replace('- tutorials/guide.md', '- tutorials/guide.md\n          - gone.ipynb'))
    (nbs/'_quarto.yml').write_text((nbs/'_quarto.yml').read_text().replace('00_api.html', 'lost.html'))
    _notebook(nbs/'index.ipynb', ('md', '# Home\n[fine](00_api.ipynb)'),
              ('md', '[missing](missing.ipynb) and [a page](nopage.html#x) and [wrong kind](00_api.md)'))
    (nbs/'tutorials'/'pic.png').unlink()
    with open(nbs/'tutorials'/'guide.md', 'a') as f: f.write('[outside](../../README.md)\n')
    _write(docs_tree/'README.md', '[docs](nbs/index.ipynb) [gone](docs/none.md) [deep](nbs/tutorials/none.md#x)\n')

    problems = check_docs.config_problems(docs_tree) + check_docs.link_problems(docs_tree)
    expected = [("nbs/sidebar.yml: entry 'gone.ipynb'", 'no nbs/gone.ipynb'),
                ("nbs/_quarto.yml: entry 'lost.html'", 'no nbs/lost{.ipynb,.qmd,.md}'),
                ("nbs/00_api.ipynb cells[0]: broken link 'tutorials/pic.png'", 'no nbs/tutorials/pic.png'),
                ("nbs/index.ipynb cells[1]: broken link 'missing.ipynb'", 'no nbs/missing.ipynb'),
                ("nbs/index.ipynb cells[1]: broken link 'nopage.html#x'", 'no nbs/nopage{'),
                ("nbs/index.ipynb cells[1]: broken link '00_api.md'", 'no nbs/00_api.md'),
                ("nbs/tutorials/guide.md: broken link 'pic.png'", 'no nbs/tutorials/pic.png'),
                ("nbs/tutorials/guide.md: broken link '../../README.md'", 'outside nbs/'),
                ("README.md: broken link 'docs/none.md'", 'no docs/none.md'),
                ("README.md: broken link 'nbs/tutorials/none.md#x'", 'no nbs/tutorials/none.md')]
    for start, reason in expected:
        assert [p for p in problems if p.startswith(start) and reason in p], (start, problems)
    assert len(problems) == len(expected), problems
    assert check_docs.main(['--root', str(docs_tree), '--no-proc']) == 1
    out = capsys.readouterr().out.splitlines()
    assert sorted(out) == sorted(problems)                    # one line per problem on stdout


def test_missing_sidebar_and_git_ignored_targets(docs_tree):
    (docs_tree/'.gitignore').write_text('outputs/\n')
    (docs_tree/'nbs'/'outputs').mkdir()
    (docs_tree/'nbs'/'outputs'/'curve.png').write_bytes(b'')
    _notebook(docs_tree/'nbs'/'index.ipynb', ('md', '![curve](outputs/curve.png)'))
    assert check_docs.link_problems(docs_tree) == []                       # not a git checkout: the file is there
    subprocess.run(['git', 'init', '-q', str(docs_tree)], check=True)
    problems = check_docs.link_problems(docs_tree)                         # a clean clone lacks ignored files
    assert len(problems) == 1 and 'outputs/curve.png' in problems[0] and 'git-ignored' in problems[0], problems
    (docs_tree/'nbs'/'sidebar.yml').unlink()
    assert check_docs.config_problems(docs_tree) == ['nbs/sidebar.yml: missing', "nbs/_quarto.yml: entry 'sidebar.yml' "
                                                     'does not exist: no nbs/sidebar.yml']


def test_markdown_links():
    text = ('[a](one.md) ![b](two.png "title") [c](<three four.md>) [![d](five.png)](six.md)\n'
            '`[e](code.md)` <a href="seven.html">x</a>\n[ref]: eight.md\n~~~\n[f](fenced.md)\n~~~\n<!-- [g](comment.md) -->\n')
    assert check_docs.markdown_links(text) == ['one.md', 'two.png', 'three four.md', 'five.png', 'six.md', 'eight.md',
                                               'seven.html']
    assert [check_docs._local_path(t) for t in ('#x', 'https://a/b.md', 'mailto:a@b', 'a%20b.md#x', 'c.md?v=1')] == \
           [None, None, None, 'a b.md', 'c.md']


# --- tools/check_docs.py: nbdev_proc_nbs -----------------------------------------------------------------------------

WARNING = '''/venv/nbdev/processors.py:233: UserWarning: Found cells containing imports and other code. See FAQ.
---
import os
x = 1
---

  warn(f'Found cells containing imports and other code. See FAQ.\\n---\\n{cell.source}\\n---\\n')
'''


def test_proc_output_problems(tmp_path):
    _notebook(tmp_path/'nbs'/'a.ipynb', ('md', '# A'), ('code', '#| hide\nimport os\nx = 1'))
    repo = check_docs.Repo(tmp_path)
    assert check_docs.proc_output_problems(repo, '', 0) == []
    assert check_docs.proc_output_problems(repo, WARNING, 0) == [
        "nbs/a.ipynb cells[1]: nbdev_proc_nbs warning: a cell mixes imports and other code (move the imports to their own "
        "cell): 'import os'"]
    assert check_docs.proc_output_problems(repo, '/x/y.py:3: FutureWarning: soon\n', 0) == \
           ['nbdev_proc_nbs: /x/y.py:3: FutureWarning: soon']
    assert check_docs.proc_output_problems(repo, 'Traceback\nOSError: disk full\n', 1) == \
           ['nbdev_proc_nbs: exited with status 1: Traceback | OSError: disk full']


@pytest.fixture
def tiny_project(tmp_path, monkeypatch):
    "An nbdev project with one notebook whose mixed import cell fails, and a PATH whose sudo/pip/curl/wget log calls."
    _write(tmp_path/'settings.ini', '''\
        [DEFAULT]
        repo = tiny
        lib_name = tiny
        lib_path = tiny
        user = someone
        author = someone
        nbs_path = nbs
        doc_path = _docs
        custom_sidebar = True
        title = tiny
        description = a tiny project
        branch = main
        git_url = https://github.com/someone/tiny
        doc_host = https://someone.github.io
        doc_baseurl = /tiny
        ''')
    _write(tmp_path/'tiny'/'__init__.py', '')
    _notebook(tmp_path/'nbs'/'tiny.ipynb', ('md', '# Tiny'), ('code', '#| default_exp tiny'),
              ('code', '#| export\ndef f(): return 1'), ('code', 'import os\nprint(undefined_name)'))
    log = tmp_path/'called.log'
    for name in ('sudo', 'pip', 'pip3', 'curl', 'wget'):
        _write(tmp_path/'bin'/name, f'#!/bin/sh\necho "{name} $*" >> "{log}"\nexit 1\n')
        (tmp_path/'bin'/name).chmod(0o755)
    monkeypatch.setenv('PATH', f"{tmp_path/'bin'}{os.pathsep}{os.environ['PATH']}")
    assert shutil.which('quarto') is None, 'these tests are about machines without Quarto'
    assert shutil.which('pip') == str(tmp_path/'bin'/'pip') and shutil.which('sudo') == str(tmp_path/'bin'/'sudo')
    return tmp_path, log


def test_proc_nbs_problems_installs_nothing(tiny_project):
    root, log = tiny_project
    problems = check_docs.proc_problems(root)
    assert problems == [
        "nbs/tiny.ipynb cells[3]: nbdev_proc_nbs warning: a cell mixes imports and other code (move the imports to their "
        "own cell): 'import os'",
        "nbs/tiny.ipynb cells[3]: nbdev_proc_nbs failed running this cell (NameError: name 'undefined_name' is not "
        "defined): 'import os'"], problems
    assert not log.exists(), log.read_text()


def test_plain_nbdev_proc_nbs_would_install(tiny_project):
    "The control for the test above: nbdev_proc_nbs as nbdev ships it reaches for sudo and pip when Quarto is missing."
    root, log = tiny_project
    subprocess.run([sys.executable, '-c', 'from nbdev.quarto import nbdev_proc_nbs; nbdev_proc_nbs.__wrapped__()'],
                   cwd=root, capture_output=True, timeout=600)
    called = log.read_text()
    assert 'sudo ' in called and 'pip install -e' in called, called


def test_every_public_trainer_method_is_documented():
    "Methods are attached with fastcore's @patch, so nbdev's index (what show_doc and the docs use) lists each one."
    from adaptive_cnn._modidx import d
    from adaptive_cnn.training import Trainer
    syms = d['syms']['adaptive_cnn.training']
    public = [m for m in vars(Trainer) if not m.startswith('_') and callable(getattr(Trainer, m))]
    assert {'fit', 'train_epoch', 'validate', 'interrupt', 'out_of_memory', 'state'} <= set(public)
    assert [m for m in public if f'adaptive_cnn.training.Trainer.{m}' not in syms] == []
    assert [m for m in public if not (getattr(Trainer, m).__doc__ or '').strip()] == []
    assert syms['adaptive_cnn.training.Trainer.fit'][0] == 'training.html#trainer.fit'
