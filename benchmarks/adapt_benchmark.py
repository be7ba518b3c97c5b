"""Benchmark of dataset adaptation: the derived config (`train auto`) against the nearest built-in config and a
logistic-regression baseline, each under the same time budget, and the profile's verdicts against the known truth.

    python benchmarks/adapt_benchmark.py DATA_DIR RUNS_DIR [--only NAME ...] [--dry-run] [--results benchmarks/RESULTS.md]

DATA_DIR holds the .npz files and truth.json written by benchmarks/adapt_datasets.py. For each dataset, one after the
other, the script runs `adaptive-cnn train auto`, `adaptive-cnn train <nearest built-in>` with the data fields taken from
the dataset, benchmarks/simple_baseline.py and `adaptive-cnn profile --json`, logs each to RUNS_DIR/NAME/*.log, writes
RUNS_DIR/summary.json and appends a table to the results file.
"""
import argparse, json, os, re, shlex, shutil, subprocess, sys, time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent/'adaptive-cnn')
BASELINE = str(REPO/'benchmarks'/'simple_baseline.py')
# the built-in configs hard-code MNIST/CIFAR-10 values of these; null makes them come from the dataset
DATA_FIELDS_FROM_DATASET = ('image_size', 'channels', 'num_classes', 'classes', 'mean', 'std', 'val_size', 'invert_threshold')
TOO_SMALL = 'is too small for'
SUBSET_RETRIES = 3
TAIL_CHARS = 2000
PROFILED = ('plain_background', 'polarity', 'hflip')


# ---------------------------------------------------------------- commands

def budget_seconds(budget:str) -> float:
    "'90s', '2m', '1h' (or a bare number of seconds) in seconds."
    m = re.fullmatch(r'\s*([\d.]+)\s*([smh]?)\s*', budget)
    if not m: raise ValueError(f'cannot read the budget {budget!r}')
    return float(m[1]) * {'': 1, 's': 1, 'm': 60, 'h': 3600}[m[2]]

def auto_command(data:Path, budget:str, out:Path) -> list[str]:
    return [CLI, 'train', 'auto', '--data', str(data), '--budget', budget, '--output-dir', str(out), '--overwrite', '--no-progress']

def builtin_command(config:str, data:Path, budget:str, out:Path, subset:int|None=None) -> list[str]:
    cmd = [CLI, 'train', config, '--data', str(data), '--budget', budget, '--output-dir', str(out), '--overwrite', '--no-progress']
    for field in DATA_FIELDS_FROM_DATASET: cmd += ['--set', f'data.{field}=null']
    if subset is not None: cmd += ['--set', f'data.train_subset={subset}']
    return cmd

def baseline_command(data:Path, seconds:float, out:Path) -> list[str]:
    return [sys.executable, BASELINE, str(data), '--max-seconds', f'{seconds:g}', '--json', str(out)]

def profile_command(data:Path) -> list[str]:
    return [CLI, 'profile', str(data), '--json']


# ---------------------------------------------------------------- running

@dataclass
class Result:
    "One finished command: what it printed stays in memory for parsing, only the tails go into summary.json."
    command:list[str]
    exit_code:int
    wall_s:float
    stdout:str
    stderr:str
    log:Path

    def record(self) -> dict:
        return dict(command=shlex.join(self.command), exit_code=self.exit_code, wall_s=round(self.wall_s, 1),
                    stdout_tail=self.stdout[-TAIL_CHARS:], stderr_tail=self.stderr[-TAIL_CHARS:], log=str(self.log))

def run_logged(cmd:list[str], log:Path) -> Result:
    "Run `cmd` to completion, timed around the whole command, its full output saved to `log`."
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f'  $ {shlex.join(cmd)}', flush=True)
    start = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - start
    log.write_text(f'$ {shlex.join(cmd)}\n# exit {p.returncode}, {wall:.1f} s\n--- stdout\n{p.stdout}\n--- stderr\n{p.stderr}')
    print(f'    exit {p.returncode}, {wall:.1f} s', flush=True)
    return Result(cmd, p.returncode, wall, p.stdout, p.stderr, log)

def training_record(result:Result, out:Path) -> dict:
    "The run's record with its test accuracy (None unless it succeeded: an older results.json may still be there)."
    rec = result.record()
    results = out/'results.json'
    rec['test_acc'] = json.loads(results.read_text()).get('test_acc') if result.exit_code == 0 and results.exists() else None
    return rec

def suggested_subset(stderr:str) -> int|None:
    "The training subset the budget's 'too small' error suggests, if it names one."
    m = re.search(r'data\.train_subset=(\d+)', stderr)
    return int(m[1]) if m else None

