#!/usr/bin/env bash
# The CIFAR-10 recipe end to end on one GPU (H100/H200) inside one device call (BUDGET_S, default 560 s, below the
# call's 600 s limit): the built-in `cifar10` config for its 100 epochs, then its best_model.pth evaluated on the
# 10,000 test images without and with test-time augmentation (the two evaluations run side by side).
# Estimate: 45,000 training images × 100 epochs / 14,563 img/s (end to end, eager bf16, measured on one H200 with
# train_throughput.py) ≈ 309 s, plus validation, SWA and checkpoints: ~330-370 s; TRAIN_TIMEOUT caps it at 470 s.
#
# Data: CIFAR-10's binary version travels in three git-ignored part folders (made here by
# benchmarks/stage_cifar10.sh; each part with the working tree stays under the 64 MiB a call carries):
#   data/cifar10_part1  data_batch_1.bin data_batch_2.bin
#   data/cifar10_part2  data_batch_3.bin data_batch_4.bin
#   data/cifar10_part3  data_batch_5.bin test_batch.bin batches.meta.txt
# The device machine keeps ignored files between calls only while it stays warm (~30 s idle), so make three run calls
# back to back: carry ["data/cifar10_part1"] with `bash benchmarks/gpu_cifar10.sh --check-parts`, then
# ["data/cifar10_part2"] with the same, then ["data/cifar10_part3"] with `bash benchmarks/gpu_cifar10.sh`
# (timeout_s 600). The script gathers the parts into $DATA/cifar-10-batches-bin (hard links, else copies), checks
# every file's sha256 and stops with one line naming a missing part or a mismatching file (exit 3) before any training.
#
#   benchmarks/gpu_cifar10.sh                 # from the repo root, on the GPU machine
#   benchmarks/gpu_cifar10.sh --check-parts   # only report which parts are here and whether their sha256 match
#   benchmarks/gpu_cifar10.sh --dry-run       # the same steps on the CPU with tiny settings (or DRY_RUN=1)
#
# Nothing is installed and nothing is downloaded: the repo goes on PYTHONPATH (the package imports without
# nbdev/fastcore) and the machine's python3 holds torch, torchvision, scikit-learn, matplotlib and seaborn.
# Results go to $OUT (default ./gpu_out), 8 files (the device call brings back at most 8), each under 1 MB:
#   gpu_cifar10.txt     everything printed, written as it runs (training epochs, both evaluations' tables, summary)
#   summary.json        the headline figures (below), step statuses, and results.json, environment.json, config.yaml
#   train.log, metrics.jsonl, results.json    from the training run (copied as soon as training ends or is cut)
#   metrics.json, metrics_tta.json            the evaluations' metrics (plain, TTA)
#   run_files.tar.gz    config.yaml, environment.json, both evaluations' report.md, and the PNG figures under 300 KB
#                       (training curves, confusion matrix, per-class accuracy, reliability), kept under 1 MB
# The summary: test accuracy of train's own test pass and of both evaluations, macro precision/recall/F1, top-3
# accuracy, AUC, ECE, train wall time, epochs done, median images/s (metrics.jsonl's images_per_s), GPU name, commit.
# Checkpoints stay behind (in the scratch folder, removed at the end unless KEEP_WORK=1).
#
# Environment: OUT, PYTHON (default .venv/bin/python if present, else python3), DATA (default ./data/gathered; the
# script sets ADAPTIVE_CNN_DATA to it, overriding any value given), BUDGET_S (default 560; dry run 1500),
# TRAIN_TIMEOUT (default 470; dry run 900), EVAL_TIMEOUT (cap of the two evaluations together, default 45; dry run
# 300), TRAIN_ARGS (extra arguments of the train command, e.g. "--set train.precision=fp32"; word-split), EVAL_ARGS
# (extra arguments of both evaluate commands; the network keys of TRAIN_ARGS' --set must be repeated here),
# EST_IMG_S (throughput of the estimate, default 14563), RUN_DIR (the run folder, default in the scratch folder),
# KEEP_WORK=1, DRY_RUN=1. Exit status: 0 when every step passed, 1 when one failed or ran out of time (what it wrote
# is still brought back), 2 on a usage mistake, 3 when the data is missing or corrupt.
set -euo pipefail
cd "$(dirname "$0")/.."
source benchmarks/device_common.sh

