#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz (clang, AddressSanitizer + UndefinedBehaviorSanitizer
# on every library) and runs each for FUZZ_SECONDS seconds (default 20) from its committed seed
# corpus (tests/fuzz/corpus/<name>). Any crash, sanitizer report, timeout or exception other
# than ftune::Error fails the script; the input that did it is left in
# <build>/findings/<name>/ (copy it into a regression test, then into the corpus).
#   FUZZ_SECONDS=300 bash scripts/fuzz.sh              # a longer local run
#   FUZZ_TARGETS="tokenizer dataset" bash scripts/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${FTUNE_FUZZ_BUILD_DIR:-build-fuzz}
SECS=${FUZZ_SECONDS:-20}
JOBS=${JOBS:-$(nproc)}
CXX_FUZZ=${CXX_FUZZ:-clang++}
TARGETS=${FUZZ_TARGETS:-"safetensors hf_config tokenizer adapter_config yaml_config dataset chat_template"}

# -O1 with line tables: what libFuzzer recommends, and the quickest build for CI.
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" -DCMAKE_CXX_COMPILER="$CXX_FUZZ" \
      -DFTUNE_FUZZ=ON -DFTUNE_TESTS=OFF -DFTUNE_CUDA=OFF ${FTUNE_FUZZ_CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD" -j "$JOBS" --target fuzz_all

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
failed=()
for t in $TARGETS; do
  work="$BUILD/corpus/$t"          # new inputs land here; the committed seeds stay as they are
  findings="$BUILD/findings/$t/"
  mkdir -p "$work" "$findings"
  echo "fuzz: $t for ${SECS}s"
  # A fixed seed (FUZZ_SEED, default 1) makes CI runs repeatable: the same mutations in the same
  # order, only fewer of them on a slower machine. FUZZ_SEED=0 lets libFuzzer pick one.
  if ! "$BUILD/fuzz/fuzz_$t" -seed="${FUZZ_SEED:-1}" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 \
        -max_len=65536 -print_final_stats=1 -artifact_prefix="$findings" \
        "$work" "tests/fuzz/corpus/$t" >"$BUILD/fuzz_$t.log" 2>&1; then
    tail -n 40 "$BUILD/fuzz_$t.log"
    failed+=("$t")
  else
    grep -E "stat::number_of_executed_units|stat::new_units_added" "$BUILD/fuzz_$t.log" | tr '\n' ' '
    echo
  fi
done
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (inputs in $BUILD/findings/)"
  exit 1
fi
echo "fuzz: all targets ran ${SECS}s without a finding"