def train_builtin(name:str, truth:dict, data:Path, runs:Path) -> dict:
    "The nearest built-in config under the budget; when it cannot fit one epoch, again on the training subset it suggests."
    out, subset, tries = runs/name/'builtin', None, []
    for attempt in range(SUBSET_RETRIES + 1):
        log = runs/name/('builtin.log' if subset is None else f'builtin_subset{subset}.log')
        result = run_logged(builtin_command(truth['nearest_builtin'], data, truth['budget'], out, subset), log)
        tries.append(result.record())
        if result.exit_code == 0 or TOO_SMALL not in result.stderr or attempt == SUBSET_RETRIES: break
        suggested = suggested_subset(result.stderr)
        # without a usable suggestion, halve: a retry with the same subset would fail the same way
        subset = suggested if suggested and suggested != subset else (subset or truth['num_train']) // 2
    rec = training_record(result, out)
    return dict(rec, config=truth['nearest_builtin'], subset=subset, attempts=len(tries),
                total_wall_s=round(sum(t['wall_s'] for t in tries), 1), failed_attempts=tries[:-1])

def run_baseline(name:str, truth:dict, data:Path, runs:Path) -> dict:
    out = runs/name/'baseline.json'
    if out.exists(): out.unlink()   # a stale file would pass for this run's result
    result = run_logged(baseline_command(data, budget_seconds(truth['budget']), out), runs/name/'baseline.log')
    rec = result.record()
    if result.exit_code == 0 and out.exists():   # wall_s stays the whole command's, as for the training runs
        rec['result'] = json.loads(out.read_text())
        rec['test_acc'] = rec['result']['test_acc']
    return rec

def parse_json_line(stdout:str) -> dict|None:
    "The last line of `stdout` that is a JSON object."
    for line in reversed(stdout.splitlines()):
        if line.startswith('{'):
            try: return json.loads(line)
            except json.JSONDecodeError: pass
    return None

def run_profile(name:str, truth:dict, data:Path, runs:Path) -> dict:
    "The profile's plain_background, polarity and hflip, each compared with the truth."
    result = run_logged(profile_command(data), runs/name/'profile.log')
    rec = result.record()
    profile = parse_json_line(result.stdout) if result.exit_code == 0 else None
    rec['verdicts'] = {k: dict(truth=truth[k], profile=None if profile is None else profile.get(k),
                               right=profile is not None and profile.get(k) == truth[k]) for k in PROFILED}
    return rec

def benchmark_dataset(name:str, truth:dict, data_dir:Path, runs:Path) -> dict:
    "All four runs on one dataset, in turn."
    data = data_dir/truth['file']
    print(f'{name} (budget {truth["budget"]}):', flush=True)
    auto = training_record(run_logged(auto_command(data, truth['budget'], runs/name/'auto'), runs/name/'auto.log'),
                           runs/name/'auto')
    return dict(truth=truth, auto=auto, builtin=train_builtin(name, truth, data, runs),
                baseline=run_baseline(name, truth, data, runs), profile=run_profile(name, truth, data, runs))

def dry_run(names:list[str], truth:dict, data_dir:Path, runs:Path):
    "Print what would run."
    for name in names:
        t, data = truth[name], data_dir/truth[name]['file']
        print(f'# {name} (budget {t["budget"]}, nearest built-in {t["nearest_builtin"]})')
        print(shlex.join(auto_command(data, t['budget'], runs/name/'auto')))
        print(shlex.join(builtin_command(t['nearest_builtin'], data, t['budget'], runs/name/'builtin')))
        print(f'#   if it is {TOO_SMALL}: again with --set data.train_subset=K (K as its message suggests)')
        print(shlex.join(baseline_command(data, budget_seconds(t['budget']), runs/name/'baseline.json')))
        print(shlex.join(profile_command(data)))


# ---------------------------------------------------------------- report

def output_of(cmd:list[str]) -> str:
    try: return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO).stdout.strip()
    except OSError: return ''

def machine() -> str:
    "CPU model and count, and the GPU if there is one."
    try: cpu = next(l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines() if l.startswith('model name'))
    except (OSError, StopIteration): cpu = 'unknown CPU'
    gpu = output_of(['nvidia-smi', '--query-gpu=name', '--format=csv,noheader']) if shutil.which('nvidia-smi') else ''
    return f'{cpu}, {len(os.sched_getaffinity(0))} CPUs (nproc)' + (f'; GPU: {", ".join(gpu.splitlines())}' if gpu else '; no GPU')

def commit() -> str:
    dirty = bool(output_of(['git', 'status', '--porcelain', '--untracked-files=no']))
    return output_of(['git', 'rev-parse', '--short', 'HEAD']) + (' (with uncommitted changes)' if dirty else '')

def acc(rec:dict) -> str:
    return f'{rec["test_acc"]:.4f}' if rec.get('test_acc') is not None else f'failed (exit {rec["exit_code"]})'

