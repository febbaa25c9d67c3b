#!/usr/bin/env bash
# FP8 base weights against bf16 in one call (issue 6 item 10): `ftune bench` of a preset with the
# projections in FP8 (--fp8) and in bf16, same shape, batch, sequence and mode; then, with
# LOSS_STEPS > 0, a loss curve of each: LOSS_STEPS steps cycling over 4 fixed batches at
# LOSS_LR (the adapter memorises them, so the loss falls), every step's loss in RESULT "losses".
#   bench/fp8.sh SHAPE BATCH SEQ [extra ftune bench flags, e.g. --checkpointing]
# RESULT lines go to $OUT/bench.jsonl when OUT is set. Environment: FTUNE (build-gpu/ftune),
# STEPS (10), WARMUP (3), LOSS_STEPS (0), LOSS_LR (1e-3), PROFILE (1: also --profile).
set -uo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
SHAPE=${1:?shape}; BATCH=${2:?batch}; SEQ=${3:?seq}; shift 3
FTUNE=${FTUNE:-build-gpu/ftune}
STEPS=${STEPS:-10}; WARMUP=${WARMUP:-3}; LOSS_STEPS=${LOSS_STEPS:-0}; LOSS_LR=${LOSS_LR:-1e-3}
PROFILE=${PROFILE:-1}
LOG=${OUT:+$OUT/bench.jsonl}
run() {
  echo "== $FTUNE bench --preset $SHAPE --batch $BATCH --seq $SEQ $*"
  out=$("$FTUNE" bench --preset "$SHAPE" --batch "$BATCH" --seq "$SEQ" "$@" 2>&1)
  echo "$out" | grep -vE '^RESULT '
  echo "$out" | grep -E '^RESULT ' | cut -c1-400
  [ -n "${LOG:-}" ] && echo "$out" | grep '^RESULT ' | sed 's/^RESULT //' >>"$LOG"
}
prof=(); [ "$PROFILE" = 1 ] && prof=(--profile)
for mode in --fp8 ""; do
  run --steps "$STEPS" --warmup "$WARMUP" "${prof[@]}" $mode "$@"
done
if [ "$LOSS_STEPS" -gt 0 ]; then
  for mode in --fp8 ""; do
    run --steps "$LOSS_STEPS" --warmup 0 --repeat-batches 4 --lr "$LOSS_LR" $mode "$@"
  done
fi