DRY_RUN=${DRY_RUN:-0}
CHECK_PARTS=0
for arg in "$@"; do
  case $arg in
    --dry-run) DRY_RUN=1 ;;
    --check-parts) CHECK_PARTS=1 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) echo "gpu_cifar10.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done

T0=$(date +%s)
DATA=${DATA:-./data/gathered}
mkdir -p "$DATA"; DATA=$(cd "$DATA" && pwd)

if [ "$CHECK_PARTS" = 1 ]; then
  # cheap report for the first two calls: which parts this machine holds now, and whether they are intact
  for f in "${CIFAR10_FILES[@]}"; do
    p=$(cifar10_part_of "$f")
    if [ -f "$p/$f" ]; then
      [ "$(sha256sum "$p/$f" | cut -d' ' -f1)" = "${CIFAR10_SHA256[$f]}" ] && echo "$p/$f: ok" || echo "$p/$f: SHA256 MISMATCH"
    else echo "$p/$f: not here"; fi
  done
  echo "host $(hostname), $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi'), t=$(( $(date +%s) - T0 ))s"
  exit 0
fi

OUT=${OUT:-./gpu_out}
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_cifar10.XXXXXX")
[ "${KEEP_WORK:-0}" = 1 ] || trap 'rm -rf "$WORK"' EXIT   # scratch: the run with its checkpoints, the evaluations
RUN_DIR=${RUN_DIR:-$WORK/cifar10_run}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=$(command -v python3 || command -v python); fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
export ADAPTIVE_CNN_DATA=$DATA
EST_IMG_S=${EST_IMG_S:-14563}
RESERVE=10   # seconds kept back for the summary, the packing and the size checks

if [ "$DRY_RUN" = 1 ]; then
  # CPU only, tiny settings, low priority: a test of the script, not a measurement. A narrow network (in train and in
  # both evaluations: evaluate builds the network from its own config) keeps the 10,000-image test passes short.
  export CUDA_VISIBLE_DEVICES=''
  NICE=(nice -n 10)
  BUDGET_S=${BUDGET_S:-1500}
  TRAIN_TIMEOUT=${TRAIN_TIMEOUT:-900}
  EVAL_TIMEOUT=${EVAL_TIMEOUT:-300}
  DRY_MODEL=(--set model.stem_channels=16 --set 'model.widths=[16,32,64,64]' --set 'model.depths=[1,1,1,1]'
             --set model.classifier_hidden=32)
  DRY_TRAIN=(--set train.epochs=1 --set data.train_subset=2000 --set data.val_size=500 --set train.batch_size=64
             "${DRY_MODEL[@]}")
  DRY_EVAL=("${DRY_MODEL[@]}")
else
  NICE=()
  BUDGET_S=${BUDGET_S:-560}
  TRAIN_TIMEOUT=${TRAIN_TIMEOUT:-470}
  EVAL_TIMEOUT=${EVAL_TIMEOUT:-45}
  DRY_TRAIN=()
  DRY_EVAL=()
fi

REPORT=$OUT/gpu_cifar10.txt
STEPS=$WORK/steps.tsv
: > "$REPORT"; : > "$STEPS"
log() { printf '%s\n' "$*" | tee -a "$REPORT"; }
left() { echo $(( BUDGET_S - ($(date +%s) - T0) - RESERVE )); }
record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >> "$STEPS"; }   # name status exit_code seconds limit
status_of() { case $1 in 0) echo ok ;; 124|137) echo timeout ;; *) echo failed ;; esac; }

