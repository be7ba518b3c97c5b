"""Dataset adaptivity end to end: the specification's configs from the real MNIST and CIFAR-10 profiles, and
`adaptive-cnn train auto --data DATA` on real images in other shapes, formats and class balances."""
import json, os
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from adaptive_cnn.adapt import dataset_config, profile_dataset, suggest_config
from adaptive_cnn.config import load_config
from adaptive_cnn.data import ImageData, load_data, read_mnist_family
from adaptive_cnn.training import Trainer
from adaptive_cnn.runtime import rule_precision
from adaptive_cnn.testing import save_image_folder, save_npz_dataset
from conftest import error_line


@pytest.fixture(scope='module')
def mnist(data_root):
    return read_mnist_family('mnist', data_root, download=False)


@pytest.fixture(scope='module')
def mnist56(data_root):
    "MNIST enlarged to 56×56 by the data layer (`data.image_size`)."
    return load_data(dataset_config('mnist', ['data.image_size=[56,56]']))


def digits(split:ImageData, per_class:dict, seed:int=0) -> ImageData:
    "`per_class[d]` images of each digit d, relabelled 0, 1, ... in the order of `per_class`, shuffled."
    g = torch.Generator().manual_seed(seed)
    parts = [(split.labels == d).nonzero().flatten()[:n] for d, n in per_class.items()]
    x = torch.cat([split.images[i] for i in parts])
    y = torch.cat([torch.full((len(i),), k) for k, i in enumerate(parts)])
    order = torch.randperm(len(y), generator=g)
    return ImageData(x[order], y[order])


def test_the_rules_read_images_not_names(mnist, tmp_path):
    "MNIST written as a .npz file under another name gets the built-in mnist config: no rule looks at the name."
    path = tmp_path/'digits_from_somewhere.npz'
    save_npz_dataset(path, mnist.train, mnist.test, mnist.classes)
    derived, builtin = asdict(suggest_config(profile_dataset(path))), asdict(load_config('mnist'))
    assert derived['data']['dataset'] == str(path)
    for section in ('model', 'augment', 'train'): assert derived[section] == builtin[section], section
    assert {k: v for k, v in derived['data'].items() if k != 'dataset'} == {k: v for k, v in builtin['data'].items() if k != 'dataset'}


def test_overrides_of_the_derived_network_are_checked_against_it(tmp_path, run_cli, data_root):
    code, out, err = run_cli('profile', 'mnist', '--json', '--set', 'model.widths=[16,32,64]', '--set', 'model.stem_channels=16')
    assert code == 0, err                                             # 3 widths fit the 3 derived stages, not the 4 default ones
    assert json.loads(out)['suggested_config']['model']['widths'] == [16, 32, 64]
    code, out, err = run_cli('profile', 'mnist', '--set', 'model.widths=[16,32,64,128]')
    assert code == 2 and 'model.widths, model.depths' in error_line(err)


@pytest.mark.parametrize('name', ['mnist', 'cifar10'])
def test_real_profiles_give_the_specification_configs(name, data_root, run_cli):
    assert asdict(suggest_config(profile_dataset(name))) == asdict(load_config(name))
    code, out, err = run_cli('profile', name, '--json')          # the same through the command line
    assert code == 0, err
    assert json.loads(out)['suggested_config'] == asdict(load_config(name))


def test_train_auto_on_a_56px_png_folder_of_five_digits(mnist56, tmp_path, run_cli):
    folder = tmp_path/'digits56'
    save_image_folder(folder/'train', digits(mnist56.train, {d: 400 for d in range(5)}), list('01234'))
    save_image_folder(folder/'test', digits(mnist56.test, {d: 60 for d in range(5)}), list('01234'))
    code, out, err = run_cli('profile', folder)
    assert code == 0, err
    assert 'plain, light on dark' in out and 'flips         off' in out and 'images        1×56×56' in out
    run = tmp_path/'run'
    code, out, err = run_cli('train', 'auto', '--data', folder, '--set', 'train.epochs=6', '--output-dir', run, '--no-progress')
    assert code == 0, err
    saved = load_config(run/'config.yaml')
    assert saved.data.dataset == str(folder) and saved.data.image_size == [56, 56] and saved.train.epochs == 6
    assert saved.model.stem_pool and len(saved.model.widths) == 4        # 56 → 28 → 28 → 14 → 7 → 4
    assert saved.augment.rotation > 0 and not saved.augment.hflip and saved.augment.autoaugment is None
    assert saved.train.precision == rule_precision(torch.device('cpu'))[0]   # `auto`, resolved for this machine when the run started
    expected = load_config(suggest_config(profile_dataset(folder)), ['train.epochs=6', f'output.dir={json.dumps(str(run))}',
                                                                    f'train.precision={saved.train.precision}'])
    assert asdict(saved) == asdict(expected)
    results = json.loads((run/'results.json').read_text())
    assert results['test_samples'] == 300 and results['test_acc'] > 0.6      # chance: 0.2


def test_imbalanced_npz_gets_class_weights_used_in_the_loss(mnist, tmp_path, run_cli):
    counts = {3: 1500, 5: 400, 8: 150}
    path = tmp_path/'skewed.npz'
    save_npz_dataset(path, digits(mnist.train, counts), digits(mnist.test, {d: 100 for d in counts}), ['three', 'five', 'eight'])
    code, out, err = run_cli('profile', path, '--json')
    assert code == 0, err
    profile = json.loads(out)
    assert profile['imbalance'] == 10.0 and profile['suggested_config']['train']['class_weights'] == 'balanced'
    cfg = load_config(suggest_config(profile_dataset(path)), ['train.epochs=1', f'output.dir={json.dumps(str(tmp_path/"run"))}'])
    trainer = Trainer(cfg, device='cpu', progress=False)
    try:
        weight, counts = trainer.loss_fn.keywords['weight'], torch.tensor(trainer.data.train.class_counts(3), dtype=torch.float)
        assert torch.allclose(weight, counts.sum() / (3 * counts))     # n / (k · n_c) of the training split
        assert weight[2] > 5 * weight[0]                               # the rare eights weigh most
    finally: trainer.close()


def test_train_auto_needs_data_and_names_a_missing_dataset(tmp_path, run_cli):
    code, out, err = run_cli('train', 'auto', '--output-dir', tmp_path/'run')
    assert code == 2 and 'give it with --data DATA' in error_line(err)
    code, out, err = run_cli('train', 'auto', '--data', tmp_path/'nowhere', '--output-dir', tmp_path/'run')
    assert code == 2 and 'nowhere' in error_line(err)
    assert not (tmp_path/'run').exists()
