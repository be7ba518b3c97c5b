#!/usr/bin/env python3
"""The docs check that needs no Quarto (run by tools/test.sh, hence by CI). Exits 1 with one line per problem when
  (a) an entry of nbs/sidebar.yml or nbs/_quarto.yml names a file that is not under nbs/;
  (b) a relative link in markdown does not resolve: markdown cells of nbs/**/*.ipynb, nbs/**/*.md and *.qmd (relative
      to their folder, as pages of the docs site built from nbs/), README.md (relative to the repository root, as
      GitHub shows it). http(s)/mailto and other `scheme:` links and pure `#anchors` are skipped; `file#anchor` checks
      the file. A link to `foo.html` is the page built from foo.ipynb, foo.qmd or foo.md; a link to a source file
      (foo.ipynb, foo.md, ...) needs that very file, as in Quarto. Git-ignored files count as missing (a clean clone,
      hence CI and the published site, lacks them);
  (c) `nbdev_proc_nbs` (the processing step of nbdev_docs, into the git-ignored _proc/) exits non-zero or prints a
      warning. It runs with nbdev's Quarto installer switched off: without Quarto on PATH, nbdev would otherwise run
      `sudo dpkg -i` on a downloaded Quarto and `pip install -e ".[dev]"` with the first pip on PATH.

    python tools/check_docs.py              # all three
    python tools/check_docs.py --no-proc    # (a) and (b) only: well under a second
"""
from __future__ import annotations

import argparse, json, os, re, shutil, subprocess, sys, time
from pathlib import Path
from urllib.parse import unquote

import yaml

DOC_SOURCES = ('.ipynb', '.qmd', '.md')      # what Quarto renders to a page of the site
SKIP_FOLDER = re.compile(r'^[_.]')           # folders nbdev leaves out of the docs (nbglob's skip_folder_re)
SCHEME = re.compile(r'^[A-Za-z][A-Za-z0-9+.-]*:')  # http:, https:, mailto:, attachment:, data: ...

# --- links in markdown -----------------------------------------------------------------------------------------------

_FENCE = re.compile(r'^ {0,3}(`{3,}|~{3,}).*?^ {0,3}\1[`~]*[ \t]*$', re.M | re.S)
_CODE_SPAN = re.compile(r'(`+)(?!`).*?(?<!`)\1(?!`)', re.S)
_COMMENT = re.compile(r'<!--.*?-->', re.S)
_INLINE = re.compile(r'\]\(\s*(<[^>\n]*>|[^)\s]+)')                       # [text](target ...), ![alt](target)
_REFDEF = re.compile(r'^ {0,3}\[[^\]\n]+\]:[ \t]*(<[^>\n]*>|\S+)', re.M)   # [id]: target
_HTML = re.compile(r'<(?:a|img|source|video|audio|iframe|link|script)\b[^>]*?\b(?:href|src)\s*=\s*["\']([^"\']*)["\']', re.I)


def markdown_links(text:str) -> list[str]:
    "Link and image targets of markdown `text` (inline, reference definitions, HTML tags), code blocks and spans left out."
    text = _COMMENT.sub('', _CODE_SPAN.sub('', _FENCE.sub('', text)))
    found = [m.group(1) for rx in (_INLINE, _REFDEF, _HTML) for m in rx.finditer(text)]
    return [t[1:-1].strip() if t.startswith('<') and t.endswith('>') else t for t in found]


def _local_path(target:str) -> str|None:
    "The file part of a link target, or None for links this check skips (external, pure anchors, Quarto shortcodes)."
    target = target.strip()
    if not target or target.startswith('#') or SCHEME.match(target) or '{{' in target: return None
    return unquote(re.split(r'[#?]', target, maxsplit=1)[0]) or None


# --- the repository --------------------------------------------------------------------------------------------------

