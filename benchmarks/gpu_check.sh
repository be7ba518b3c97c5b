#!/usr/bin/env bash
# One-GPU check (H100/H200), about 5 minutes: training throughput of the cifar10 and mnist configs
# (benchmarks/train_throughput.py, end-to-end Trainer step vs model alone, precision/channels_last variants) and the
# MNIST built-in recipe trained end to end on real MNIST under a wall-clock limit.
#
#   benchmarks/gpu_check.sh             # from the repo root, MNIST in data/MNIST/raw/*.gz (git-ignored, carried)
#   benchmarks/gpu_check.sh --dry-run   # the same steps on the CPU with tiny settings (or DRY_RUN=1)
#
# No install and no network: the repo goes on PYTHONPATH (the package imports without nbdev/fastcore);
# PIP_INSTALL=1 installs it instead with `pip install --no-deps --no-build-isolation -e .`.
# Results go to $OUT (default ./gpu_out): gpu_check.txt (everything, written as it runs), gpu_check.json, and the
# MNIST run's train.log, metrics.jsonl and results.json as mnist_*. The run itself (checkpoints included) stays in
# $MNIST_RUN_DIR (default: a temporary folder), so that $OUT holds few, small files.
#
# Environment: OUT, PYTHON (default .venv/bin/python if present, else python3), ADAPTIVE_CNN_DATA (default ./data),
# MNIST_TIMEOUT (s, default 240), TP_TIMEOUT (s per throughput run, default 120), TP_STEPS / TP_WARMUP (default
# 50 / 10), COMPILE=1 to also measure train.compile=true (compiling takes minutes: over the 5-minute budget),
# COMPILE_TIMEOUT (s per compiled run, default 300), MNIST_RUN_DIR, KEEP_WORK=1 (keep the scratch folder),
# PIP_INSTALL=1, DRY_RUN=1.
# A failing or timed-out step is recorded and the next one runs; the exit status is 1 if any step failed.
set -euo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=${DRY_RUN:-0}
for arg in "$@"; do
  case $arg in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

OUT=${OUT:-./gpu_out}
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
[ "${KEEP_WORK:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT   # scratch: step list, throughput JSON, the MNIST run by default
MNIST_RUN_DIR=${MNIST_RUN_DIR:-$WORK/mnist_run}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=$(command -v python3 || command -v python); fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
export ADAPTIVE_CNN_DATA=${ADAPTIVE_CNN_DATA:-$PWD/data}
MNIST_TIMEOUT=${MNIST_TIMEOUT:-240}
TP_TIMEOUT=${TP_TIMEOUT:-120}
COMPILE_TIMEOUT=${COMPILE_TIMEOUT:-300}
DDP_TIMEOUT=${DDP_TIMEOUT:-120}

if [ "$DRY_RUN" = 1 ]; then
  # CPU only, tiny settings, low priority: a test of the script, not a measurement
  export CUDA_VISIBLE_DEVICES=''
  RUN=(nice -n 10)
  DEVICE=cpu
  TP_CIFAR=(--steps "${TP_STEPS:-3}" --warmup "${TP_WARMUP:-1}" --batch-size 32)
  TP_MNIST=(--steps "${TP_STEPS:-3}" --warmup "${TP_WARMUP:-1}" --batch-size 64)
  MNIST_SET=(--set train.epochs=1 --set data.train_subset=2000)
else
  RUN=()
  DEVICE=cuda
  TP_CIFAR=(--steps "${TP_STEPS:-50}" --warmup "${TP_WARMUP:-10}")
  TP_MNIST=("${TP_CIFAR[@]}")
  MNIST_SET=()
fi

REPORT=$OUT/gpu_check.txt
STEPS=$WORK/steps.tsv
: > "$REPORT"; : > "$STEPS"
log() { printf '%s\n' "$*" | tee -a "$REPORT"; }

# run_step NAME LIMIT_S COMMAND...: runs COMMAND under a wall-clock limit (SIGINT first, so Python unwinds and
# flushes; SIGKILL 20 s later), its output teed into the report; records status, exit code and seconds.
run_step() {
  local name=$1 limit=$2; shift 2
  log ""
  local shown="$*"
  [[ $shown == *$'\n'* ]] && shown="$1 $2 (inline script)"
  log "=== $name (limit ${limit}s): $shown"
  local start end rc status
  start=$(date +%s.%N)
  set +e
  timeout -s INT -k 20 "$limit" "$@" 2>&1 | tee -a "$REPORT"
  rc=${PIPESTATUS[0]}
  set -e
  end=$(date +%s.%N)
  case $rc in 0) status=ok ;; 124|137) status=timeout ;; *) status=failed ;; esac
  local secs; secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  log "=== $name: $status (exit $rc) after ${secs}s"
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$secs" >> "$STEPS"
}

