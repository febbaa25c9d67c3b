#!/usr/bin/env bash
# QLoRA against bf16 LoRA in one call: `ftune bench` of a preset with the projections in NF4
# (--4bit) and in bf16, same shape, batch, sequence and checkpointing mode.
#   bench/qlora.sh SHAPE BATCH SEQ [extra ftune bench flags, e.g. --checkpointing]
# RESULT lines go to $OUT/bench.jsonl when OUT is set. Environment: FTUNE (build-gpu/ftune),
# STEPS (10), WARMUP (3).
set -uo pipefail
cd "$(dirname "$0")/.."
SHAPE=${1:?shape}; BATCH=${2:?batch}; SEQ=${3:?seq}; shift 3
export FTUNE_ARGS="$*"
for mode in "--4bit" ""; do
  FTUNE_ARGS="$* $mode" bash bench/compare.sh "$SHAPE" "$BATCH" "$SEQ" nogc none
done
