"Fine-tuning (`train.init_from`, `train.freeze_epochs`), the EMA of the weights (`train.ema_decay`) and TensorBoard files, on real MNIST."
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from adaptive_cnn.config import load_config
from adaptive_cnn.data import ImageData
from adaptive_cnn.training import Trainer
from adaptive_cnn.checkpoint import load_checkpoint, model_from_checkpoint
from adaptive_cnn.testing import save_npz_dataset
from conftest import error_line

SMALL = ['data.image_size=null', 'data.mean=null', 'data.std=null', 'data.classes=null', 'data.num_classes=null',
         'data.val_size=100', 'train.batch_size=64']


def five_digits(path:Path, test:ImageData, n:int=600) -> Path:
    "Real MNIST test digits of the classes 0-4 only (another number of classes than the pretrained network's), as a .npz."
    keep = torch.nonzero(test.labels < 5).flatten()[:n]
    save_npz_dataset(path, ImageData(test.images[keep], test.labels[keep]), None, [str(c) for c in range(5)])
    return path


def test_init_from_starts_from_the_trained_network(mnist_one_epoch, tmp_path):
    run, _, test = mnist_one_epoch
    data = five_digits(tmp_path/'five.npz', test)
    cfg = load_config('mnist', SMALL + [f'data.dataset={data}', f'train.init_from={run}', 'train.freeze_epochs=1', 'train.epochs=2',
                                        'train.steps_per_epoch=4', 'train.swa_start=null', f'output.dir={tmp_path/"tuned"}'])
    pretrained = load_checkpoint(run/'checkpoints'/'best_model.pth')
    trainer = Trainer(cfg, progress=False)
    weights = lambda: {k: v.clone() for k, v in trainer.model.state_dict().items()}
    start = weights()
    for k, v in pretrained['model'].items():   # every trained weight is there, except the classifier's last layer (10 → 5 classes)
        if not k.startswith('classifier.3.'): assert torch.equal(start[k], v), k
    assert start['classifier.3.weight'].shape == (5, 64)
    trainer.fit(until_epoch=1)
    frozen = weights()
    # the frozen epoch moved the classifier only (BatchNorm statistics still follow the new data)
    for k, v in frozen.items():
        if k.endswith('weight') or k.endswith('bias'):
            assert torch.equal(v, start[k]) == (not k.startswith('classifier.')), k
    trainer.fit(); trainer.close()
    after = weights()
    assert not torch.equal(after['stem.0.0.weight'], frozen['stem.0.0.weight'])
    log = (tmp_path/'tuned'/'train.log').read_text()
    assert f"starting from {run} (" in log and "classifier's last layer made anew for 5 classes (the checkpoint's has 10)" in log
    assert 'freezing the stem and all stages: 8,581 of 709,445 parameters train for 1 epoch' in log, log
    assert 'freeing the stem and all stages: 709,445 of 709,445 parameters train' in log
    saved = yaml.safe_load((tmp_path/'tuned'/'config.yaml').read_text())
    assert saved['model'] == asdict(load_config(run/'config.yaml').model) and saved['data']['num_classes'] == 5


def test_init_from_on_the_command_line(mnist_one_epoch, tmp_path, run_cli):
    run, _, test = mnist_one_epoch
    data = five_digits(tmp_path/'five.npz', test)
    sets = [a for o in SMALL + [f'train.init_from={run}/checkpoints/best_model.pth', 'train.epochs=1', 'train.steps_per_epoch=3']
            for a in ('--set', o)]
    code, out, err = run_cli('train', 'mnist', '--data', str(data), '--no-progress', '--output-dir', str(tmp_path/'cli'), *sets)
    assert code == 0, err
    assert 'made anew for 5 classes' in out
    model, cfg = model_from_checkpoint(load_checkpoint(tmp_path/'cli'/'checkpoints'/'best_model.pth'))
    assert (model.num_classes, cfg.train.init_from) == (5, f'{run}/checkpoints/best_model.pth')
    # a checkpoint that is not there is one line naming the key; freezing without a checkpoint is refused
    code, out, err = run_cli('train', 'mnist', '--output-dir', str(tmp_path/'x'), '--set', f'train.init_from={tmp_path}/nothing.pth')
    assert code != 0 and error_line(err).endswith(f'train.init_from: {tmp_path}/nothing.pth: no such checkpoint file')
    assert not (tmp_path/'x').exists()
    code, out, err = run_cli('train', 'mnist', '--output-dir', str(tmp_path/'x'), '--set', 'train.freeze_epochs=2')
    assert code != 0 and 'train.freeze_epochs = 2 needs train.init_from' in error_line(err)