def seconds(rec:dict) -> str:
    return f'{rec["wall_s"]:.1f}' if rec['wall_s'] < 10 else f'{rec["wall_s"]:.0f}'

def points(a:dict, b:dict) -> str:
    "a − b in percentage points."
    if a.get('test_acc') is None or b.get('test_acc') is None: return '–'
    return f'{100 * (a["test_acc"] - b["test_acc"]):+.2f}'

def builtin_cell(b:dict) -> str:
    note = b['config'] + (f', subset {b["subset"]}' if b['subset'] is not None else '')
    return f'{acc(b)} ({note})'

def verdict_cell(p:dict) -> str:
    if p['exit_code'] != 0: return f'profile failed (exit {p["exit_code"]})'
    wrong = [k for k, v in p['verdicts'].items() if not v['right']]
    return f'{len(PROFILED) - len(wrong)}/{len(PROFILED)}' + (f' (wrong: {", ".join(wrong)})' if wrong else '')

def truth_line(name:str, r:dict) -> str:
    "The truth of one dataset and what the profile said where it was wrong."
    v = r['profile']['verdicts']
    truth = ', '.join(f'{k}={v[k]["truth"]}' for k in PROFILED)
    wrong = [f'{k}={v[k]["profile"]}' for k in PROFILED if not v[k]['right']]
    if r['profile']['exit_code'] != 0: said = f'profile failed (exit {r["profile"]["exit_code"]})'
    else: said = f'profile said {", ".join(wrong)}' if wrong else 'profile right'
    return f'- {name}: truth {truth}; {said}'

def markdown(summary:dict) -> str:
    "The section appended to the results file."
    rows = ['| dataset | covers | budget | auto test acc | auto wall s | built-in (name) test acc | built-in wall s '
            '| logistic regression test acc | its s | auto − built-in (points) | auto − LR (points) | profile verdicts right? |',
            '|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|']
    for name, r in summary['datasets'].items():
        a, b, lr = r['auto'], r['builtin'], r['baseline']
        rows.append(f'| {name} | {r["truth"]["covers"]} | {r["truth"]["budget"]} | {acc(a)} | {seconds(a)} '
                    f'| {builtin_cell(b)} | {seconds(b)} | {acc(lr)} | {seconds(lr)} '
                    f'| {points(a, b)} | {points(a, lr)} | {verdict_cell(r["profile"])} |')
    return '\n'.join([f'## Adaptation benchmark, {summary["date"]}', '',
                      f'- machine: {summary["machine"]}', f'- commit: {summary["commit"]}', f'- command: `{summary["command"]}`',
                      '- wall s: the whole command, start-up and data loading included; a built-in row marked "subset K" '
                      'could not fit one epoch of the full training set in the budget and was rerun on K images',
                      '', *rows, '', *(truth_line(n, r) for n, r in summary['datasets'].items()), '', ''])


# ---------------------------------------------------------------- main

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('data_dir', metavar='DATA_DIR', type=Path, help='the .npz files and truth.json (benchmarks/adapt_datasets.py)')
    parser.add_argument('runs', metavar='RUNS_DIR', type=Path, help='folder for the runs, logs and summary.json')
    parser.add_argument('--only', nargs='+', metavar='NAME', help='benchmark only these datasets')
    parser.add_argument('--dry-run', action='store_true', help='print the commands without running them')
    parser.add_argument('--results', type=Path, default=REPO/'benchmarks'/'RESULTS.md', help='markdown file the table is appended to')
    args = parser.parse_args(argv)
    data_dir, runs = args.data_dir.resolve(), args.runs.resolve()
    try: truth = json.loads((data_dir/'truth.json').read_text())
    except OSError as e: sys.exit(f'{data_dir/"truth.json"}: {e.strerror}; write the datasets first with benchmarks/adapt_datasets.py')
    unknown = sorted(set(args.only or []) - set(truth))
    if unknown: sys.exit(f'--only: unknown dataset {", ".join(unknown)}; truth.json has {", ".join(truth)}')
    names = [n for n in truth if n in args.only] if args.only else list(truth)
    if args.dry_run: return dry_run(names, truth, data_dir, runs)

    summary = dict(date=datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC'), machine=machine(), commit=commit(),
                   command=shlex.join(['python', *sys.argv]), datasets={})
    runs.mkdir(parents=True, exist_ok=True)
    for name in names:
        summary['datasets'][name] = benchmark_dataset(name, truth[name], data_dir, runs)
        (runs/'summary.json').write_text(json.dumps(summary, indent=1) + '\n')   # after each dataset: a crash keeps the rest
    section = markdown(summary)
    with args.results.open('a') as f: f.write('\n' + section)
    print(f'\n{section}\nappended to {args.results}; summary in {runs/"summary.json"}')

if __name__ == '__main__': main()