class Repo:
    "Files under `root` (a checkout: settings.ini, nbs/, README.md); `exists` treats git-ignored files as missing."
    def __init__(self, root):
        self.root = Path(root).resolve()
        self.nbs = self.root/'nbs'
        self._ignored = self._git_ignored()

    def _git_ignored(self) -> list[Path]:
        "Ignored files and folders under root, per git; none when root is not in a git work tree or git is missing."
        try: r = subprocess.run(['git', 'ls-files', '--others', '--ignored', '--exclude-standard', '--directory', '-z'],
                                cwd=self.root, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError): return []
        if r.returncode: return []
        return [self.root/p.rstrip('/') for p in r.stdout.split('\0') if p]

    def ignored(self, path:Path) -> bool:
        return any(path == d or d in path.parents for d in self._ignored)

    def exists(self, path:Path) -> bool:
        return path.exists() and not self.ignored(path)

    def rel(self, path:Path) -> str:
        try: return path.relative_to(self.root).as_posix()
        except ValueError: return str(path)

    def doc_sources(self) -> list[Path]:
        "Notebooks and markdown pages under nbs/ that nbdev would process, sorted."
        found = []
        for folder, dirs, files in os.walk(self.nbs):
            dirs[:] = sorted(d for d in dirs if not SKIP_FOLDER.match(d) and not self.ignored(Path(folder)/d))
            found += [Path(folder)/f for f in files if f.endswith(DOC_SOURCES) and not SKIP_FOLDER.match(f)
                      and not self.ignored(Path(folder)/f)]
        return sorted(found)

    def page_problem(self, base:Path, target:str) -> str|None:
        "Why `target` (a link or href in the docs, relative to folder `base`) does not reach a page or file of the site."
        rel = target.lstrip('/')
        path = Path(os.path.normpath((self.nbs if target.startswith('/') else base)/rel))
        if path != self.nbs and self.nbs not in path.parents: return f'outside nbs/, so not part of the docs site ({self.rel(path)})'
        if path.is_dir() and not self.ignored(path):
            if any(self.exists(path/f'index{s}') for s in DOC_SOURCES): return None
            return f'folder {self.rel(path)}/ has no index page'
        if self.exists(path): return None
        if path.suffix == '.html' and any(self.exists(path.with_suffix(s)) for s in DOC_SOURCES): return None
        if path.suffix == '.html':
            return f'no {self.rel(path.with_suffix(""))}{{{",".join(DOC_SOURCES)}}} to build it from'
        return f'no {self.rel(path)}' + (' (git-ignored: missing from a clean clone)' if path.exists() else '')

    def repo_problem(self, target:str) -> str|None:
        "Why `target` (a link in README.md, relative to the repository root as on GitHub) does not resolve."
        path = Path(os.path.normpath(self.root/target.lstrip('/')))
        if path != self.root and self.root not in path.parents: return f'outside the repository ({path})'
        if self.exists(path): return None
        return f'no {self.rel(path)}' + (' (git-ignored: missing from a clean clone)' if path.exists() else '')


# --- (a) sidebar.yml and _quarto.yml ---------------------------------------------------------------------------------

_LIST_KEYS = {'contents', 'left', 'right', 'menu', 'render', 'metadata-files', 'css', 'resources'}   # lists of files


def yaml_targets(node, key:str|None=None):
    "File names in a Quarto config tree: `href`/`file` values, and string items of the keys in `_LIST_KEYS`."
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ('href', 'file') and isinstance(v, str): yield v
            else: yield from yaml_targets(v, k)
    elif isinstance(node, list):
        for v in node: yield from yaml_targets(v, key)
    elif isinstance(node, str) and key in _LIST_KEYS: yield node


