#!/usr/bin/env bash
# Builds ftune (CPU tests; the CUDA part is compiled too when nvcc is present) and runs the
# whole CPU test suite through ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${FTUNE_BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release ${FTUNE_CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD" -j "$JOBS"
cd "$BUILD"
ctest --output-on-failure -j "$JOBS" ${CTEST_ARGS:-}
