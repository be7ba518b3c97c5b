"""Every result quoted in README.md and the tutorials is one that benchmarks/RESULTS.md (or a stored evaluation report)
records, and the published MNIST figure over seeds is the same everywhere: RESULTS.md, benchmarks/mnist_seeds.json,
the README, and configs/published.json (what `adaptive-cnn train` compares a run with)."""
import json, re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT/'benchmarks'/'RESULTS.md'
SPECIFICATION = {'99.75%': 'MNIST accuracy', '99.99%': 'MNIST top-3 accuracy', '95.55%': 'CIFAR-10 accuracy'}  # quoted
FIGURE = re.compile(r'(?<![\d.,])\d+\.\d+%')                     # a measured percentage: 99.76%, 63.52%, 0.12%


def documents() -> dict[str, str]:
    "README.md, the tutorials and the index notebook's prose."
    docs = {'README.md': (ROOT/'README.md').read_text()}
    docs |= {f'nbs/tutorials/{p.name}': p.read_text() for p in sorted((ROOT/'nbs'/'tutorials').glob('*.md'))}
    index = json.loads((ROOT/'nbs'/'index.ipynb').read_text())
    docs['nbs/index.ipynb'] = '\n'.join(''.join(c['source']) for c in index['cells'] if c['cell_type'] == 'markdown')
    return docs


def recorded() -> str:
    "What a quoted figure may come from: RESULTS.md, and the stored evaluation reports' fractions as percentages."
    text = [RESULTS.read_text()]
    for report in sorted((ROOT/'reports').glob('*/metrics*.json')):
        values = json.loads(report.read_text())
        text += [f'{v:.2%}' for v in values.values() if isinstance(v, float) and 0 <= v <= 1]
    return '\n'.join(text)


def unrecorded(docs:dict[str, str], sources:str) -> list[str]:
    "'file: figure (line)' for every measured percentage in `docs` found in neither `sources` nor the specification."
    found = []
    for name, text in docs.items():
        for line in text.splitlines():
            found += [f'{name}: {f} ({line.strip()[:80]})' for f in FIGURE.findall(line)
                      if f not in sources and f not in SPECIFICATION]
    return found


def test_every_figure_in_the_readme_and_tutorials_is_recorded():
    docs, sources = documents(), recorded()
    assert unrecorded(docs, sources) == []
    # the check bites: a figure changed by 0.01 is caught, in the README and in a tutorial
    changed = {'README.md': docs['README.md'].replace('63.52%', '63.53%', 1) + '\nreached 99.81% on MNIST\n'}
    assert [m.split(' (')[0] for m in unrecorded(changed, sources)] == ['README.md: 99.81%']
    tutorial = 'nbs/tutorials/cifar10_two_gpus.md'
    assert unrecorded({tutorial: docs[tutorial].replace('63.52%', '63.53%')}, sources)[0].startswith(f'{tutorial}: 63.53%')


def test_the_published_mnist_figure_is_the_same_everywhere():
    seeds = json.loads((ROOT/'benchmarks'/'mnist_seeds.json').read_text())
    s = seeds['summary']['best_model.pth']
    published = json.loads((ROOT/'adaptive_cnn'/'configs'/'published.json').read_text())['mnist']['test_acc']
    assert published == dict(mean=s['mean'], std=s['std'], min=s['min'], max=s['max'], seeds=s['n'])
    assert len(seeds['runs']) == s['n'] >= 3
    runs = [r['candidates']['best_model.pth']['test_acc'] for r in seeds['runs'].values()]
    assert abs(sum(runs) / len(runs) - s['mean']) < 1e-12
    figure = f"{s['mean']:.2%} ± {s['std']:.2%}"
    results = RESULTS.read_text()
    assert f"**best_model.pth: {figure}** (min {s['min']:.2%}, max {s['max']:.2%}) over {s['n']} seeds" in results
    readme = (ROOT/'README.md').read_text()
    assert f"**{figure}** (mean ± std over {s['n']} seeds" in readme
    tutorial = (ROOT/'nbs'/'tutorials'/'train_mnist.md').read_text()
    assert f"{figure} over {s['n']} seeds" in tutorial
