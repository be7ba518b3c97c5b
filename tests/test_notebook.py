"""nbs/train.ipynb through papermill: a CIFAR-10 smoke run with parameters, and failures that fail the notebook."""
import json, os, subprocess, sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).parents[1]/'nbs'/'train.ipynb'


def papermill(out_nb:Path, *params) -> subprocess.CompletedProcess:
    if not os.environ.get('ADAPTIVE_CNN_DATA'): pytest.fail('set ADAPTIVE_CNN_DATA to the folder holding the real datasets')
    args = [a for name, value in params for a in ('-p', name, value)]
    return subprocess.run([sys.executable, '-m', 'papermill', str(NOTEBOOK), str(out_nb), '--cwd', str(out_nb.parent), *args],
                          capture_output=True, text=True, timeout=1200)


def outputs_text(nb_path:Path) -> str:
    nb = json.loads(nb_path.read_text())
    return '\n'.join(''.join(o.get('text', '')) + ''.join(o.get('data', {}).get('text/markdown', '')) + ''.join(o.get('traceback', []))
                     for c in nb['cells'] if c['cell_type'] == 'code' for o in c.get('outputs', []))


def test_cifar10_smoke_run_with_parameters(tmp_path):
    run = tmp_path/'run'
    # the notebook's plumbing with CIFAR-10's data and recipe; a narrower network keeps the CPU run short (the full
    # network is built and counted in 04_models and test_cli; training it is the same code at any width)
    small = ["data.train_subset=2000", "data.val_size=1000", "model.stem_channels=16", "model.widths=[16,32,64,128]",
             "model.classifier_hidden=64"]
    proc = papermill(tmp_path/'out.ipynb', ('epochs', '1'), ('num_procs', '1'), ('dataset', 'cifar10'),
                     ('overrides', json.dumps(small)), ('output_dir', str(run)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = outputs_text(tmp_path/'out.ipynb')
    assert 'epoch   1/1' in text and '| accuracy |' in text and '| airplane |' in text
    assert (run/'checkpoints'/'best_model.pth').is_file() and (run/'evaluation'/'report.md').is_file()
    env = json.loads((run/'environment.json').read_text())
    assert (env['processes'], env['backend']) == (1, 'gloo')
    history = [json.loads(l) for l in (run/'metrics.jsonl').read_text().splitlines()]
    assert [h['train_samples'] for h in history] == [2000]
    nb = json.loads((tmp_path/'out.ipynb').read_text())
    images = sum('image/png' in o.get('data', {}) for c in nb['cells'] for o in c.get('outputs', []))
    assert images >= 3                                          # curves, confusion matrix, Grad-CAM


@pytest.mark.parametrize('override, message', [
    ('train.lr=-1', 'train.lr = -1 is out of range'),            # refused by the config loader in the notebook
    ('train.precision=fp16', 'fp16 needs a CUDA GPU'),           # refused by the training processes
])
def test_a_failing_run_fails_the_notebook_with_the_error_in_it(tmp_path, override, message):
    proc = papermill(tmp_path/'out.ipynb', ('overrides', json.dumps(['data.train_subset=500', override])),
                     ('output_dir', str(tmp_path/'run')))
    assert proc.returncode != 0
    assert message in outputs_text(tmp_path/'out.ipynb')


def test_a_time_budget_through_papermill(tmp_path):
    "`-p budget 30s`: the training command plans the run (one process), and the notebook evaluates the planned run."
    run = tmp_path/'run'
    proc = papermill(tmp_path/'out.ipynb', ('budget', '30s'), ('output_dir', str(run)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = outputs_text(tmp_path/'out.ipynb')
    assert '# predicted wall time:' in text and 'time budget 30s: predicted' in text and '| accuracy |' in text
    plan = json.loads((run/'budget.json').read_text())
    assert plan['predicted_s'] <= 30 and plan['actual_s'] is not None
    assert (run/'evaluation'/'report.md').is_file()