def config_problems(root) -> list[str]:
    "(a): entries of nbs/sidebar.yml and nbs/_quarto.yml naming files that are not under nbs/."
    repo, problems = Repo(root), []
    for name in ('sidebar.yml', '_quarto.yml'):
        path = repo.nbs/name
        if not path.exists():
            if name == 'sidebar.yml': problems.append(f'{repo.rel(path)}: missing')
            continue
        try: tree = yaml.safe_load(path.read_text(encoding='utf-8'))
        except yaml.YAMLError as e:
            problems.append(f'{repo.rel(path)}: not valid YAML ({str(e).splitlines()[0]})'); continue
        for target in yaml_targets(tree):
            if target == 'auto' or any(c in target for c in '*?['): continue     # Quarto's generated entries
            local = _local_path(target)
            if local is None: continue
            why = repo.page_problem(repo.nbs, local)
            if why: problems.append(f'{repo.rel(path)}: entry {target!r} does not exist: {why}')
    return problems


# --- (b) links -------------------------------------------------------------------------------------------------------

def _markdown_cells(path:Path):
    "(label, text) of each markdown cell of notebook `path`."
    nb = json.loads(path.read_text(encoding='utf-8'))
    for i, cell in enumerate(nb.get('cells', [])):
        if cell.get('cell_type') == 'markdown':
            src = cell.get('source', '')
            yield f'cells[{i}]', ''.join(src) if isinstance(src, list) else src


def link_problems(root) -> list[str]:
    "(b): relative links in the docs' markdown (nbs/) and in README.md that do not resolve."
    repo, problems = Repo(root), []
    for path in repo.doc_sources():
        try: parts = list(_markdown_cells(path)) if path.suffix == '.ipynb' else [(None, path.read_text(encoding='utf-8'))]
        except (ValueError, UnicodeDecodeError) as e:
            problems.append(f'{repo.rel(path)}: cannot be read ({e})'); continue
        for label, text in parts:
            for target in markdown_links(text):
                local = _local_path(target)
                why = local and repo.page_problem(path.parent, local)
                if why: problems.append(f'{repo.rel(path)}{" " + label if label else ""}: broken link {target!r}: {why}')
    readme = repo.root/'README.md'
    if readme.exists():
        for target in markdown_links(readme.read_text(encoding='utf-8')):
            local = _local_path(target)
            why = local and repo.repo_problem(local)
            if why: problems.append(f'README.md: broken link {target!r}: {why}')
    return problems


# --- (c) nbdev_proc_nbs ----------------------------------------------------------------------------------------------

# nbdev_proc_nbs as nbdev_docs runs it, less `_ensure_quarto` (which, with no `quarto` on PATH, runs nbdev's `install`:
# `sudo dpkg -i` on a downloaded Quarto, then `pip install -e ".[dev]"` with the first pip on PATH). Processing needs
# no Quarto; only the render step that follows it does.
_PROC = '''
import sys, nbdev.quarto as q
def _refuse(*a, **k): sys.exit("check_docs: nbdev tried to install Quarto or the package; refused")
q._ensure_quarto = lambda: None
q.install, q.install_quarto = _refuse, _refuse
q.nbdev_proc_nbs.__wrapped__()
'''
_IMPORT_WARNING = re.compile(r'(?:^[^\n]*UserWarning: )?Found cells containing imports and other code\. See FAQ\.\n---\n(.*?)\n---\n', re.S | re.M)
_CELL_ERROR = re.compile(r'^Exception: Error(?: in notebook: .*?)? in cell \d+ :\n(.*?)(?=\n"""|\Z)', re.M | re.S)
_WARNING = re.compile(r'^(?:\S.*?:\d+: \w*Warning: .*|WARNING\b.*|Warning: .*)$', re.M)   # warnings.warn's format; logging's
_ERROR_LINE = re.compile(r'^(\w*(?:Error|Exception)): (.*)$', re.M)


def _code(source) -> str:
    "A cell's source without its `#|` directives (nbdev's messages may show it without them) and outer blank lines."
    lines = ''.join(source).splitlines() if isinstance(source, list) else source.splitlines()
    return '\n'.join(l for l in lines if not l.lstrip().startswith('#|')).strip()


