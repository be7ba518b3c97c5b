#!/usr/bin/env bash
# The project's test command (run by `make test`, hence by .ci/run).
# Fails when the package does not match the notebooks, when a notebook fails, or when nothing ran.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== notebooks and package in sync (nbdev_clean, nbdev_export, git status)"
# On a clean clone (CI) git status must stay empty; in a working copy with edits, the two commands must change nothing.
snapshot() { git status --porcelain -- nbs adaptive_cnn; git diff -- nbs adaptive_cnn; }
before=$(snapshot)
nbdev_clean
nbdev_export
if [ "$before" != "$(snapshot)" ]; then
  echo "The notebooks were not clean or the package did not match them; nbdev_clean && nbdev_export changed:"
  git status --porcelain -- nbs adaptive_cnn
  exit 1
fi

echo "== docs (sidebar and links resolve, nbdev_proc_nbs without warnings; no Quarto needed)"
python tools/check_docs.py

echo "== notebook outputs (each notebook stores at most 300 KB of outputs: tools/check_notebook_outputs.py)"
python tools/check_notebook_outputs.py

echo "== nbdev_test"
notebooks=$(ls nbs/[0-9]*.ipynb nbs/index.ipynb 2>/dev/null | wc -l)
[ "$notebooks" -gt 0 ] || { echo "no notebooks found in nbs/"; exit 1; }
log=$(mktemp)
# nbdev_test runs one notebook per core; one torch thread each keeps them from fighting over the cores.
OMP_NUM_THREADS=1 nbdev_test --do_print --timing 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
[ "$status" -eq 0 ] || exit "$status"
ran=$(grep -c '^- Completed ' "$log" || true)
grep -q '^Success' "$log" && [ "$ran" -gt 0 ] || { echo "nbdev_test ran no notebook"; exit 1; }
echo "nbdev_test: $ran notebooks passed"

echo "== pytest"
# pytest exits 5 when it collected no test: that fails this script too.
# the 25 slowest tests are listed: CI gives the whole script 20 minutes, and they are where to look first
python -m pytest tests -q --durations=25