log "gpu_check.sh $(date -u '+%Y-%m-%d %H:%M:%S UTC')$([ "$DRY_RUN" = 1 ] && echo ' (DRY RUN: CPU, tiny settings)')"
log "repo $PWD, python $PYTHON, OUT $OUT, ADAPTIVE_CNN_DATA $ADAPTIVE_CNN_DATA, MNIST run in $MNIST_RUN_DIR"

run_step environment 60 bash -c '
  echo "host: $(uname -srm), $(nproc) CPUs, $(awk "/MemTotal/ {printf \"%.0f GiB\", \$2 / 1048576}" /proc/meminfo)"
  echo "git: $(git describe --always --dirty 2>/dev/null || echo "no git metadata")"
  if command -v nvidia-smi >/dev/null; then nvidia-smi; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  else echo "nvidia-smi: not found"; fi
  "$0" -c "import sys, platform, torch, torchvision
print(\"python\", platform.python_version(), sys.executable)
print(\"torch\", torch.__version__, \"torchvision\", torchvision.__version__, \"cuda\", torch.version.cuda, \"cudnn\", torch.backends.cudnn.version())
print(\"cuda available:\", torch.cuda.is_available(), *(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())))"
' "$PYTHON"

if [ "${PIP_INSTALL:-0}" = 1 ]; then
  run_step pip_install 120 "$PYTHON" -m pip install --no-deps --no-build-isolation --no-index -e .
fi

# The package must import without nbdev/fastcore (absent on the GPU machine), from this checkout.
run_step import 60 "$PYTHON" -c "
import sys, adaptive_cnn, adaptive_cnn.cli, adaptive_cnn.training, adaptive_cnn.data, adaptive_cnn.augment, adaptive_cnn.models
print('adaptive_cnn', adaptive_cnn.__version__, 'from', adaptive_cnn.__file__)
dev = sorted({m.split('.')[0] for m in sys.modules} & {'fastcore', 'nbdev', 'execnb', 'ghapi'})
sys.exit(f'imports development packages: {dev}' if dev else 0)
"

run_step data 30 bash -c 'ls -l "$ADAPTIVE_CNN_DATA/MNIST/raw/" && for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  [ -f "$ADAPTIVE_CNN_DATA/MNIST/raw/$f.gz" ] || [ -f "$ADAPTIVE_CNN_DATA/MNIST/raw/$f" ] || { echo "missing $f[.gz]"; exit 1; }; done'

run_step throughput_cifar10 "$TP_TIMEOUT" ${RUN[@]+"${RUN[@]}"} "$PYTHON" benchmarks/train_throughput.py --config cifar10 --synthetic-only \
  --device "$DEVICE" --variants --no-compile "${TP_CIFAR[@]}" --json "$WORK/throughput_cifar10.json"

run_step throughput_mnist "$TP_TIMEOUT" ${RUN[@]+"${RUN[@]}"} "$PYTHON" benchmarks/train_throughput.py --config mnist \
  --device "$DEVICE" --variants --no-compile "${TP_MNIST[@]}" --json "$WORK/throughput_mnist.json"

run_step mnist_train "$MNIST_TIMEOUT" ${RUN[@]+"${RUN[@]}"} "$PYTHON" -m adaptive_cnn train mnist --output-dir "$MNIST_RUN_DIR" \
  --no-progress --overwrite ${MNIST_SET[@]+"${MNIST_SET[@]}"}
for f in train.log metrics.jsonl results.json; do
  if [ -f "$MNIST_RUN_DIR/$f" ]; then cp "$MNIST_RUN_DIR/$f" "$OUT/mnist_$f"; else log "(the MNIST run wrote no $f)"; fi
done

# The DDP path over NCCL (a process group of one on a one-GPU machine): torchrun launch, DistributedDataParallel,
# barriers, all-reduced metrics; --max-restarts 1 goes through the launcher even for one process.
if [ "$DRY_RUN" = 1 ]; then DDP_DEVICE=(--num-procs 2); else DDP_DEVICE=(--num-gpus 1); fi
run_step ddp_train "$DDP_TIMEOUT" ${RUN[@]+"${RUN[@]}"} "$PYTHON" -m adaptive_cnn train mnist "${DDP_DEVICE[@]}" --max-restarts 1 \
  --output-dir "$WORK/ddp_run" --no-progress --set train.epochs=3
[ -f "$WORK/ddp_run/environment.json" ] && cat "$WORK/ddp_run/environment.json" | tee -a "$REPORT"

if [ "${COMPILE:-0}" = 1 ]; then
  run_step throughput_cifar10_compiled "$COMPILE_TIMEOUT" ${RUN[@]+"${RUN[@]}"} "$PYTHON" benchmarks/train_throughput.py --config cifar10 \
    --synthetic-only --device "$DEVICE" --set train.compile=true "${TP_CIFAR[@]}" --json "$WORK/throughput_cifar10_compiled.json"
  run_step throughput_mnist_compiled "$COMPILE_TIMEOUT" ${RUN[@]+"${RUN[@]}"} "$PYTHON" benchmarks/train_throughput.py --config mnist \
    --device "$DEVICE" --set train.compile=true "${TP_MNIST[@]}" --json "$WORK/throughput_mnist_compiled.json"
fi

# Summary: every figure in one JSON file and a short table at the end of the report.
set +e
"$PYTHON" - "$WORK" "$MNIST_RUN_DIR" "$OUT" "$DRY_RUN" <<'EOF' 2>&1 | tee -a "$REPORT"
import json, statistics, sys
from pathlib import Path
work, run, out, dry = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] == '1'
steps = [dict(zip(('name', 'status', 'exit_code', 'seconds'), l.split('\t'))) for l in (work/'steps.tsv').read_text().splitlines()]
for s in steps: s['exit_code'], s['seconds'] = int(s['exit_code']), float(s['seconds'])
summary = dict(dry_run=dry, steps=steps, throughput={}, mnist_train={})
lines = ['', '=== summary' + (' (DRY RUN: CPU, tiny settings; not a measurement)' if dry else ''), '']
lines += [f"{s['name']:<28}{s['status']:<9}exit {s['exit_code']:<4}{s['seconds']:>8.1f} s" for s in steps]
for f in sorted(work.glob('throughput_*.json')):
    tp = json.loads(f.read_text())
    summary['throughput'][f.stem.removeprefix('throughput_')] = tp
    lines += ['', f"throughput {tp['config']} on {tp['device_name']}, torch {tp['torch']}, batch {tp['batch_size']}, "
                  f"{tp['warmup']} + {tp['steps']} steps, data: {tp['data']}"]
    for r in tp['results']:
        e, m = r.get('end_to_end') or {}, r.get('model_only') or {}
        fmt = lambda d: f"{d['images_per_s']:>10,.0f}" if d else f"{'failed':>10}"
        lines.append(f"  {r['variant']:<30} end_to_end {fmt(e)} img/s   model_only {fmt(m)} img/s   ratio "
                     + (f"{r['ratio']:.2f}" if r.get('ratio') else '-'))
m = summary['mnist_train']
step = next((s for s in steps if s['name'] == 'mnist_train'), None)
if step: m.update(status=step['status'], exit_code=step['exit_code'], wall_s=step['seconds'])
if (run/'metrics.jsonl').is_file():
    history = [json.loads(l) for l in (run/'metrics.jsonl').read_text().splitlines() if l.strip()]
    m['epochs_done'] = len(history)
    if history:
        m['median_train_images_per_s'] = statistics.median(h['images_per_s'] for h in history)
        m['median_epoch_s'] = statistics.median(h['epoch_time_s'] for h in history)
        m['last_epoch'] = history[-1]
if (run/'results.json').is_file(): m['results'] = json.loads((run/'results.json').read_text())
res = m.get('results', {})
lines += ['', f"MNIST recipe: {m.get('status', 'not run')} after {m.get('wall_s', 0):.1f} s wall, {m.get('epochs_done', 0)} epochs"
          + (f", median {m['median_train_images_per_s']:,.0f} train img/s, median epoch {m['median_epoch_s']:.2f} s" if 'median_epoch_s' in m else '')]
lines.append(f"  test_acc {res['test_acc']:.4f} (best_model.pth = {res.get('best_model')}), best_val_acc {res.get('best_val_acc', 0):.4f}"
             + (f", swa_val_acc {res['swa_val_acc']:.4f}" if 'swa_val_acc' in res else '')
             if 'test_acc' in res else '  no test accuracy (no results.json: the run did not finish)')
failed = [s['name'] for s in steps if s['status'] != 'ok']
lines.append('' if not failed else f"\nFAILED steps: {', '.join(failed)}")
summary['failed_steps'] = failed
(out/'gpu_check.json').write_text(json.dumps(summary, indent=1) + '\n')
print('\n'.join(lines))
EOF
summary_rc=${PIPESTATUS[0]}
set -e
[ "$summary_rc" = 0 ] || log "summary failed (exit $summary_rc); the step outputs above are complete"
log "files in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"

if [ "$summary_rc" != 0 ] || grep -qv $'\tok\t' "$STEPS"; then exit 1; fi
