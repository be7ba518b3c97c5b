"""Execute notebooks in place so their outputs (tables, figures) appear in the docs.

Honours the same cell directives as `nbdev_test`: `#| eval: false` cells and cells with a flag from
`tst_flags` (settings.ini) are skipped unless the flag is passed with --flags.

    python tools/execute_notebooks.py                 # every notebook in nbs/
    python tools/execute_notebooks.py nbs/04_models.ipynb --flags slow
"""
import argparse, os
from pathlib import Path
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
from nbdev.config import get_config
from nbdev.process import NBProcessor
from nbdev.frontmatter import FrontmatterProc


def execute(path: Path, skip_flags: set):
    nb = read_nb(path)
    directives = {c.idx_: c.directives_ for c in NBProcessor(path, procs=FrontmatterProc, process=True).nb.cells}

    def skip(cell):
        if cell.cell_type != 'code': return True
        direc = directives.get(cell.idx_, {}) or {}
        if direc.get('eval:', [''])[0].lower() == 'false': return True
        return bool(skip_flags & direc.keys())

    cwd = os.getcwd()
    os.chdir(path.parent)
    try: CaptureShell(path).run_all(nb, exc_stop=True, preproc=skip)
    finally: os.chdir(cwd)
    write_nb(nb, path)


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('notebooks', nargs='*', type=Path)
    parser.add_argument('--flags', default='', help='space-separated test flags to run anyway (e.g. slow)')
    args = parser.parse_args()
    cfg = get_config()
    skip_flags = set(cfg.tst_flags.split()) - set(args.flags.split())
    for nb in args.notebooks or sorted(Path(cfg.nbs_path).glob('*.ipynb')):
        print(f'executing {nb}')
        execute(nb.absolute(), skip_flags)
