"""The built-in MNIST recipe over several seeds: the test accuracy of best_model.pth, of the SWA model and of the best
epoch, as mean, standard deviation, minimum and maximum.

Each seed is a real `adaptive-cnn train mnist --set train.seed=S` run (the full recipe, 50 epochs), one after another;
a seed whose run already finished is read back, one stopped half-way is resumed. Afterwards every candidate checkpoint
of every run is scored image by image on its run's validation and test splits; `--json` keeps those per-image
results (packed bits) with each run's choice, so that the training notebook can show how often each selection rule
keeps the model that is better on the test set.

    ADAPTIVE_CNN_DATA=../shared/data nohup python benchmarks/mnist_seeds.py --seeds 1 2 3 --runs /tmp/seeds \\
        --json benchmarks/mnist_seeds.json --markdown benchmarks/RESULTS.md > /tmp/seeds.log 2>&1 &

`--keep benchmarks/mnist_seeds.json` adds the seeds of an earlier `--json` that are not run again, as they were scored
then: a summary can grow by more seeds, or survive the loss of old run folders.
"""
import argparse, base64, datetime, json, os, statistics, subprocess, sys, time
from pathlib import Path

import numpy as np
import torch

from adaptive_cnn.checkpoint import load_checkpoint, model_from_checkpoint
from adaptive_cnn.config import config_from_dict
from adaptive_cnn.data import load_data
from adaptive_cnn.predict import predict
from adaptive_cnn.runtime import cpu_name

FILES = ('best_model.pth', 'swa_model.pth', 'best_epoch.pth', 'ema_model.pth')


