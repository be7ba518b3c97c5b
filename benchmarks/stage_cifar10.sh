#!/usr/bin/env bash
# Stage CIFAR-10 (binary version) for benchmarks/gpu_cifar10.sh in three git-ignored part folders of the repo, each
# small enough to travel to the device machine in one call (the working tree and the carried paths: 64 MiB together):
#   data/cifar10_part1   data_batch_1.bin data_batch_2.bin
#   data/cifar10_part2   data_batch_3.bin data_batch_4.bin
#   data/cifar10_part3   data_batch_5.bin test_batch.bin batches.meta.txt
# The files are copied (not linked) from $ADAPTIVE_CNN_DATA/cifar-10-batches-bin (default ../shared/data, beside the
# repo) and checked against their sha256; prints each part's size and, with the working tree that travels beside it,
# the total of one call against the 64 MiB limit. Exit status 1 on a missing source file, a mismatch or a part too big.
#
#   benchmarks/stage_cifar10.sh          # from anywhere; the folders land in the repo's data/
set -euo pipefail
case ${1:-} in
  -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
  "") ;;
  *) echo "stage_cifar10.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
source benchmarks/device_common.sh
SRC=${ADAPTIVE_CNN_DATA:-../shared/data}/cifar-10-batches-bin
LIMIT=$(( 64 * 1024 * 1024 ))

[ -d "$SRC" ] || { echo "stage_cifar10.sh: $SRC not found (set ADAPTIVE_CNN_DATA to the folder holding cifar-10-batches-bin)" >&2; exit 1; }
git check-ignore -q data/cifar10_part1 || { echo "stage_cifar10.sh: data/ is not git-ignored here; the parts would travel with every call" >&2; exit 1; }
# what travels with every call besides the carried folder: tracked and untracked-not-ignored files
TREE=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | awk 'END { print $1 }')
mib() { awk -v b="$1" 'BEGIN { printf "%.2f MiB", b / 1048576 }'; }
status=0
for i in 1 2 3; do
  dir=data/cifar10_part$i
  mkdir -p "$dir"
  for f in ${CIFAR10_PARTS[$((i - 1))]}; do
    [ -f "$SRC/$f" ] || { echo "stage_cifar10.sh: $SRC/$f missing" >&2; exit 1; }
    if [ -f "$dir/$f" ] && cmp -s "$SRC/$f" "$dir/$f"; then :; else
      rm -f "$dir/$f"; cp "$SRC/$f" "$dir/$f"; chmod u+w "$dir/$f"
    fi
    got=$(sha256sum "$dir/$f" | cut -d' ' -f1)
    [ "$got" = "${CIFAR10_SHA256[$f]}" ] || { echo "stage_cifar10.sh: sha256 mismatch for $dir/$f: $got, expected ${CIFAR10_SHA256[$f]}" >&2; status=1; }
  done
  extra=$(ls -A "$dir" | grep -vxF -e ${CIFAR10_PARTS[$((i - 1))]// / -e } || true)
  [ -z "$extra" ] || echo "stage_cifar10.sh: note: $dir also holds $(echo $extra) (it travels too)"
  size=$(du -cb "$dir" | awk 'END { print $1 }')
  total=$(( size + TREE ))
  verdict=ok; [ "$total" -lt "$LIMIT" ] || { verdict='TOO BIG'; status=1; }
  echo "$dir: $(mib "$size") ($(ls "$dir" | tr '\n' ' ')); with the working tree ($(mib "$TREE")): $(mib "$total") of 64 MiB, $verdict"
done
[ "$status" = 0 ] && echo "staged: carry data/cifar10_part1, data/cifar10_part2, data/cifar10_part3 in three consecutive run calls (see benchmarks/gpu_cifar10.sh --help)"
exit "$status"
