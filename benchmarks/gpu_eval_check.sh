#!/usr/bin/env bash
# On a one-GPU machine: the MNIST recipe through the DDP launcher (NCCL), then evaluation with and without TTA and
# classification of image files, all on the GPU; figures and logs go to $OUT. DRY_RUN=1: the same on the CPU, tiny.
# Needs MNIST in data/MNIST/raw (git-ignored, carried); no extra packages (Grad-CAM and export are not exercised).
set -uo pipefail
OUT=${OUT:-./gpu_out}; mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 MPLBACKEND=Agg ADAPTIVE_CNN_DATA=${ADAPTIVE_CNN_DATA:-$PWD/data}
PY=${PYTHON:-python3}
RUN=$(mktemp -d)/run
if [ "${DRY_RUN:-0}" = 1 ]; then LAUNCH=(--num-procs 2); EXTRA=(--set train.epochs=1 --set data.train_subset=2000); else LAUNCH=(--num-gpus 1); EXTRA=(); fi
log=$OUT/gpu_eval_check.txt
{
  echo "gpu_eval_check $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null || echo cpu)"
  start=$(date +%s)
  timeout 300 "$PY" -m adaptive_cnn train mnist "${LAUNCH[@]}" --max-restarts 1 --output-dir "$RUN" --no-progress "${EXTRA[@]}"
  echo "train exit $? after $(( $(date +%s) - start )) s"
  "$PY" -m adaptive_cnn evaluate mnist "$RUN/checkpoints/best_model.pth"; echo "evaluate exit $?"
  "$PY" -m adaptive_cnn evaluate mnist "$RUN/checkpoints/best_model.pth" --tta; echo "evaluate --tta exit $?"
  "$PY" - "$RUN" <<'PYEOF'
import sys
from pathlib import Path
from PIL import Image
from adaptive_cnn.config import load_config
from adaptive_cnn.data import load_data
t = load_data(load_config('mnist')).test
folder = Path(sys.argv[1])/'photos'; folder.mkdir()
for i in range(20): Image.fromarray(255 - t.images[i, 0].numpy()).resize((200, 200), Image.BICUBIC).save(folder/f'{i:02d}_label{int(t.labels[i])}.jpg', quality=90)
(folder/'zz_notes.txt').write_text('not an image')
PYEOF
  "$PY" -m adaptive_cnn test mnist "$RUN/checkpoints/best_model.pth" "$RUN/photos" --tta; echo "test exit $? (2 expected: one bad file)"
  cat "$RUN/environment.json"
} 2>&1 | tee "$log"
cp "$RUN/train.log" "$OUT/ddp_train.log" 2>/dev/null
cp "$RUN/evaluation/report.md" "$OUT/report.md" 2>/dev/null
cp "$RUN/evaluation/metrics.json" "$OUT/metrics.json" 2>/dev/null
cp "$RUN/evaluation_tta/metrics.json" "$OUT/metrics_tta.json" 2>/dev/null
cp "$RUN/evaluation/confusion_matrix.png" "$OUT/confusion_matrix.png" 2>/dev/null
cp "$RUN/evaluation/reliability.png" "$OUT/reliability.png" 2>/dev/null
exit 0
