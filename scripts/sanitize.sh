#!/usr/bin/env bash
# Builds the whole test suite with AddressSanitizer + UndefinedBehaviorSanitizer and runs it
# (ctest; CTEST_ARGS passes e.g. "-R Reliability|Safetensors|Tokenizer" (no inner quotes: the
# variable is split on spaces, not parsed by the shell again), and SAN_TARGETS="ftune
# test_reliability test_safetensors" builds only those executables). Run it on every
# change to the parsers (src/io, src/data, src/train/config*) and the trainer; CI runs the
# fuzzers (scripts/fuzz.sh), which use the same sanitizers, on every submission.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${FTUNE_SAN_BUILD_DIR:-build-asan}
JOBS=${JOBS:-$(nproc)}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFTUNE_SANITIZE=ON -DFTUNE_CUDA=OFF \
      ${FTUNE_SAN_CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD" -j "$JOBS" ${SAN_TARGETS:+--target $SAN_TARGETS}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
cd "$BUILD"
ctest --output-on-failure -j "$JOBS" ${CTEST_ARGS:-}
