#!/usr/bin/env bash
# Builds ftune (CPU tests; the CUDA part is compiled too when nvcc is present) and runs the
# whole CPU test suite through ctest, then every libFuzzer target for FUZZ_SECONDS each
# (scripts/fuzz.sh; FTUNE_RUN_FUZZ=0 skips it).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${FTUNE_BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release ${FTUNE_CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD" -j "$JOBS"
(cd "$BUILD" && ctest --output-on-failure -j "$JOBS" ${CTEST_ARGS:-})
if [ "${FTUNE_RUN_FUZZ:-1}" != 0 ]; then
  if command -v "${CXX_FUZZ:-clang++}" >/dev/null; then
    FUZZ_SECONDS=${FUZZ_SECONDS:-20} bash scripts/fuzz.sh
  else
    echo "test: ${CXX_FUZZ:-clang++} not found, fuzzers NOT run (bash scripts/setup.sh installs clang)"
  fi
fi
