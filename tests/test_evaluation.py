"""`adaptive-cnn evaluate` on a model trained on real MNIST (files, metrics against scikit-learn, a run folder) and on a
model of the MNIST network trained on synthetic images (TTA, errors)."""
import importlib.util, json, os

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn import metrics as skm

from adaptive_cnn.data import load_data
from adaptive_cnn.evaluation import FIGURES, SUMMARY_KEYS
from adaptive_cnn.predict import predict, tta_views
from adaptive_cnn.checkpoint import load_checkpoint, model_from_checkpoint
from conftest import error_line


def test_evaluate_writes_metrics_figures_and_report(mnist_one_epoch, run_cli):
    run, cfg, _ = mnist_one_epoch
    ckpt = run/'checkpoints'/'best_model.pth'
    code, out, err = run_cli('evaluate', 'mnist', ckpt)
    assert code == 0, err
    folder = run/'evaluation'                                   # next to the checkpoint's run by default
    tensorboard = ['tensorboard'] if importlib.util.find_spec('tensorboard') else []   # the figures and metrics as events too
    assert sorted(p.name for p in folder.iterdir()) == sorted(['metrics.json', 'report.md', *FIGURES.values(), *tensorboard])
    for name in FIGURES.values():
        with Image.open(folder/name) as im: assert im.width >= 400 and im.height >= 250, name
    m = json.loads((folder/'metrics.json').read_text())
    assert set(SUMMARY_KEYS) | {'per_class', 'confusion_matrix'} <= set(m)
    assert m['samples'] == 10_000 and m['tta'] is False
    results = json.loads((run/'results.json').read_text())
    assert abs(m['accuracy'] - results['test_acc']) < 1e-9      # the same model, the same test split
    assert f'test accuracy: {m["accuracy"]:.4f}' in out and 'precision_macro' in out
    report = (folder/'report.md').read_text()
    assert all(f'({name})' in report for name in FIGURES.values()) and f'| accuracy | {m["accuracy"]:.4f} |' in report

    # every number agrees with scikit-learn on the predictions, recomputed independently from the checkpoint
    model, _ = model_from_checkpoint(load_checkpoint(ckpt))
    ds = load_data(cfg)
    logits = predict(model, ds.test, cfg, batch_size=1024)
    probs = logits.double().softmax(1).numpy()
    y = ds.test.labels.numpy(); pred = logits.argmax(1).numpy()
    assert m['accuracy'] == skm.accuracy_score(y, pred)
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, average='macro', zero_division=0)
    assert abs(m['precision_macro'] - p) < 1e-9 and abs(m['recall_macro'] - r) < 1e-9 and abs(m['f1_macro'] - f) < 1e-9
    assert abs(m['top3_accuracy'] - skm.top_k_accuracy_score(y, probs, k=3)) < 2e-4      # ties of bf16 logits aside
    assert abs(m['auc_macro'] - skm.roc_auc_score(y, probs, multi_class='ovr')) < 1e-6
    assert abs(m['nll'] - skm.log_loss(y, probs)) < 1e-5
    assert m['confusion_matrix'] == skm.confusion_matrix(y, pred).tolist()
    assert [v['support'] for v in m['per_class'].values()] == np.bincount(y).tolist()


