#!/usr/bin/env python3
"""The size limit on the outputs notebooks store (run by tools/test.sh, hence by CI). Exits 1 with one line per
notebook whose stored outputs (the JSON of all its cells' `outputs`: text, tables and base64 images) are over
LIMIT bytes, saying how to bring it under; prints one summary line (the largest notebook) when all pass.

    python tools/check_notebook_outputs.py                          # nbs/*.ipynb and nbs/tutorials/**/*.ipynb
    python tools/check_notebook_outputs.py nbs/13_interpret.ipynb   # the notebooks named
"""
from __future__ import annotations

import argparse, json, sys
from pathlib import Path

# The most bytes one notebook may store as outputs: room for a few figures at 1× resolution and some tables, while
# the repository, its diffs and the docs pages stay light (issue 20). A figure at dpi ~75 is 10-40 KB of base64.
LIMIT = 300_000

ROOT = Path(__file__).resolve().parents[1]
HOW_TO_FIX = ('draw smaller figures (dpi 72-80, a modest figsize) or fewer of them, print fewer lines, then store the '
              'outputs again (python tools/execute_notebooks.py NOTEBOOK)')


def default_notebooks(root:Path=ROOT) -> list[Path]:
    "The notebooks the check covers: nbs/*.ipynb and any under nbs/tutorials/."
    nbs = Path(root)/'nbs'
    return sorted(nbs.glob('*.ipynb')) + sorted((nbs/'tutorials').glob('**/*.ipynb'))


def output_bytes(path:str|Path) -> int:
    "Bytes of the stored outputs of the notebook at `path`: each cell's `outputs` as compact UTF-8 JSON, summed."
    nb = json.loads(Path(path).read_text(encoding='utf-8'))
    sizes = [json.dumps(c['outputs'], ensure_ascii=False, separators=(',', ':')).encode('utf-8')
             for c in nb.get('cells', []) if c.get('outputs')]
    return sum(len(s) for s in sizes)


def _name(path:Path) -> str:
    "`path` relative to the repository when it is inside it, else as given."
    try: return Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError: return str(path)


def main(paths:list[str|Path]|None=None, limit:int=LIMIT) -> int:
    "Check `paths` (default: `default_notebooks()`); print one line per notebook over `limit`, or a summary. 0 or 1."
    paths = [Path(p) for p in paths] if paths else default_notebooks()
    if not paths:
        print('no notebooks found to check')
        return 1
    problems, sizes = [], {}
    for path in paths:
        try: sizes[path] = output_bytes(path)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, KeyError, TypeError) as e:
            problems.append(f'{_name(path)}: not a readable notebook ({type(e).__name__}: {e})')
    for path, size in sizes.items():
        if size > limit:
            problems.append(f'{_name(path)}: stored outputs are {size:,} bytes, over the limit of {limit:,} bytes; '
                            f'{HOW_TO_FIX}')
    for line in problems: print(line)
    if problems: return 1
    largest = max(sizes, key=sizes.get)
    count = f'{len(sizes)} notebook' + ('s' if len(sizes) != 1 else '')
    print(f'notebook outputs: {count} within {limit:,} bytes each; '
          f'largest {_name(largest)} ({sizes[largest]:,} bytes)')
    return 0


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('notebooks', nargs='*', type=Path, help='notebooks to check (default: all of nbs/)')
    sys.exit(main(parser.parse_args().notebooks))
