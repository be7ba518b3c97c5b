#!/usr/bin/env bash
# One-GPU check (H100/H200) inside a fixed time budget (BUDGET_S, default 420 s = 7 min; it must stay below the
# device call's own limit). Steps, most valuable first; each runs under its own cap and under what is left of the
# budget, and a step the budget cannot fit any more is skipped (recorded, not a failure):
#   1. throughput_cifar10           train_throughput.py, synthetic CIFAR-10-shaped data: the config's own settings,
#                                   fp32, NCHW (eager)
#   2. throughput_cifar10_compiled  the same with train.compile=true (torch.compile default mode, as the library)
#   3. mnist_train                  the MNIST built-in recipe end to end on real MNIST (50 epochs, test accuracy)
#   4. throughput_mnist             real MNIST: own settings, fp32, NCHW, compiled
#   5. profile_cifar10 / profile_mnist   profile_step.py: phase shares, torch.profiler table, host-device syncs
#   6. inference_mnist              inference_latency.py --device cuda on the recipe's best_model.pth (PyTorch vs ONNX Runtime)
#   7. optional, if time is left:   throughput_mnist_reduce_overhead (torch.compile mode='reduce-overhead', CUDA
#                                   graphs), inference_cifar10 (untrained network), ddp_train (DDP=1 only)
#
#   benchmarks/gpu_check.sh             # from the repo root, MNIST in data/MNIST/raw/*.gz (git-ignored, carried)
#   benchmarks/gpu_check.sh --dry-run   # the same steps on the CPU with tiny settings (or DRY_RUN=1)
#
# Nothing is installed and nothing is downloaded: the repo goes on PYTHONPATH (the package imports without
# nbdev/fastcore) and the machine's own python3 holds torch and onnxruntime (CPU provider; without onnxruntime-gpu
# the CUDA provider is reported as unavailable). PIP_INSTALL=1 installs the package with
# `pip install --no-deps --no-build-isolation --no-index -e .` instead.
# Results go to $OUT (default ./gpu_out), at most 8 files, each under 1 MB: gpu_check.txt (everything, written as it
# runs), gpu_check.json (every figure; rewritten after each step, so a run cut short keeps what it finished),
# mnist_train.log, mnist_metrics.jsonl, mnist_results.json, profile_cifar10.txt, profile_mnist.txt, and with TRACE=1
# profile_mnist_trace.json.gz (dropped if over 1 MB). Runs and scratch stay in a temporary folder.
#
# Environment: OUT, PYTHON (default .venv/bin/python if present, else python3), ADAPTIVE_CNN_DATA (default ./data),
# BUDGET_S (total seconds, default 420; dry run 900), TP_STEPS / TP_WARMUP (default 30 / 10), MNIST_TIMEOUT (cap of
# the recipe, default 170), COMPILE=0 (skip the compiled runs), DDP=1 (add the DDP launcher check at the end),
# TRACE=1, MNIST_RUN_DIR, KEEP_WORK=1 (keep the scratch folder), PIP_INSTALL=1, DRY_RUN=1, DRY_COMPILE=1 (dry run:
# also compile the CIFAR-10 network on the CPU, slow), ONLY (space-separated step names: run just those, in the order
# above, e.g. ONLY="mnist_train throughput_cifar10"), MNIST_ARGS (extra arguments of the MNIST recipe's command, e.g.
# "--set train.compile=true --set train.compile_mode=reduce-overhead"), CIFAR_SET (extra --set arguments of the
# CIFAR-10 throughput runs).
# A failing or timed-out step is recorded and the next one runs; the exit status is 1 if any step failed.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_common.sh

DRY_RUN=${DRY_RUN:-0}
for arg in "$@"; do
  case $arg in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

