#!/usr/bin/env bash
# The longest context that trains: `ftune bench` of one row per step at growing lengths, with
# checkpointing offload (and --4bit for QLoRA), until one fails (out of memory) or runs past its
# time limit. One step each, no warm-up (the first step also builds cuDNN's graphs), so tokens/s
# slightly understates steady state.
#   bench/long_context.sh [SHAPE] [extra ftune bench flags, e.g. --4bit]
# Environment: FTUNE (build-gpu/ftune), SEQS (lengths to try, in order; default 131072 262144
# 393216), LIMIT_S (seconds per length, default 540). RESULT lines go to $OUT/bench.jsonl when OUT
# is set. `ftune plan --preset SHAPE --seq S --batch 1 --checkpointing offload --4bit on` predicts
# each run's memory and time first (a step at 384k tokens of llama-3-8b takes about 6 minutes).
set -uo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
SHAPE=${1:-llama-3-8b}; shift || true
FTUNE=${FTUNE:-build-gpu/ftune}
SEQS=${SEQS:-131072 262144 393216}
LIMIT_S=${LIMIT_S:-540}
LOG=${OUT:+$OUT/bench.jsonl}
for s in $SEQS; do
  echo "== $SHAPE, 1 x $s tokens, offload $*"
  out=$(timeout "$LIMIT_S" "$FTUNE" bench --preset "$SHAPE" --batch 1 --seq "$s" --steps 1 \
        --warmup 0 --offload "$@" 2>&1)
  rc=$?
  echo "$out" | grep -E '^(bench|RESULT|error)'
  [ -n "${LOG:-}" ] && echo "$out" | grep '^RESULT ' | sed 's/^RESULT //' >>"$LOG"
  if [ "$rc" -ne 0 ]; then
    [ "$rc" -eq 124 ] && echo "$s: stopped after ${LIMIT_S} s" || echo "$s: failed (exit $rc)"
    break
  fi
done