def train(seed:int, out:Path, extra:list[str]) -> float:
    "Run (or resume, or read back) the recipe for `seed` in `out`; the wall time of this call."
    if (out/'results.json').is_file(): return 0.0
    resume = ['--resume'] if (out/'checkpoints'/'last.pth').is_file() else []
    cmd = [sys.executable, '-m', 'adaptive_cnn', 'train', 'mnist', '--output-dir', str(out), '--no-progress',
           '--set', f'train.seed={seed}', *resume, *extra]
    print('$', ' '.join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def bits(correct:torch.Tensor) -> str:
    "Per-image correctness as base64 of packed bits."
    return base64.b64encode(np.packbits(correct.numpy()).tobytes()).decode()


def score(out:Path) -> dict:
    "Each candidate checkpoint of the run in `out`: its kind, per-image correctness and accuracy on validation and test."
    state = load_checkpoint(out/'checkpoints'/'best_model.pth')
    cfg = config_from_dict(state['config'])
    data = load_data(cfg)                           # the run's own seed: its own validation split
    scored = {}
    for name in FILES:
        path = out/'checkpoints'/name
        if not path.is_file(): continue
        ckpt = load_checkpoint(path)
        net = model_from_checkpoint(ckpt)[0]
        row = dict(kind=ckpt['kind'], epoch=ckpt['epoch'])
        for split in ('val', 'test'):
            part = getattr(data, split)
            correct = predict(net, part, cfg, 'cpu', 1024).argmax(1) == part.labels
            row |= {f'{split}_acc': int(correct.sum()) / len(correct), f'{split}_bits': bits(correct),
                    f'{split}_n': len(correct)}
        scored[name] = row
    return scored


def spread(xs:list[float]) -> dict:
    return dict(mean=statistics.mean(xs), std=statistics.stdev(xs) if len(xs) > 1 else 0.0, min=min(xs), max=max(xs),
                n=len(xs))


def summary(runs:dict) -> dict:
    "mean, std, min, max of the test accuracy of best_model.pth, the SWA model and the best epoch."
    out = {}
    for name in ('best_model.pth', 'swa_model.pth', 'best_epoch.pth'):
        xs = [r['candidates'][name]['test_acc'] for r in runs.values() if name in r['candidates']]
        if xs: out[name] = spread(xs)
    return out


def markdown(result:dict, command:str) -> str:
    rows = []
    for seed, r in result['runs'].items():
        c = r['candidates']
        rows.append(f"| {seed} | {r['machine']} | {c['best_model.pth']['kind']} | {c['best_model.pth']['test_acc']:.2%} | "
                    f"{c['swa_model.pth']['test_acc']:.2%} | {c['best_epoch.pth']['test_acc']:.2%} | "
                    f"{r['train_wall_s'] / 60:.1f} min | {r['reason']} |")
    s = result['summary']
    figure = lambda k: f"{s[k]['mean']:.2%} ± {s[k]['std']:.2%}"
    extremes = lambda k: f"(min {s[k]['min']:.2%}, max {s[k]['max']:.2%})"
    return '\n'.join([
        f"## MNIST, the full built-in recipe over {len(result['runs'])} seeds on CPU, {result['date']}", '',
        f"- machines: {result['machine']} (per seed below); {os.cpu_count()} cores; torch {torch.__version__}",
        f"- command: `{command}`",
        f"- each seed: `adaptive-cnn train mnist --set train.seed=S --no-progress` (50 epochs, SWA from epoch 38);"
        " best_model.pth chosen by `choose_model` (the average unless another is more accurate by more than chance)",
        '', '| seed | machine | best_model.pth | its test accuracy | SWA model | best epoch | training time | reason |',
        '|---|---|---|---|---|---|---|---|', *rows, '',
        f"- **best_model.pth: {figure('best_model.pth')}** {extremes('best_model.pth')} over {s['best_model.pth']['n']} "
        'seeds (mean ± sample standard deviation of the test accuracy, 10,000 test images)',
        f"- SWA model: {figure('swa_model.pth')} {extremes('swa_model.pth')}",
        f"- best epoch: {figure('best_epoch.pth')} {extremes('best_epoch.pth')}", ''])


def kept(path:Path, seeds:list[int], overrides:list[str]) -> dict:
    "The runs of an earlier `--json` whose seeds are not being run now; they must have had the same overrides."
    earlier = json.loads(path.read_text())
    if earlier['overrides'] != overrides:
        sys.exit(f"{path}: made with --set {earlier['overrides']}, not {overrides}; its runs are another recipe")
    return {k: {'machine': earlier['machine']} | r for k, r in earlier['runs'].items() if int(k) not in seeds}


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--seeds', type=int, nargs='+', default=[1, 2, 3])
    p.add_argument('--runs', type=Path, default=Path('/tmp/mnist_seeds'), help='one run folder per seed is made here')
    p.add_argument('--json', type=Path, help='write per-seed results and per-image correctness here')
    p.add_argument('--markdown', type=Path, help='append the summary to this file (benchmarks/RESULTS.md)')
    p.add_argument('--publish', type=Path, help="write best_model.pth's figures here (adaptive_cnn/configs/published.json)")
    p.add_argument('--set', action='append', default=[], help='extra config overrides (a dry run: train.epochs=1)')
    p.add_argument('--keep', type=Path, help='an earlier --json: its seeds that are not in --seeds join the summary as '
                   'they were scored then (their run folders may be gone)')
    args = p.parse_args()
    extra = [a for kv in args.set for a in ('--set', kv)]
    runs = kept(args.keep, args.seeds, args.set) if args.keep else {}
    for seed in args.seeds:
        out = args.runs/f'seed{seed}'
        wall = train(seed, out, extra)
        results = json.loads((out/'results.json').read_text())
        runs[str(seed)] = dict(machine=cpu_name(), results=results, reason=results['selection']['reason'],
                               train_wall_s=results['train_wall_s'], call_wall_s=wall, candidates=score(out))
        c = runs[str(seed)]['candidates']
        # the scores read back agree with what the run saw
        assert abs(c['best_model.pth']['test_acc'] - results['test_acc']) < 1e-9, (c['best_model.pth'], results)
        print(f"seed {seed}: best_model.pth = {results['best_model']} ({c['best_model.pth']['test_acc']:.4f}); " +
              ', '.join(f"{n} {r['test_acc']:.4f}" for n, r in c.items()), flush=True)
    runs = dict(sorted(runs.items(), key=lambda kv: int(kv[0])))
    machines = ' / '.join(sorted({r['machine'] for r in runs.values()}))
    result = dict(date=datetime.date.today().isoformat(), machine=machines, seeds=[int(k) for k in runs],
                  overrides=args.set, runs=runs, summary=summary(runs))
    print(json.dumps(result['summary'], indent=1))
    command = 'python ' + ' '.join(sys.argv)
    if args.json: args.json.write_text(json.dumps(result, indent=1) + '\n')
    if args.publish:
        b = result['summary']['best_model.pth']
        published = json.loads(args.publish.read_text()) if args.publish.is_file() else {}
        published['mnist'] = dict(test_acc=dict(mean=b['mean'], std=b['std'], min=b['min'], max=b['max'], seeds=b['n']),
                                  date=result['date'], machine=result['machine'], source='benchmarks/RESULTS.md')
        args.publish.write_text(json.dumps(published, indent=1) + '\n')
    if args.markdown:
        with open(args.markdown, 'a') as f: f.write('\n' + markdown(result, command))


if __name__ == '__main__': main()