T0=$(date +%s)
OUT=${OUT:-./gpu_out}
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
[ "${KEEP_WORK:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT   # scratch: step list, JSON results, the MNIST run by default
MNIST_RUN_DIR=${MNIST_RUN_DIR:-$WORK/mnist_run}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=$(command -v python3 || command -v python); fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
export ADAPTIVE_CNN_DATA=${ADAPTIVE_CNN_DATA:-$PWD/data}
MNIST_TIMEOUT=${MNIST_TIMEOUT:-170}
COMPILE=${COMPILE:-1}
RESERVE=25   # seconds kept back for the last step's kill grace, the summary and the size checks

if [ "$DRY_RUN" = 1 ]; then
  # CPU only, tiny settings, low priority: a test of the script, not a measurement
  export CUDA_VISIBLE_DEVICES=''
  RUN=(nice -n 10)
  DEVICE=cpu
  BUDGET_S=${BUDGET_S:-900}
  CAP_SCALE=3   # every step's cap: the CPU is slow, and other work may share it
  TP_CIFAR=(--steps "${TP_STEPS:-2}" --warmup "${TP_WARMUP:-1}" --batch-size 16)
  TP_MNIST=(--steps "${TP_STEPS:-2}" --warmup "${TP_WARMUP:-1}" --batch-size 32)
  MNIST_SET=(--set train.epochs=1 --set data.train_subset=2000)
  PROFILE=(--warmup 1 --steps 2 --profile-steps 1 --batch-size 16)
  INFER=(--iters 20 --warmup 2 --batch-iters 2 --batch-size 32)
  INFER_CIFAR=(--iters 5 --warmup 1 --batch-iters 1 --batch-size 16)
  [ "${DRY_COMPILE:-0}" = 1 ] || CIFAR_COMPILE=0
else
  RUN=()
  DEVICE=cuda
  BUDGET_S=${BUDGET_S:-420}
  CAP_SCALE=1
  TP_CIFAR=(--steps "${TP_STEPS:-30}" --warmup "${TP_WARMUP:-10}")
  TP_MNIST=("${TP_CIFAR[@]}")
  MNIST_SET=()
  PROFILE=(--warmup 8 --steps 20 --profile-steps 3 --sync-steps 2)
  INFER=(--iters 300 --warmup 30 --batch-iters 20 --batch-size 256)
  INFER_CIFAR=("${INFER[@]}")
fi
CIFAR_COMPILE=${CIFAR_COMPILE:-$COMPILE}

REPORT=$OUT/gpu_check.txt
STEPS=$WORK/steps.tsv
: > "$REPORT"; : > "$STEPS"
log() { printf '%s\n' "$*" | tee -a "$REPORT"; }
left() { echo $(( BUDGET_S - ($(date +%s) - T0) - RESERVE )); }

# run_step NAME CAP MIN COMMAND...: runs COMMAND under min(CAP, what is left of the budget) seconds (SIGINT first, so
# Python unwinds and flushes; SIGKILL 10 s later), its output teed into the report; records status, exit code and
# seconds, then refreshes gpu_check.json. Skipped (status 'skipped') when less than MIN seconds are left.
run_step() {
  local name=$1 cap=$2 min=$3; shift 3
  if [ -n "${ONLY:-}" ] && [[ " $ONLY environment import data " != *" $name "* ]]; then return 0; fi
  cap=$(( cap * CAP_SCALE ))
  local limit; limit=$(left)
  [ "$limit" -gt "$cap" ] && limit=$cap
  log ""
  if [ "$limit" -lt "$min" ]; then
    log "=== $name: skipped, $(left) s of the ${BUDGET_S} s budget left (needs ${min} s)"
    printf '%s\tskipped\t0\t0\n' "$name" >> "$STEPS"
    return 0
  fi
  local shown="$*"
  [[ $shown == *$'\n'* ]] && shown="$1 $2 (inline script)"
  log "=== $name (limit ${limit}s, t=$(( $(date +%s) - T0 ))s): $shown"
  local start end rc status
  start=$(date +%s.%N)
  set +e
  timeout -s INT -k 10 "$limit" "$@" 2>&1 | tee -a "$REPORT"
  rc=${PIPESTATUS[0]}
  set -e
  end=$(date +%s.%N)
  case $rc in 0) status=ok ;; 124|137) status=timeout ;; *) status=failed ;; esac
  local secs; secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  log "=== $name: $status (exit $rc) after ${secs}s"
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$rc" "$secs" >> "$STEPS"
  summary quiet || log "(gpu_check.json not refreshed: the summary failed)"
}

