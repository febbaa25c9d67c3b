#!/usr/bin/env bash
# Runs an example program as the two ranks of a torchrun-style environment (what
# `torchrun --no-python --nproc_per_node=2 PROGRAM ARGS...` sets), so that ftune::api::Job::train()
# runs each rank in-process. Usage: run_as_ranks.sh PORT PROGRAM ARGS...; fails if a rank fails.
set -u
port=$1; shift
pids=()
for r in 0 1; do
  RANK=$r LOCAL_RANK=$r WORLD_SIZE=2 LOCAL_WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port \
    OMP_NUM_THREADS=1 "$@" &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
exit $rc