def test_tta_averages_the_views_softmax(tiny_mnist, run_cli, tmp_path):
    run, cfg, _ = tiny_mnist
    ckpt = run/'checkpoints'/'best_model.pth'
    code, out, err = run_cli('evaluate', 'mnist', ckpt, '--tta', '--output-dir', tmp_path)
    assert code == 0, err
    m = json.loads((tmp_path/'evaluation_tta'/'metrics.json').read_text())
    assert m['tta'] is True and m['tta_views'] == 5                # shifts only: digits are never mirrored
    assert 'with TTA' in out
    # the average of the views' probabilities, view by view
    model, _ = model_from_checkpoint(load_checkpoint(ckpt))
    ds = load_data(cfg)
    images = ds.test[torch.arange(64)]
    averaged = predict(model, images, cfg, tta=True)
    fill = round(255 * cfg.data.mean[0])
    by_hand = 0
    for dy, dx, mirror in tta_views(cfg.augment):
        moved = torch.full_like(images.images, fill)
        h, w = moved.shape[-2:]
        moved[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = images.images[..., max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
        from adaptive_cnn.data import ImageData
        by_hand = by_hand + predict(model, ImageData(moved, images.labels), cfg).softmax(1)
    torch.testing.assert_close(averaged, by_hand / 5, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(averaged, predict(model, images, cfg, softmax=True), atol=1e-3)   # the views do change something


def test_evaluate_with_another_architecture_names_the_layer(tiny_mnist, run_cli, tmp_path):
    run, _, _ = tiny_mnist
    code, out, err = run_cli('evaluate', 'mnist', run/'checkpoints'/'best_model.pth', '--set', 'model.classifier_hidden=32',
                             '--output-dir', tmp_path)
    assert code == 2 and 'classifier.0.weight has shape [64, 128] in the checkpoint but [32, 128] in the model' in error_line(err)
    assert not (tmp_path/'evaluation').exists()                 # nothing written


def test_evaluate_refuses_unsafe_and_missing_checkpoints(run_cli, tmp_path):
    code, out, err = run_cli('evaluate', 'mnist', tmp_path/'nope.pth')
    assert code == 2 and 'nope.pth: no such checkpoint file' in error_line(err)
    class Boom:
        def __reduce__(self): return (os.system, (f'touch {tmp_path}/pwned',))
    torch.save({'model': Boom(), 'config': {}}, tmp_path/'evil.pth')
    code, out, err = run_cli('evaluate', 'mnist', tmp_path/'evil.pth')
    assert code == 2 and 'could run code' in error_line(err)
    assert not (tmp_path/'pwned').exists()


def test_evaluate_a_run_folder_with_its_own_config(mnist_one_epoch, run_cli, tmp_path):
    run, _, _ = mnist_one_epoch
    code, out, err = run_cli('evaluate', run, '--output-dir', tmp_path/'short')                  # no CONFIG
    assert code == 0, err
    code, out, err = run_cli('evaluate', 'mnist', run/'checkpoints'/'best_model.pth', '--output-dir', tmp_path/'long')
    assert code == 0, err
    short, long = (json.loads((tmp_path/f/'evaluation'/'metrics.json').read_text()) for f in ('short', 'long'))
    assert short['samples'] == long['samples'] == 10_000
    assert short['accuracy'] == long['accuracy'] > 0.5 and short['confusion_matrix'] == long['confusion_matrix']


def test_print_config_prints_the_resolved_yaml_and_does_nothing_else(mnist_one_epoch, run_cli, tmp_path):
    import yaml
    from dataclasses import asdict
    from adaptive_cnn.config import load_config
    run, _, _ = mnist_one_epoch
    before = sorted(p.relative_to(run) for p in run.rglob('*'))
    code, out, err = run_cli('evaluate', run, '--print-config', '--set', 'train.seed=7')
    assert code == 0 and err == '', err
    printed, saved = yaml.safe_load(out), asdict(load_config(run/'config.yaml'))
    assert printed['model'] == saved['model'] and printed['data']['train_subset'] == saved['data']['train_subset'] == 3000
    assert printed['train']['seed'] == 7                                                  # the overrides are applied
    assert sorted(p.relative_to(run) for p in run.rglob('*')) == before                   # nothing evaluated or written
    code, out, err = run_cli('train', 'mnist', '--print_config', '--set', 'train.epochs=3', '--output-dir', tmp_path/'never')
    assert code == 0 and yaml.safe_load(out)['train']['epochs'] == 3 and not (tmp_path/'never').exists()
