#!/usr/bin/env bash
# Side-by-side training throughput on one GPU, in one call: `ftune bench` and the peer
# (HF Transformers + PEFT, ../shared/peer/hf_lora_bench.py; PEER=path overrides), same shape,
# batch, sequence length and LoRA (r=16, all seven projections), random weights and tokens.
#   bench/compare.sh SHAPE BATCH SEQ GC [PEER_MODES]
#     GC: gc (activation checkpointing in both), offload (ftune --offload, the peer checkpointing) or nogc;  PEER_MODES: "eager compile" (default),
#     or none (ftune only)
# Prints every RESULT line; the JSON lines also go to $OUT/bench.jsonl when OUT is set.
# Environment: FTUNE (build-gpu/ftune), STEPS (10), WARMUP (3), FTUNE_ARGS (extra bench flags).
set -uo pipefail
cd "$(dirname "$0")/.."
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
SHAPE=${1:?shape}; BATCH=${2:?batch}; SEQ=${3:?seq}; GC=${4:?gc|nogc}; MODES=${5:-eager compile}
FTUNE=${FTUNE:-build-gpu/ftune}
PEER=${PEER:-../shared/peer/hf_lora_bench.py}
[ -f "$PEER" ] || PEER=.peer/hf_lora_bench.py
STEPS=${STEPS:-10}; WARMUP=${WARMUP:-3}
LOG=${OUT:+$OUT/bench.jsonl}
# ftune built against the carried libraries (scripts/make_carry.sh) needs them at run time; the
# peer keeps the machine's own.
FTUNE_LD=${LD_LIBRARY_PATH:-}
if [ -d .carry/root/usr ]; then
  ML=$PWD/.carry/root/usr/lib/x86_64-linux-gnu
  FTUNE_LD="$ML:$ML/openblas-openmp:$PWD/.carry/root/usr/lib${FTUNE_LD:+:$FTUNE_LD}"
  ldconfig -p 2>/dev/null | grep -q 'libgfortran\.so\.5 ' || FTUNE_LD="$FTUNE_LD:$PWD/.carry/fallback/lib"
fi
record() { grep '^RESULT ' | sed 's/^RESULT //' | tee -a "${LOG:-/dev/null}"; }

gcflag=(); peer_gc=(--no-gc)
if [ "$GC" = gc ]; then gcflag=(--checkpointing); peer_gc=(); fi
if [ "$GC" = offload ]; then gcflag=(--offload); peer_gc=(); fi  # the peer has no offload: its checkpointing
echo "== ftune bench --preset $SHAPE --batch $BATCH --seq $SEQ ${gcflag[*]} ${FTUNE_ARGS:-}"
LD_LIBRARY_PATH=$FTUNE_LD "$FTUNE" bench --preset "$SHAPE" --batch "$BATCH" --seq "$SEQ" --steps "$STEPS" \
  --warmup "$WARMUP" "${gcflag[@]}" ${FTUNE_ARGS:-} 2>&1 | tee /dev/stderr | record
for m in $MODES; do
  [ "$m" = none ] && continue
  extra=(); [ "$m" = compile ] && extra=(--compile)
  echo "== peer ($m): $PEER --shape $SHAPE --batch $BATCH --seq $SEQ ${peer_gc[*]} ${extra[*]}"
  python3 "$PEER" --shape "$SHAPE" --batch "$BATCH" --seq "$SEQ" --steps "$STEPS" \
    --warmup "$WARMUP" "${peer_gc[@]}" "${extra[@]}" 2>&1 | tail -3 | tee /dev/stderr | record
done