def test_ema_on_real_mnist(tmp_path, data_root):
    cfg = load_config('mnist', ['data.train_subset=2000', 'data.val_size=500', 'train.epochs=3', 'train.steps_per_epoch=10',
                                'train.batch_size=64', 'train.ema_decay=0.9', 'train.swa_start=null', f'output.dir={tmp_path/"ema"}'])
    first = Trainer(cfg, progress=False)
    first.fit(until_epoch=1); first.close()
    assert int(load_checkpoint(tmp_path/'ema'/'checkpoints'/'last.pth')['ema_model']['n_averaged']) == 10
    trainer = Trainer(cfg, progress=False, resume=True)   # the average continues where it stopped
    results = trainer.fit(); trainer.close()
    assert int(trainer.ema_model.n_averaged) == 30
    history = [json.loads(l) for l in (tmp_path/'ema'/'metrics.jsonl').read_text().splitlines()]
    assert [h['epoch'] for h in history] == [1, 2, 3] and all(0.1 < h['ema_val_acc'] <= 1 for h in history)
    ema = load_checkpoint(tmp_path/'ema'/'checkpoints'/'ema_model.pth')
    assert (ema['kind'], ema['val_acc']) == ('EMA model', history[-1]['ema_val_acc']) == ('EMA model', results['ema_val_acc'])
    # the saved average (weights and BatchNorm statistics) scores on the validation split what it scored during training
    assert trainer.validate(model_from_checkpoint(ema)[0], trainer.data.val)['acc'] == history[-1]['ema_val_acc']
    best = load_checkpoint(tmp_path/'ema'/'checkpoints'/'best_model.pth')
    assert results['best_val_acc'] == max(max(h['val_acc'], h['ema_val_acc']) for h in history)
    # best_model.pth is the candidate the selection chose: the final EMA unless the best epoch leads by more than chance
    chosen = results['selection']['candidates'][results['selection']['chosen']]
    assert best['val_acc'] == chosen['val_acc'] == results['val_acc']
    assert best['kind'] == results['best_model'] and best['kind'] in ('EMA model', 'best single model')
    assert {c['file'] for c in results['selection']['candidates'].values()} == {'best_epoch.pth', 'ema_model.pth'}


def test_tensorboard_files_of_a_real_run(mnist_one_epoch, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run = mnist_one_epoch[0]
    events = EventAccumulator(str(run/'tensorboard')).Reload()
    history = [json.loads(l) for l in (run/'metrics.jsonl').read_text().splitlines()]
    results = json.loads((run/'results.json').read_text())
    scalars = events.Tags()['scalars']
    assert {'loss/train', 'loss/val', 'accuracy/train', 'accuracy/val', 'epoch/lr', 'epoch/images_per_s'} <= set(scalars)
    assert [(e.step, e.value) for e in events.Scalars('accuracy/val')] == [(1, pytest.approx(history[0]['val_acc']))]
    assert events.Scalars('results/test_acc')[0].value == pytest.approx(results['test_acc'])
    assert events.Tags()['images'] == ['training_curves']
    hparams = events.PluginTagToContent('hparams')
    assert '_hparams_/session_start_info' in hparams and b'train.lr' in hparams['_hparams_/session_start_info']
    # switched off, no folder
    cfg = load_config('mnist', ['data.train_subset=500', 'data.val_size=100', 'train.epochs=1', 'train.steps_per_epoch=2',
                                'output.tensorboard=false', f'output.dir={tmp_path/"off"}'])
    trainer = Trainer(cfg, progress=False); trainer.fit(); trainer.close()
    assert (tmp_path/'off'/'results.json').is_file() and not (tmp_path/'off'/'tensorboard').exists()