def _find_cell(repo:Repo, source:str) -> str:
    "'nbs/NAME.ipynb cells[I]' for each code cell under nbs/ whose source is `source` (nbdev's messages name neither)."
    found = []
    for path in repo.doc_sources():
        if path.suffix != '.ipynb': continue
        cells = json.loads(path.read_text(encoding='utf-8')).get('cells', [])
        found += [f'{repo.rel(path)} cells[{i}]' for i, c in enumerate(cells)
                  if c.get('cell_type') == 'code' and _code(c.get('source', '')) == _code(source)]
    return ', '.join(found) or 'nbs/ (cell not found)'


def proc_problems(root, timeout:float=1800) -> list[str]:
    "(c): run nbdev_proc_nbs on every notebook (a fresh _proc/) and report a failure and every warning it prints."
    repo = Repo(root)
    # a fresh cache, so that every notebook is processed (nbdev_proc_nbs's --force would also reach nbdev_sidebar,
    # which then overwrites the hand-written sidebar.yml)
    shutil.rmtree(repo.root/'_proc', ignore_errors=True)
    configs = {p: p.read_bytes() for p in sorted(repo.nbs.glob('*.yml'))}
    env = dict(os.environ, PIP_NO_INDEX='1')   # belt and braces: no pip download, whatever runs
    try: r = subprocess.run([sys.executable, '-c', _PROC], cwd=repo.root, env=env, capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired: return [f'nbdev_proc_nbs: did not finish in {timeout:.0f} s']
    problems = proc_output_problems(repo, r.stdout + '\n' + r.stderr, r.returncode)
    for path, before in configs.items():
        if path.exists() and path.read_bytes() != before:
            problems.append(f'{repo.rel(path)}: rewritten by nbdev_proc_nbs (out of date with settings.ini): commit the new version')
    return problems


def proc_output_problems(repo:Repo, out:str, returncode:int) -> list[str]:
    "The problems in nbdev_proc_nbs's output `out` and exit status: its warnings, and the cell that failed if one did."
    out, problems = out.replace('\r\n', '\n'), []
    for m in _IMPORT_WARNING.finditer(out):
        cell = m.group(1).strip()
        problems.append(f'{_find_cell(repo, cell)}: nbdev_proc_nbs warning: a cell mixes imports and other code '
                        f'(move the imports to their own cell): {cell.splitlines()[0]!r}')
    rest = _IMPORT_WARNING.sub('', out)
    problems += [f'nbdev_proc_nbs: {m.group(0).strip()}' for m in _WARNING.finditer(rest)]
    if returncode:
        failed = list(_CELL_ERROR.finditer(out))
        if failed:   # a cell that processing runs (imports, exports, show_doc) raised: name the notebook, cell and error
            cell = failed[-1].group(1).strip()
            cause = next((f'{m.group(1)}: {m.group(2).strip()}' for m in _ERROR_LINE.finditer(out)
                          if not m.group(2).startswith('Error')), 'see nbdev_proc_nbs output')
            problems.append(f'{_find_cell(repo, cell)}: nbdev_proc_nbs failed running this cell ({cause}): {cell.splitlines()[0]!r}')
        else:
            tail = [l.strip() for l in out.splitlines() if l.strip()][-3:]
            problems.append(f'nbdev_proc_nbs: exited with status {returncode}: ' + ' | '.join(tail))
    return problems


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--root', default=Path(__file__).resolve().parents[1], help='repository root (default: this checkout)')
    p.add_argument('--no-proc', action='store_true', help='skip nbdev_proc_nbs (c)')
    args = p.parse_args(argv)
    problems = config_problems(args.root) + link_problems(args.root)
    note = ''
    if not args.no_proc:
        start = time.monotonic()
        problems += proc_problems(args.root)
        note = f'; nbdev_proc_nbs took {time.monotonic() - start:.0f} s'
    for line in problems: print(line)
    n = len(Repo(args.root).doc_sources())
    print(f'check_docs: {len(problems)} problem(s) in sidebar, _quarto.yml, links of {n} doc pages and README.md{note}',
          file=sys.stderr if problems else sys.stdout)
    return 1 if problems else 0


if __name__ == '__main__': sys.exit(main())