# run_step NAME LIMIT COMMAND...: COMMAND under LIMIT seconds (SIGINT first, so Python unwinds, the trainer saves
# last.pth and the logs are flushed; SIGKILL 10 s later), its output teed into the report; records the outcome.
run_step() {
  local name=$1 limit=$2; shift 2
  log ""
  local shown="$*"
  [[ $shown == *$'\n'* ]] && shown="$1 $2 (inline script)"
  log "=== $name (limit ${limit}s, t=$(( $(date +%s) - T0 ))s): $shown"
  local start rc secs
  start=$(date +%s.%N)
  set +e
  timeout -s INT -k 10 "$limit" "$@" 2>&1 | tee -a "$REPORT"
  rc=${PIPESTATUS[0]}
  set -e
  secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  log "=== $name: $(status_of "$rc") (exit $rc) after ${secs}s"
  record "$name" "$(status_of "$rc")" "$rc" "$secs" "$limit"
}

log "gpu_cifar10.sh $(date -u '+%Y-%m-%d %H:%M:%S UTC')$([ "$DRY_RUN" = 1 ] && echo ' (DRY RUN: CPU, tiny settings; not a measurement)'), budget ${BUDGET_S} s"
log "repo $PWD, python $PYTHON, OUT $OUT, DATA (ADAPTIVE_CNN_DATA) $DATA, run in $RUN_DIR"
log "estimate (GPU, the full recipe): 45,000 images × 100 epochs / ${EST_IMG_S} img/s = $(( 4500000 / EST_IMG_S )) s of training" \
    "steps, plus validation (5,000 images an epoch), SWA, checkpoints and the test pass; TRAIN_TIMEOUT ${TRAIN_TIMEOUT} s," \
    "evaluations ${EVAL_TIMEOUT} s, budget ${BUDGET_S} s"

# --- 1. the data: gather the three parts, check every sha256 ---------------------------------------------------------
gather_start=$(date +%s.%N)
DEST=$DATA/cifar-10-batches-bin
mkdir -p "$DEST"
missing=(); kept=()
for f in "${CIFAR10_FILES[@]}"; do
  p=$(cifar10_part_of "$f")
  if [ -f "$p/$f" ]; then
    if ! [ "$p/$f" -ef "$DEST/$f" ]; then rm -f "$DEST/$f"; ln "$p/$f" "$DEST/$f" 2>/dev/null || cp "$p/$f" "$DEST/$f"; fi
  elif [ -f "$DEST/$f" ]; then kept+=("$f")
  else missing+=("$p/$f"); fi
