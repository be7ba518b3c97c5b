"""The package's import graph against the layering described at the top of nbs/index.ipynb; and what the lighter
commands leave unimported."""
import ast, json, re, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT/'adaptive_cnn'


def layering(index:Path=ROOT/'nbs'/'index.ipynb') -> tuple[dict[str, int], dict[str, set[str]]]:
    "(module → layer, module → modules it may not import although they are lower) from the numbered list in `index`."
    text = '\n'.join(''.join(c['source']) for c in json.loads(index.read_text())['cells'] if c['cell_type'] == 'markdown')
    section = text.split('## How the code is layered', 1)[1].split('\n## ', 1)[0]
    layers, forbidden = {}, {}
    for number, rest in re.findall(r'^(\d+)\. (.*)$', section, re.M):
        names, _, description = rest.partition(':')
        for name in re.findall(r'`(\w+)`', names):
            layers[name] = int(number)
            forbidden[name] = set(re.findall(r'none of them imports `(\w+)`', description))
    return layers, forbidden


def package_imports(path:Path) -> set[str]:
    "The modules of the package that `path` imports, at the top or inside functions."
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module: found.add(node.module.split('.')[0])
            elif node.level == 1: found.update(a.name for a in node.names)
            elif node.module and node.module.startswith('adaptive_cnn.'): found.add(node.module.split('.')[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split('.')[1] for a in node.names if a.name.startswith('adaptive_cnn.'))
    return found


def modules() -> list[str]:
    return sorted(p.stem for p in PACKAGE.glob('*.py') if p.stem not in ('__init__', '_modidx'))


def test_every_module_has_one_layer():
    layers, _ = layering()
    assert sorted(layers) == modules()
    assert sorted(set(layers.values())) == list(range(1, max(layers.values()) + 1))


@pytest.mark.parametrize('module', modules())
def test_imports_go_down_the_layers(module):
    layers, forbidden = layering()
    for imported in package_imports(PACKAGE/f'{module}.py'):
        assert layers[imported] < layers[module], f'{module} (layer {layers[module]}) imports {imported} (layer {layers[imported]})'
        assert imported not in forbidden[module], f'{module} imports {imported}, which the layering rules out'


def test_the_check_catches_a_detour(tmp_path):
    "The parser sees imports inside functions and relative ones; the layering refuses an upward or sideways import."
    (tmp_path/'m.py').write_text('from .config import Config\ndef f():\n    from adaptive_cnn.training import Trainer\n'
                                 'import adaptive_cnn.cli\nfrom . import data\n')
    assert package_imports(tmp_path/'m.py') == {'config', 'training', 'cli', 'data'}
    layers, forbidden = layering()
    assert layers['training'] > layers['checkpoint'] and layers['predict'] == layers['checkpoint']
    assert forbidden['evaluation'] == forbidden['inference'] == {'training'} and not forbidden['training']


LIGHT = '''
import sys
from adaptive_cnn.cli import main
code = main(sys.argv[1:])
heavy = [m for m in ('sklearn', 'adaptive_cnn.training', 'adaptive_cnn.budget', 'adaptive_cnn.evaluation') if m in sys.modules]
print('HEAVY', heavy)
sys.exit(code)
'''


def untrained_checkpoint(folder:Path, dataset:Path) -> Path:
    "A checkpoint of an untrained MNIST-sized network for `dataset`, with the data settings a run would save."
    import torch
    from dataclasses import asdict, replace
    from adaptive_cnn.config import load_config
    from adaptive_cnn.models import AdaptiveCNN
    from adaptive_cnn.checkpoint import save_checkpoint
    cfg = load_config('mnist')
    cfg = replace(cfg, data=replace(cfg.data, dataset=str(dataset), classes=[str(i) for i in range(10)], num_classes=10, channels=1,
                                    image_size=[28, 28], mean=[0.13], std=[0.31], val_size=10))
    state = dict(model=AdaptiveCNN.from_config(cfg).state_dict(), config=asdict(cfg), classes=cfg.data.classes,
                 kind='best single model', val_acc=0.1, epoch=1)
    save_checkpoint(state, folder/'model.pth')
    return folder/'model.pth'


def test_test_and_export_load_neither_scikit_learn_nor_the_trainer(tmp_path):
    from PIL import Image
    import numpy as np
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (40, 28, 28), dtype=np.uint8), np.arange(40) % 10
    np.savez(tmp_path/'digits.npz', x=x, y=y, x_test=x[:20], y_test=y[:20])   # its own test split
    ckpt = untrained_checkpoint(tmp_path, tmp_path/'digits.npz')
    Image.fromarray(x[0]).save(tmp_path/'digit.png')
    run = lambda *args: subprocess.run([sys.executable, '-c', LIGHT, *map(str, args)], capture_output=True, text=True,
                                       timeout=300, cwd=tmp_path)
    test = run('test', ckpt, tmp_path/'digit.png')
    assert test.returncode == 0, test.stderr
    assert 'digit.png: ' in test.stdout and 'HEAVY []' in test.stdout, test.stdout
    export = run('export', ckpt, '--format', 'torchscript', '--out', tmp_path/'model.pt')
    assert export.returncode == 0, export.stderr
    assert 'against PyTorch on 20 test images' in export.stdout and 'HEAVY []' in export.stdout, export.stdout
    # the check sees them where they are loaded: evaluation computes its metrics with scikit-learn
    evaluate = run('evaluate', ckpt, '--output-dir', tmp_path/'evaluation')
    assert evaluate.returncode == 0, evaluate.stderr
    assert "HEAVY ['sklearn', 'adaptive_cnn.evaluation']" in evaluate.stdout, evaluate.stdout