# summary [quiet]: every figure in $OUT/gpu_check.json; without 'quiet' also a short table for the report.
summary() {
  "$PYTHON" - "$WORK" "$MNIST_RUN_DIR" "$OUT" "$DRY_RUN" "${1:-}" "$BUDGET_S" "$(( $(date +%s) - T0 ))" <<'EOF'
import json, statistics, sys
from pathlib import Path
work, run, out, dry, quiet = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4] == '1', sys.argv[5] == 'quiet'
steps = [dict(zip(('name', 'status', 'exit_code', 'seconds'), l.split('\t'))) for l in (work/'steps.tsv').read_text().splitlines()]
for s in steps: s['exit_code'], s['seconds'] = int(s['exit_code']), float(s['seconds'])
summary = dict(dry_run=dry, budget_s=int(sys.argv[6]), elapsed_s=int(sys.argv[7]), steps=steps, throughput={}, profile={}, inference={}, mnist_train={})
lines = ['', '=== summary' + (' (DRY RUN: CPU, tiny settings; not a measurement)' if dry else '') + f', {sys.argv[7]} s of the {sys.argv[6]} s budget', '']
lines += [f"{s['name']:<34}{s['status']:<9}exit {s['exit_code']:<4}{s['seconds']:>8.1f} s" for s in steps]
load = lambda f: json.loads(f.read_text())
for f in sorted(work.glob('throughput_*.json')):
    tp = summary['throughput'][f.stem.removeprefix('throughput_')] = load(f)
    lines += ['', f"throughput {tp['config']} on {tp['device_name']}, torch {tp['torch']}, batch {tp['batch_size']}, "
                  f"{tp['warmup']} + {tp['steps']} steps, data: {tp['data']}" + ('' if tp.get('complete', True) else ' (CUT SHORT: the variants measured)')]
    for r in tp['results']:
        e, m = r.get('end_to_end') or {}, r.get('model_only') or {}
        fmt = lambda d: f"{d['images_per_s']:>10,.0f}" if d else f"{'failed':>10}"
        lines.append(f"  {r['variant']:<46} end_to_end {fmt(e)} img/s   model_only {fmt(m)} img/s   ratio "
                     + (f"{r['ratio']:.2f}" if r.get('ratio') else '-') + (f"   warm-up {e['warmup_s']:.0f} s" if e and r.get('compile') else ''))
for f in sorted(work.glob('profile_*.json')):
    p = summary['profile'][f.stem.removeprefix('profile_')] = load(f)
    g = p.get('groups', {})
    share = lambda r: r['device_share'] if r.get('device_share') is not None else r.get('host_share') or 0
    lines += ['', f"profile {p['config']} ({p['variant']}): {p['ms_per_step']:.2f} ms/step, {p['images_per_s']:,.0f} img/s; "
              + ', '.join(f"{k} {100 * share(r):.0f}%" for k, r in g.items())]
    pr = p.get('profiler', {})
    if 'kernels_per_step' in pr:
        lines.append(f"  per step: {pr['kernels_per_step']:.0f} kernels, GPU busy {pr['gpu_busy_ms_per_step']:.2f} ms, host syncs in trace "
                     f"{pr['host_syncs_per_step']:.1f}, DtoH copies {pr['dtoh_copies_per_step']:.1f}, pageable copies {pr['pageable_copies_per_step']:.1f}")
    for loc in (p.get('sync_debug') or {}).get('locations', [])[:6]: lines.append(f"  sync {loc['per_step']:.1f}/step at {loc['where']}")
