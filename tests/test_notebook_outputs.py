"""tools/check_notebook_outputs.py: the size limit on stored notebook outputs, on synthetic notebooks."""
import base64, importlib.util, json
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location('check_notebook_outputs', ROOT/'tools'/'check_notebook_outputs.py')
check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(check)


def _notebook(path:Path, image_bytes:int=0, lines:int=0) -> Path:
    "A notebook with a markdown cell, a code cell without outputs, and one showing a PNG and printing `lines` lines."
    nb = nbformat.v4.new_notebook()
    shown = nbformat.v4.new_code_cell('plot(); print(text)')
    if image_bytes:
        png = base64.b64encode(b'\x89PNG' + bytes(image_bytes)).decode()
        shown.outputs.append(nbformat.v4.new_output('display_data', data={'image/png': png, 'text/plain': '<Figure>'}))
    if lines:
        text = ''.join(f'line {i}\n' for i in range(lines))
        shown.outputs.append(nbformat.v4.new_output('stream', name='stdout', text=text))
    nb.cells = [nbformat.v4.new_markdown_cell('# A notebook'), nbformat.v4.new_code_cell('x = 1'), shown]
    nbformat.write(nb, path)
    return path


def test_output_bytes_counts_the_outputs_only(tmp_path):
    empty = _notebook(tmp_path/'empty.ipynb')
    assert check.output_bytes(empty) == 0
    with_image = _notebook(tmp_path/'image.ipynb', image_bytes=30_000)
    size = check.output_bytes(with_image)
    assert 40_000 < size < 41_000, size                          # 30,004 bytes are 40,008 characters of base64
    nb = json.loads(with_image.read_text())
    assert size == len(json.dumps(nb['cells'][2]['outputs'], separators=(',', ':')))
    assert check.output_bytes(_notebook(tmp_path/'text.ipynb', lines=1000)) > 8_000


def test_a_notebook_under_the_limit_passes(tmp_path, capsys):
    small = _notebook(tmp_path/'small.ipynb', image_bytes=20_000)
    smaller = _notebook(tmp_path/'smaller.ipynb', lines=10)
    assert check.main([small, smaller]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1, out                                    # one summary line
    assert '2 notebooks within 300,000 bytes each' in out[0] and 'small.ipynb' in out[0], out
    assert f'({check.output_bytes(small):,} bytes)' in out[0], out


def test_a_notebook_over_the_limit_fails_naming_it(tmp_path, capsys):
    small = _notebook(tmp_path/'small.ipynb', image_bytes=20_000)
    big = _notebook(tmp_path/'big.ipynb', image_bytes=250_000)   # about 333 KB of base64
    wordy = _notebook(tmp_path/'wordy.ipynb', lines=40_000)
    assert check.LIMIT == 300_000
    assert check.main([small, big, wordy]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2, out                                    # one line per offender, nothing about small.ipynb
    for line, path in zip(out, (big, wordy)):
        assert line.startswith(f'{path}: stored outputs are {check.output_bytes(path):,} bytes'), line
        assert 'over the limit of 300,000 bytes' in line and 'smaller figures' in line and 'fewer lines' in line, line


def test_the_limit_can_be_given(tmp_path, capsys):
    nb = _notebook(tmp_path/'a.ipynb', lines=100)
    assert check.main([nb], limit=100) == 1
    assert check.main([nb], limit=check.output_bytes(nb)) == 0


def test_an_unreadable_notebook_fails(tmp_path, capsys):
    broken = tmp_path/'broken.ipynb'
    broken.write_text('{"cells": [')
    assert check.main([broken]) == 1
    assert capsys.readouterr().out.startswith(f'{broken}: not a readable notebook (JSONDecodeError')


def test_default_notebooks():
    found = check.default_notebooks()
    assert ROOT/'nbs'/'13_interpret.ipynb' in found and ROOT/'nbs'/'train.ipynb' in found
    assert all(p.suffix == '.ipynb' for p in found)


def test_the_papermill_template_is_stored_without_outputs():
    "papermill writes the executed copy elsewhere (`papermill nbs/train.ipynb out.ipynb`); the template stays clean."
    path = ROOT/'nbs'/'train.ipynb'
    assert check.output_bytes(path) == 0
    nb = json.loads(path.read_text())
    code = [c for c in nb['cells'] if c['cell_type'] == 'code']
    assert all(c['execution_count'] is None for c in code)
    assert [c for c in code if 'parameters' in c['metadata'].get('tags', [])], 'papermill needs the parameters cell'


@pytest.mark.parametrize('args', [[], None])
def test_main_without_paths_checks_the_repository_notebooks(monkeypatch, capsys, args):
    seen = []
    monkeypatch.setattr(check, 'output_bytes', lambda p: seen.append(p) or 0)
    assert check.main(args) == 0
    assert seen == check.default_notebooks()
