# Shared by the device scripts (gpu_check.sh, gpu_cifar10.sh, stage_cifar10.sh): sourced, not run.

# CIFAR-10's binary version: the sha256 of each file (as in ../shared/data/README.md), and the three part folders it
# travels in (each, with the working tree, under the 64 MiB one device call carries)
declare -A CIFAR10_SHA256=(
  [data_batch_1.bin]=cee916563c9f80d84e3cc88e17fdc0941787f1244f00a67874d45b261883ada5
  [data_batch_2.bin]=a591ca11fa1708a91ee40f54b3da4784ccd871ecf2137de63f51ada8b3fa57ed
  [data_batch_3.bin]=bbe8596564c0f86427f876058170b84dac6670ddf06d79402899d93ceea26f67
  [data_batch_4.bin]=014e562d6e23c72197cc727519169a60359f5eccd8945ad5a09d710285ff4e48
  [data_batch_5.bin]=755304fc0b379caeae8c14f0dac912fbc7d6cd469eb67a1029a08a39453a9add
  [test_batch.bin]=8e2eb146ae340b09e24670f29cabc6326dba54da8789dab6768acf480273f65b
  [batches.meta.txt]=558e74b5e208382e186da55784b4bac2cd52e558448e1b5800990fdb28ed8033
)
CIFAR10_PARTS=("data_batch_1.bin data_batch_2.bin" "data_batch_3.bin data_batch_4.bin" "data_batch_5.bin test_batch.bin batches.meta.txt")
CIFAR10_FILES=(${CIFAR10_PARTS[*]})
cifar10_part_of() {   # FILE → the part folder it travels in
  local i
  for i in 0 1 2; do [[ " ${CIFAR10_PARTS[$i]} " == *" $1 "* ]] && { echo "data/cifar10_part$((i + 1))"; return; }; done
}

# keep_outputs_small OUT REPORT SCRATCH: every file in OUT under 1 MB (what a device call brings back): the report keeps
# its head and tail, any other file that large is dropped and logged (with the caller's `log`)
keep_outputs_small() {
  local out=$1 report=$2 scratch=$3 f size
  for f in "$out"/*; do
    size=$(stat -c %s "$f")
    [ "$size" -lt 1000000 ] && continue
    if [ "$f" = "$report" ]; then
      { head -c 300000 "$f"; printf '\n\n[... %s bytes cut to keep the file under 1 MB ...]\n\n' "$size"; tail -c 600000 "$f"; } > "$scratch/report.cut"
      cp "$scratch/report.cut" "$report"
    else rm -f "$f"; log "removed $(basename "$f"): $size bytes, over 1 MB"; fi
  done
}