done
if [ ${#missing[@]} -gt 0 ]; then
  log "gpu_cifar10.sh: CIFAR-10 missing: ${missing[*]} (carry each part folder in a run call while the machine is warm; see --help)"
  record data failed 3 0 0; exit 3
fi
[ ${#kept[@]} -eq 0 ] || log "data: ${kept[*]} not in a part folder here, kept from an earlier gather in $DEST"
bad=()
while read -r sum path; do
  f=$(basename "$path")
  [ "$sum" = "${CIFAR10_SHA256[$f]}" ] || bad+=("$f (from $(cifar10_part_of "$f")): sha256 $sum, expected ${CIFAR10_SHA256[$f]}")
done < <(cd "$DEST" && sha256sum "${CIFAR10_FILES[@]}")
if [ ${#bad[@]} -gt 0 ]; then
  log "gpu_cifar10.sh: CIFAR-10 sha256 mismatch in $DEST: ${bad[*]}"
  record data failed 3 0 0; exit 3
fi
gather_s=$(awk -v a="$gather_start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
log "data: ${#CIFAR10_FILES[@]} files in $DEST, every sha256 as expected ($(du -shL "$DEST" | cut -f1), ${gather_s}s)"
record data ok 0 "$gather_s" 0

# --- 2. environment: the GPU, the commit, torch (and, on the GPU, stop early if CUDA is not usable) -----------------
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || true)
GIT=$(git describe --always --dirty 2>/dev/null || echo "no git metadata")
GIT_COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
run_step environment 60 bash -c '
  echo "host: $(uname -srm), $(nproc) CPUs, $(awk "/MemTotal/ {printf \"%.0f GiB\", \$2 / 1048576}" /proc/meminfo)"
  echo "git: $1 ($2)"
  if command -v nvidia-smi >/dev/null; then nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv
  else echo "nvidia-smi: not found"; fi
  "$0" -c "import sys, platform, torch, torchvision
print(\"python\", platform.python_version(), sys.executable)
print(\"torch\", torch.__version__, \"torchvision\", torchvision.__version__, \"cuda\", torch.version.cuda, \"cudnn\", torch.backends.cudnn.version())
print(\"cuda available:\", torch.cuda.is_available(), *(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())))
if sys.argv[1] != \"1\" and not torch.cuda.is_available(): sys.exit(\"no usable CUDA GPU: not training the 100-epoch recipe on the CPU\")" "$3"
' "$PYTHON" "$GIT" "$GIT_COMMIT" "$DRY_RUN"
if [ "$(tail -1 "$STEPS" | cut -f2)" != ok ] && [ "$DRY_RUN" != 1 ]; then
  log "gpu_cifar10.sh: the environment check failed (above); nothing trained"; exit 1
fi

# --- 3. training ------------------------------------------------------------------------------------------------------
# its cap: TRAIN_TIMEOUT, less if the budget must still fit the kill grace (10 s) and the evaluations
limit=$(( $(left) - 10 - EVAL_TIMEOUT - 5 ))
[ "$limit" -gt "$TRAIN_TIMEOUT" ] && limit=$TRAIN_TIMEOUT
run_step train "$limit" ${NICE[@]+"${NICE[@]}"} "$PYTHON" -m adaptive_cnn train cifar10 --output-dir "$RUN_DIR" --no-progress \
  --overwrite ${DRY_TRAIN[@]+"${DRY_TRAIN[@]}"} ${TRAIN_ARGS:-}
for f in train.log metrics.jsonl results.json; do
  if [ -f "$RUN_DIR/$f" ]; then cp "$RUN_DIR/$f" "$OUT/$f"; else log "(the run wrote no $f)"; fi
done

# --- 4. the two evaluations of best_model.pth, side by side ---------------------------------------------------------
CKPT=$RUN_DIR/checkpoints/best_model.pth
if [ -f "$CKPT" ]; then
  limit=$(left); [ "$limit" -gt "$EVAL_TIMEOUT" ] && limit=$EVAL_TIMEOUT
  EVAL=(${NICE[@]+"${NICE[@]}"} "$PYTHON" -m adaptive_cnn evaluate cifar10 "$CKPT" ${DRY_EVAL[@]+"${DRY_EVAL[@]}"} ${EVAL_ARGS:-})
  log ""
  log "=== evaluate, evaluate_tta (side by side, limit ${limit}s each, t=$(( $(date +%s) - T0 ))s): ${EVAL[*]} --output-dir $WORK/eval [--tta]"
  # each in the background, its exit code and seconds in $WORK/NAME.rc
  eval_job() {
    local name=$1 start rc; shift
    start=$(date +%s.%N)
    # SIGTERM: a background job of a script ignores SIGINT (and an evaluation has nothing to save)
    timeout -s TERM -k 5 "$limit" "$@" > "$WORK/$name.log" 2>&1; rc=$?
    echo "$rc $(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')" > "$WORK/$name.rc"
  }
  set +e
  eval_job evaluate "${EVAL[@]}" --output-dir "$WORK/eval" &
  pid_plain=$!
  eval_job evaluate_tta "${EVAL[@]}" --output-dir "$WORK/eval" --tta &
  pid_tta=$!
  wait "$pid_plain" "$pid_tta"
  set -e
  for name in evaluate evaluate_tta; do
    read -r rc secs < "$WORK/$name.rc" || { rc=1; secs=0; }
    log ""; log "--- $name output:"
    tee -a "$REPORT" < "$WORK/$name.log"
    log "=== $name: $(status_of "$rc") (exit $rc) after ${secs}s"
    record "$name" "$(status_of "$rc")" "$rc" "$secs" "$limit"
  done
  # metrics.json is written before the figures: it comes back even when a figure fails
  [ -f "$WORK/eval/evaluation/metrics.json" ] && cp "$WORK/eval/evaluation/metrics.json" "$OUT/metrics.json" || log "(no metrics.json from evaluate)"
  [ -f "$WORK/eval/evaluation_tta/metrics.json" ] && cp "$WORK/eval/evaluation_tta/metrics.json" "$OUT/metrics_tta.json" || log "(no metrics.json from evaluate --tta)"
else
  log ""; log "=== evaluate, evaluate_tta: skipped, no $CKPT (the training did not get through an epoch)"
  record evaluate skipped 0 0 0; record evaluate_tta skipped 0 0 0
fi

# --- 5. the run's small files in one archive (config.yaml, environment.json, reports, figures under 300 KB) -------
PACK=$WORK/run_files; mkdir -p "$PACK"
for src in "$RUN_DIR/config.yaml" "$RUN_DIR/environment.json" "$RUN_DIR/budget.json" "$RUN_DIR/training_curves.png" \
           "$WORK/eval/evaluation/report.md:report.md" "$WORK/eval/evaluation_tta/report.md:report_tta.md" \
           "$WORK/eval/evaluation/confusion_matrix.png" "$WORK/eval/evaluation/per_class_accuracy.png" \
           "$WORK/eval/evaluation/reliability.png" "$WORK/eval/evaluation_tta/reliability.png:reliability_tta.png"; do
  path=${src%%:*}; name=$(basename "${src#*:}")
  [ -f "$path" ] || continue
  if [[ $name == *.png ]] && [ "$(stat -c %s "$path")" -gt 300000 ]; then log "(left out $name: $(stat -c %s "$path") bytes, over 300 KB)"; continue; fi
  cp "$path" "$PACK/$name"
done
if [ -n "$(ls -A "$PACK")" ]; then
  tar -czf "$OUT/run_files.tar.gz" -C "$PACK" $(cd "$PACK" && ls)
  while [ "$(stat -c %s "$OUT/run_files.tar.gz")" -ge 1000000 ] && ls "$PACK"/*.png >/dev/null 2>&1; do
    big=$(ls -S "$PACK"/*.png | head -1); log "(left out $(basename "$big") to keep run_files.tar.gz under 1 MB)"; rm -f "$big"
    tar -czf "$OUT/run_files.tar.gz" -C "$PACK" $(cd "$PACK" && ls)
  done
fi

# --- 6. summary --------------------------------------------------------------------------------------------------
summary() {
  "$PYTHON" - "$WORK" "$RUN_DIR" "$OUT" "$DRY_RUN" "$BUDGET_S" "$(( $(date +%s) - T0 ))" "$GPU_NAME" "$GIT" "$GIT_COMMIT" "$EST_IMG_S" <<'EOF'
import json, statistics, sys
from pathlib import Path
work, run, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
dry, budget, elapsed, gpu, git, commit, est = sys.argv[4] == '1', int(sys.argv[5]), int(sys.argv[6]), sys.argv[7], sys.argv[8], sys.argv[9], int(sys.argv[10])
load = lambda p: json.loads(p.read_text()) if p.is_file() else None
steps = [dict(zip(('name', 'status', 'exit_code', 'seconds', 'limit_s'), l.split('\t'))) for l in (work/'steps.tsv').read_text().splitlines()]
for s in steps: s['exit_code'], s['seconds'], s['limit_s'] = int(s['exit_code']), float(s['seconds']), int(s['limit_s'])
history = [json.loads(l) for l in (run/'metrics.jsonl').read_text().splitlines() if l.strip()] if (run/'metrics.jsonl').is_file() else []
results, env = load(run/'results.json') or {}, load(run/'environment.json')
try:
    import yaml; config = yaml.safe_load((run/'config.yaml').read_text()) if (run/'config.yaml').is_file() else None
except Exception as e: config = f'unreadable: {e}'
train_step = next((s for s in steps if s['name'] == 'train'), {})
keys = ('accuracy', 'precision_macro', 'recall_macro', 'f1_macro', 'top3_accuracy', 'top5_accuracy', 'auc_macro', 'ece', 'nll', 'samples', 'tta_views', 'predict_s', 'kind', 'device')
evals = {}
for name, sub in (('plain', 'evaluation'), ('tta', 'evaluation_tta')):
    m = load(work/'eval'/sub/'metrics.json')
    if m: evals[name] = {k: m.get(k) for k in keys}
epochs_planned = (config or {}).get('train', {}).get('epochs') if isinstance(config, dict) else None
s = dict(dry_run=dry, gpu=gpu or None, git=git, git_commit=commit, budget_s=budget, elapsed_s=elapsed, steps=steps,
         train=dict(status=train_step.get('status'), wall_s=train_step.get('seconds'), epochs_done=len(history), epochs_planned=epochs_planned,
                    train_wall_s=results.get('train_wall_s'),
                    median_images_per_s=statistics.median(h['images_per_s'] for h in history) if history else None,
                    median_epoch_s=statistics.median(h['epoch_time_s'] for h in history) if history else None,
                    median_train_time_s=statistics.median(h['train_time_s'] for h in history) if history else None,
                    estimate_s=round(45000 * 100 / est), best_val_acc=results.get('best_val_acc'), swa_val_acc=results.get('swa_val_acc'),
                    best_model=results.get('best_model'), test_acc=results.get('test_acc'), last_epoch=history[-1] if history else None),
         evaluation=evals, results=results or None, environment=env, config=config)
(out/'summary.json').write_text(json.dumps(s, indent=1) + '\n')
f = lambda v, spec='.4f': 'n/a' if v is None else format(v, spec)
t = s['train']
lines = ['', '=== summary' + (' (DRY RUN: CPU, tiny settings; not a measurement)' if dry else '') + f', {elapsed} s of the {budget} s budget',
         f"GPU {gpu or 'none'}, git {git} ({commit})", '']
lines += [f"{x['name']:<16}{x['status']:<9}exit {x['exit_code']:<4}{x['seconds']:>8.1f} s" + (f"  (limit {x['limit_s']} s)" if x['limit_s'] else '') for x in steps]
lines += ['', f"train: {t['status']}, {t['epochs_done']} of {t['epochs_planned']} epochs, train_wall_s {f(t['train_wall_s'], '.1f')}, "
          f"median {f(t['median_images_per_s'], ',.0f')} img/s, median epoch {f(t['median_epoch_s'], '.2f')} s (training {f(t['median_train_time_s'], '.2f')} s; estimate for 100 epochs at {est:,} img/s: {t['estimate_s']} s)",
          f"  best_val_acc {f(t['best_val_acc'])}, swa_val_acc {f(t['swa_val_acc'])}, best_model.pth = {t['best_model']}, test_acc (train's test pass) {f(t['test_acc'])}", '']
lines.append(f"{'':<14}{'accuracy':>10}{'precision':>11}{'recall':>9}{'f1':>9}{'top3':>9}{'auc':>9}{'ece':>9}")
for name, m in evals.items():
    lines.append(f"{'test ' + name:<14}{f(m['accuracy']):>10}{f(m['precision_macro']):>11}{f(m['recall_macro']):>9}{f(m['f1_macro']):>9}"
                 f"{f(m['top3_accuracy']):>9}{f(m['auc_macro']):>9}{f(m['ece']):>9}")
if not evals: lines.append('  no evaluation metrics')
failed = [x['name'] for x in steps if x['status'] not in ('ok', 'skipped')]
lines.append('' if not failed else f"\nFAILED or timed out: {', '.join(failed)}")
print('\n'.join(lines))
EOF
}
set +e
summary 2>&1 | tee -a "$REPORT"
summary_rc=${PIPESTATUS[0]}
set -e
[ "$summary_rc" = 0 ] || log "summary failed (exit $summary_rc); the step outputs above are complete"

# every file in $OUT under 1 MB, and at most 8 files (what the device call returns)
keep_outputs_small "$OUT" "$REPORT" "$WORK"
n=$(ls -A "$OUT" | wc -l)
[ "$n" -le 8 ] || log "WARNING: $n files in $OUT; the device call brings back only 8"
log "files in $OUT: $(cd "$OUT" && ls -l | awk 'NR > 1 { printf "%s (%d B) ", $NF, $5 }')"
log "total $(( $(date +%s) - T0 )) s of the ${BUDGET_S} s budget"

if [ "$summary_rc" != 0 ] || [ -n "$(awk -F'\t' '$2 != "ok" && $2 != "skipped"' "$STEPS")" ]; then exit 1; fi