for f in sorted(work.glob('inference_*.json')):
    inf = summary['inference'][f.stem.removeprefix('inference_')] = load(f)
    lines += ['', f"inference {inf['config']} ({inf['checkpoint']}) on {inf['device_name']}, onnxruntime {inf['onnxruntime']}"]
    for r in inf['results']:
        s, b = r.get('single') or {}, r.get('batch') or {}
        lines.append(f"  {r['backend']:<18}" + (f"p50 {s['p50_ms']:8.3f} ms  p95 {s['p95_ms']:8.3f} ms  " if s else ' ' * 34)
                     + (f"batch {b['images_per_s']:>10,.0f} img/s" if b else r.get('error') or r.get('notes', '')))
m = summary['mnist_train']
step = next((s for s in steps if s['name'] == 'mnist_train'), None)
if step: m.update(status=step['status'], exit_code=step['exit_code'], wall_s=step['seconds'])
if (run/'metrics.jsonl').is_file():
    history = [json.loads(l) for l in (run/'metrics.jsonl').read_text().splitlines() if l.strip()]
    m['epochs_done'] = len(history)
    if history:
        m['median_train_images_per_s'] = statistics.median(h['images_per_s'] for h in history)
        m['median_epoch_s'] = statistics.median(h['epoch_time_s'] for h in history)
        m['median_train_time_s'] = statistics.median(h['train_time_s'] for h in history)
        m['last_epoch'] = history[-1]
if (run/'results.json').is_file(): m['results'] = json.loads((run/'results.json').read_text())
res = m.get('results', {})
lines += ['', f"MNIST recipe: {m.get('status', 'not run')} after {m.get('wall_s', 0):.1f} s wall, {m.get('epochs_done', 0)} epochs"
          + (f", train_wall_s {res['train_wall_s']:.1f}" if 'train_wall_s' in res else '')
          + (f", median {m['median_train_images_per_s']:,.0f} train img/s, median epoch {m['median_epoch_s']:.2f} s "
             f"(of which training {m['median_train_time_s']:.2f} s)" if 'median_epoch_s' in m else '')]
lines.append(f"  test_acc {res['test_acc']:.4f} (best_model.pth = {res.get('best_model')}), best_val_acc {res.get('best_val_acc', 0):.4f}"
             + (f", swa_val_acc {res['swa_val_acc']:.4f}" if 'swa_val_acc' in res else '')
             if 'test_acc' in res else '  no test accuracy (no results.json: the run did not finish)')
best = lambda cfg: max((r['end_to_end']['images_per_s'], r['variant']) for tp in summary['throughput'].values() if tp['config'] == cfg
                       for r in tp['results'] if r.get('end_to_end')) if any(tp['config'] == cfg for tp in summary['throughput'].values()) else None
targets = summary['targets'] = {}
if best('cifar10'): targets['cifar10_best_end_to_end'] = dict(images_per_s=best('cifar10')[0], variant=best('cifar10')[1], target=25_000)
if 'train_wall_s' in res: targets['mnist_recipe_train_wall_s'] = dict(seconds=res['train_wall_s'], target=30)
if targets: lines += [''] + [f"target {k}: " + ', '.join(f'{a}={b:,.1f}' if isinstance(b, float) else f'{a}={b}' for a, b in v.items()) for k, v in targets.items()]
failed = [s['name'] for s in steps if s['status'] not in ('ok', 'skipped')]
skipped = [s['name'] for s in steps if s['status'] == 'skipped']
if skipped: lines.append(f"\nskipped for lack of time: {', '.join(skipped)}")
lines.append('' if not failed else f"\nFAILED steps: {', '.join(failed)}")
summary['failed_steps'], summary['skipped_steps'] = failed, skipped
(out/'gpu_check.json').write_text(json.dumps(summary, indent=1) + '\n')
if not quiet: print('\n'.join(lines))
EOF
}

log "gpu_check.sh $(date -u '+%Y-%m-%d %H:%M:%S UTC')$([ "$DRY_RUN" = 1 ] && echo ' (DRY RUN: CPU, tiny settings)'), budget ${BUDGET_S} s"
log "repo $PWD, python $PYTHON, OUT $OUT, ADAPTIVE_CNN_DATA $ADAPTIVE_CNN_DATA, MNIST run in $MNIST_RUN_DIR"

