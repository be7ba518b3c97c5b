"""The choice of best_model.pth on a real short run: what results.json and the log say agrees with the rule applied
afresh to the candidate checkpoints, and best_model.pth is the chosen one."""
import json

import torch

from adaptive_cnn.checkpoint import load_checkpoint, model_from_checkpoint
from adaptive_cnn.config import load_config
from adaptive_cnn.data import load_data
from adaptive_cnn.predict import predict
from adaptive_cnn.training import Candidate, choose_model
from conftest import model_weights

CHANGES = ['train.epochs=2', 'train.batch_size=128', 'train.swa_start=0.5', 'data.train_subset=2000', 'data.val_size=1000']


def test_a_short_mnist_run_keeps_the_model_its_rule_chooses(tmp_path, run_cli, data_root):
    out = tmp_path/'run'
    code, stdout, err = run_cli('train', 'mnist', '--output-dir', out, '--no-progress',
                                *[a for kv in CHANGES for a in ('--set', kv)])
    assert code == 0, err
    results = json.loads((out/'results.json').read_text())
    selection = results['selection']
    files = {kind: c['file'] for kind, c in selection['candidates'].items()}
    assert files == {'best single model': 'best_epoch.pth', 'SWA model': 'swa_model.pth'}, files

    # the rule applied afresh to the two files, on the run's own validation split, gives the same choice and reason
    cfg = load_config(out/'config.yaml')
    data = load_data(cfg)
    candidates = []
    for kind, name in files.items():
        net = model_from_checkpoint(load_checkpoint(out/'checkpoints'/name))[0]
        logits = predict(net, data.val, cfg)
        loss = torch.nn.functional.cross_entropy(logits, data.val.labels).item()
        candidates.append(Candidate(kind, logits.argmax(1) == data.val.labels, loss, kind == 'SWA model'))
        assert abs(candidates[-1].acc - selection['candidates'][kind]['val_acc']) < 1e-9, kind
    chosen, reason = choose_model(candidates)
    assert (chosen.kind, reason) == (selection['chosen'], selection['reason'])
    assert results['best_model'] == chosen.kind and results['val_acc'] == chosen.acc

    # best_model.pth is the chosen file, and the test accuracy is its own
    best, kept = model_weights(out/'checkpoints'/'best_model.pth'), model_weights(out/'checkpoints'/files[chosen.kind])
    assert all(torch.equal(best[k], kept[k]) for k in kept) and best.keys() == kept.keys()
    net = model_from_checkpoint(load_checkpoint(out/'checkpoints'/'best_model.pth'))[0]
    test_acc = (predict(net, data.test, cfg).argmax(1) == data.test.labels).float().mean().item()
    assert abs(test_acc - results['test_acc']) < 1e-6, (test_acc, results['test_acc'])

    # the reason is in the run's last lines; the CLI's last line says the published figure is for another recipe
    assert f'best_model.pth = {reason}' in (out/'train.log').read_text().splitlines()[-2]
    lines = stdout.splitlines()
    assert lines[-2].startswith(f'results in {out}: best_model.pth = {chosen.kind}, val_acc {chosen.acc:.4f}'), lines
    assert lines[-1].endswith('this run changed data.train_subset, data.val_size, train.epochs, train.batch_size, '
                              'train.swa_start, so it is not comparable'), lines[-1]