run_step environment 40 5 bash -c '
  echo "host: $(uname -srm), $(nproc) CPUs, $(awk "/MemTotal/ {printf \"%.0f GiB\", \$2 / 1048576}" /proc/meminfo)"
  echo "git: $(git describe --always --dirty 2>/dev/null || echo "no git metadata")"
  if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv
  else echo "nvidia-smi: not found"; fi
  "$0" -c "import sys, platform, torch, torchvision
print(\"python\", platform.python_version(), sys.executable)
print(\"torch\", torch.__version__, \"torchvision\", torchvision.__version__, \"cuda\", torch.version.cuda, \"cudnn\", torch.backends.cudnn.version())
print(\"cuda available:\", torch.cuda.is_available(), *(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())))
print(\"torch threads\", torch.get_num_threads(), \"cudnn.benchmark\", torch.backends.cudnn.benchmark, \"tf32 matmul\", torch.backends.cuda.matmul.allow_tf32, \"tf32 cudnn\", torch.backends.cudnn.allow_tf32)
try:
    import onnxruntime as ort; print(\"onnxruntime\", ort.__version__, ort.get_available_providers())
except ImportError as e: print(\"onnxruntime: not installed\", e)
import triton; print(\"triton\", triton.__version__)"
' "$PYTHON"

if [ "${PIP_INSTALL:-0}" = 1 ]; then
  run_step pip_install 120 30 "$PYTHON" -m pip install --no-deps --no-build-isolation --no-index -e .
fi

# The package must import without nbdev/fastcore (absent on the GPU machine), from this checkout.
run_step import 40 5 "$PYTHON" -c "
import sys, adaptive_cnn, adaptive_cnn.cli, adaptive_cnn.training, adaptive_cnn.data, adaptive_cnn.augment, adaptive_cnn.models
print('adaptive_cnn', adaptive_cnn.__version__, 'from', adaptive_cnn.__file__)
dev = sorted({m.split('.')[0] for m in sys.modules} & {'fastcore', 'nbdev', 'execnb', 'ghapi'})
sys.exit(f'imports development packages: {dev}' if dev else 0)
"

run_step data 15 2 bash -c 'ls -l "$ADAPTIVE_CNN_DATA/MNIST/raw/" && for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  [ -f "$ADAPTIVE_CNN_DATA/MNIST/raw/$f.gz" ] || [ -f "$ADAPTIVE_CNN_DATA/MNIST/raw/$f" ] || { echo "missing $f[.gz]"; exit 1; }; done'

TP=(${RUN[@]+"${RUN[@]}"} "$PYTHON" benchmarks/train_throughput.py --device "$DEVICE")

# 1-2. CIFAR-10 training throughput: eager variants, then compiled (torch.compile's first steps compile: the warm-up)
run_step throughput_cifar10 90 30 "${TP[@]}" --config cifar10 --synthetic-only --variants --no-compile \
  ${CIFAR_SET:-} "${TP_CIFAR[@]}" --json "$WORK/throughput_cifar10.json"
if [ "$CIFAR_COMPILE" = 1 ]; then
  run_step throughput_cifar10_compiled 200 90 "${TP[@]}" --config cifar10 --synthetic-only --set train.compile=true \
    ${CIFAR_SET:-} "${TP_CIFAR[@]}" --json "$WORK/throughput_cifar10_compiled.json"
fi

# 3. the MNIST recipe end to end
run_step mnist_train "$MNIST_TIMEOUT" 60 ${RUN[@]+"${RUN[@]}"} "$PYTHON" -m adaptive_cnn train mnist --output-dir "$MNIST_RUN_DIR" \
  --no-progress --overwrite ${MNIST_SET[@]+"${MNIST_SET[@]}"} ${MNIST_ARGS:-}
for f in train.log metrics.jsonl results.json; do
  if [ -f "$MNIST_RUN_DIR/$f" ]; then cp "$MNIST_RUN_DIR/$f" "$OUT/mnist_$f"; else log "(the MNIST run wrote no $f)"; fi
done

# 4. MNIST training throughput, eager variants and compiled in one run
if [ "$COMPILE" = 1 ]; then MNIST_VARIANTS=(--variants); else MNIST_VARIANTS=(--variants --no-compile); fi
run_step throughput_mnist 120 40 "${TP[@]}" --config mnist "${MNIST_VARIANTS[@]}" "${TP_MNIST[@]}" --json "$WORK/throughput_mnist.json"

# 5. where the step's time goes
run_step profile_cifar10 60 25 ${RUN[@]+"${RUN[@]}"} "$PYTHON" benchmarks/profile_step.py --config cifar10 --synthetic-only --device "$DEVICE" \
  ${PROFILE[@]+"${PROFILE[@]}"} --out "$OUT/profile_cifar10.txt" --json "$WORK/profile_cifar10.json"
if [ "${TRACE:-0}" = 1 ]; then TRACE_ARG=(--trace "$OUT/profile_mnist_trace.json.gz"); else TRACE_ARG=(); fi
run_step profile_mnist 60 25 ${RUN[@]+"${RUN[@]}"} "$PYTHON" benchmarks/profile_step.py --config mnist --device "$DEVICE" \
  ${PROFILE[@]+"${PROFILE[@]}"} ${TRACE_ARG[@]+"${TRACE_ARG[@]}"} --out "$OUT/profile_mnist.txt" --json "$WORK/profile_mnist.json"

# 6. inference: the recipe's checkpoint when the MNIST run finished, else an untrained network
CKPT=()
[ -f "$MNIST_RUN_DIR/checkpoints/best_model.pth" ] && CKPT=(--checkpoint "$MNIST_RUN_DIR/checkpoints/best_model.pth")
run_step inference_mnist 60 25 ${RUN[@]+"${RUN[@]}"} "$PYTHON" benchmarks/inference_latency.py --config mnist --device "$DEVICE" \
  ${CKPT[@]+"${CKPT[@]}"} "${INFER[@]}" --json "$WORK/inference_mnist.json"

# 7. optional, in the time left
if [ "$COMPILE" = 1 ]; then
  run_step throughput_mnist_reduce_overhead 90 60 "${TP[@]}" --config mnist --set train.compile=true --compile-mode reduce-overhead \
    "${TP_MNIST[@]}" --json "$WORK/throughput_mnist_reduce_overhead.json"
fi
run_step inference_cifar10 60 30 ${RUN[@]+"${RUN[@]}"} "$PYTHON" benchmarks/inference_latency.py --config cifar10 --device "$DEVICE" \
  "${INFER_CIFAR[@]}" --json "$WORK/inference_cifar10.json"
if [ "${DDP:-0}" = 1 ]; then
  # the DDP path over NCCL (a process group of one on a one-GPU machine) through the torchrun launcher
  if [ "$DRY_RUN" = 1 ]; then DDP_DEVICE=(--num-procs 2); else DDP_DEVICE=(--num-gpus 1); fi
  run_step ddp_train 90 40 ${RUN[@]+"${RUN[@]}"} "$PYTHON" -m adaptive_cnn train mnist "${DDP_DEVICE[@]}" --max-restarts 1 \
    --output-dir "$WORK/ddp_run" --no-progress --set train.epochs=3
fi

set +e
summary 2>&1 | tee -a "$REPORT"
summary_rc=${PIPESTATUS[0]}
set -e
[ "$summary_rc" = 0 ] || log "summary failed (exit $summary_rc); the step outputs above are complete"
keep_outputs_small "$OUT" "$REPORT" "$WORK"
log "files in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
log "total $(( $(date +%s) - T0 )) s of the ${BUDGET_S} s budget"

if [ "$summary_rc" != 0 ] || [ -n "$(awk -F'\t' '$2 != "ok" && $2 != "skipped"' "$STEPS")" ]; then exit 1; fi
