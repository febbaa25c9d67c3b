#!/usr/bin/env bash
# The GPU machine's one script (DESIGN.md, "Tests, in tiers", tier 2): builds ftune with CUDA in
# build-gpu and runs, stage by stage,
#   env       what the machine is (GPU, driver, toolkit, compilers, Python packages)
#   build     cmake -DFTUNE_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90, make -j16
#   cuda      tests/cuda (every CUDA op and the whole model against the CPU reference)
#   memcheck  the CUDA tests again under compute-sanitizer memcheck, and racecheck on the
#             kernels with shared-memory reductions (skipped if compute-sanitizer is missing)
#   ctest     the CPU test suite (the CUDA tests ran above and are excluded here)
#   goldens   python3 tests/golden/make_goldens.py --check (HF Transformers + PEFT on this machine
#             reproduce the committed fixtures)
#   defaultjob  `ftune train` (the embedded default job) on the CPU and on the GPU, timed
#   nccl1     the default job as the one rank of a torchrun-style environment (NCCL at world
#             size 1) against the plain GPU run: same losses
#   interop   PEFT loads the GPU-trained adapter unchanged and agrees with `ftune eval`
#             (tests/interop/check_peft_load.py); `ftune merge` equals PEFT's merge_and_unload
#             (check_merge.py); `ftune generate` greedy equals HF generate (check_generate.py)
#   qlora     QLoRA against HF + PEFT + bitsandbytes (tests/interop/check_qlora.py); needs the
#             bitsandbytes wheel: carry it in .whl/ (the device README says how), or it fails
# Each stage writes <stage>.log (and gtest XML) into $OUT when set, else build-gpu/gpu-logs, and
# summary.txt lists every stage's result. All stages run even when one fails; the exit status
# is non-zero if any failed. Environment:
#   FTUNE_GPU_STAGES="env build cuda memcheck ctest goldens defaultjob nccl1 interop qlora"  stages to run
#   FTUNE_GPU_BUILD_DIR (build-gpu), JOBS (16), CMAKE_CUDA_ARCHITECTURES (90)
#   FTUNE_GPU_TARGETS     build only these targets (e.g. "ftune test_cuda_ops"; default: all)
#   FTUNE_GPU_CMAKE_ARGS  extra configure arguments (e.g. -DCMAKE_IGNORE_PREFIX_PATH=/usr to
#                         prove that .carry alone satisfies the build)
# Build dependencies missing on the machine come from .carry/ (scripts/make_carry.sh, made on
# Debian 12): .carry/root is a /usr tree passed through CMAKE_PREFIX_PATH, CPATH, LIBRARY_PATH,
# PKG_CONFIG_PATH and LD_LIBRARY_PATH; .carry/debs, if that is what was carried, is unpacked first.
set -uo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD

# Multicast over NVLink (NVLS) is off on these machines (the device notes say why).
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

BUILD=${FTUNE_GPU_BUILD_DIR:-build-gpu}
JOBS=${JOBS:-16}
ARCHS=${CMAKE_CUDA_ARCHITECTURES:-90}
STAGES=${FTUNE_GPU_STAGES:-env build cuda memcheck ctest goldens defaultjob nccl1 interop qlora}
LOGS=${OUT:-$SRC/$BUILD/gpu-logs}
mkdir -p "$BUILD" "$LOGS"
LOGS=$(cd "$LOGS" && pwd)
SUMMARY=$LOGS/summary.txt
ORIG_LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}  # Python gets the machine's own libraries back
: >"$SUMMARY"
failed=0

say() { echo "gpu.sh: $*" | tee -a "$SUMMARY"; }

# run_stage NAME COMMAND...: runs a stage, output to NAME.log (and to stdout), result in summary.
run_stage() {
  local name=$1; shift
  case " $STAGES " in *" $name "*) ;; *) say "$name: skipped (not in FTUNE_GPU_STAGES)"; return 0 ;; esac
  local start=$SECONDS rc
  echo "=== $name: $*" | tee "$LOGS/$name.log"
  "$@" 2>&1 | tee -a "$LOGS/$name.log"
  rc=${PIPESTATUS[0]}
  if [ "$rc" -eq 0 ]; then
    say "$name: ok ($((SECONDS - start)) s)"
  else
    say "$name: FAILED (exit $rc, $((SECONDS - start)) s; see $name.log)"
    failed=1
  fi
  return 0
}

# ---- dependencies carried in .carry/ --------------------------------------------------------
CMAKE_DEP_ARGS=()
CARRY=$SRC/.carry
if [ -d "$CARRY/debs" ] && [ ! -d "$CARRY/root" ]; then
  scripts/make_carry.sh --extract 2>&1 | tee "$LOGS/carry.log"
fi
if [ -d "$CARRY/root/usr" ]; then
  R=$CARRY/root/usr
  ML=$R/lib/x86_64-linux-gnu
  export CPATH="$R/include:$R/include/x86_64-linux-gnu/openblas-openmp${CPATH:+:$CPATH}"
  export LIBRARY_PATH="$ML:$ML/openblas-openmp${LIBRARY_PATH:+:$LIBRARY_PATH}"
  export PKG_CONFIG_PATH="$ML/pkgconfig:$R/share/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  run_ld="$ML:$ML/openblas-openmp:$R/lib"
  # OpenBLAS needs libgfortran.so.5; the carried (older) copy is used only if the system has none.
  if ! ldconfig -p 2>/dev/null | grep -q 'libgfortran\.so\.5 '; then
    run_ld="$run_ld:$CARRY/fallback/lib"
  fi
  # Needed at build time too: gtest_discover_tests runs each test binary after linking it.
  export LD_LIBRARY_PATH="$run_ld${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  CMAKE_DEP_ARGS+=("-DCMAKE_PREFIX_PATH=$R" "-DCMAKE_LIBRARY_PATH=$ML/openblas-openmp")
  if ! command -v pkg-config >/dev/null; then  # the carried pkgconf, with its own library
    printf '#!/bin/sh\nLD_LIBRARY_PATH="%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "%s" "$@"\n' \
      "$ML" "$R/bin/pkgconf" >"$BUILD/carry-pkg-config"
    chmod +x "$BUILD/carry-pkg-config"
    CMAKE_DEP_ARGS+=("-DPKG_CONFIG_EXECUTABLE=$SRC/$BUILD/carry-pkg-config")
  fi
  say "dependencies: using $CARRY/root ($(du -sm "$CARRY" | cut -f1) MB)"
else
  say "dependencies: no .carry/root, using the system's"
fi

# ---- stages -----------------------------------------------------------------------------------
stage_env() {
  echo "host: $(hostname)  $(. /etc/os-release 2>/dev/null; echo "${PRETTY_NAME:-unknown OS}")"
  nvidia-smi || echo "(nvidia-smi failed)"
  command -v nvcc >/dev/null && nvcc --version | tail -2 || echo "nvcc: not on PATH"
  cmake --version | head -1 || echo "cmake: not found"
  c++ --version | head -1 || echo "c++: not found"
  command -v compute-sanitizer >/dev/null && echo "compute-sanitizer: $(command -v compute-sanitizer)"
  LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH python3 - <<'PY' || true
import importlib
for m in ("torch", "transformers", "peft", "safetensors", "numpy", "tokenizers", "jinja2", "tensorboard"):
    try:
        mod = importlib.import_module(m)
        extra = ""
        if m == "torch":
            extra = f" cuda={mod.version.cuda} available={mod.cuda.is_available()}"
        print(f"{m} {getattr(mod, '__version__', '?')}{extra}")
    except Exception as e:  # report, do not fail: the stage that needs it will
        print(f"{m}: not importable ({type(e).__name__}: {e})")
PY
  return 0
}

stage_build() {
  # nvcc may not be on PATH in a fresh shell; the toolkit's usual home is tried too.
  local nvcc_arg=()
  if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
    nvcc_arg=("-DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc")
  fi
  cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DFTUNE_CUDA=ON \
    "-DCMAKE_CUDA_ARCHITECTURES=$ARCHS" "${nvcc_arg[@]}" "${CMAKE_DEP_ARGS[@]}" \
    ${FTUNE_GPU_CMAKE_ARGS:-} || return 1
  grep -q '^FTUNE_CUDA:BOOL=ON' "$BUILD/CMakeCache.txt" || { echo "FTUNE_CUDA is not ON"; return 1; }
  echo "--- where the dependencies were found:"
  local keys='fmt_DIR|spdlog_DIR|yaml-cpp_DIR|nlohmann_json_DIR|CLI11_DIR|GTest_DIR'
  keys+='|BLAS_[a-z]+_LIBRARY|CBLAS_INCLUDE_DIR|PKG_CONFIG_EXECUTABLE|CMAKE_CUDA_COMPILER'
  keys+='|Python3_EXECUTABLE'
  grep -E "^($keys):" "$BUILD/CMakeCache.txt"
  grep -E '^PCRE2_(INCLUDEDIR|LIBDIR|LINK_LIBRARIES):' "$BUILD/CMakeCache.txt" || true
  cmake --build "$BUILD" -j "$JOBS" ${FTUNE_GPU_TARGETS:+--target $FTUNE_GPU_TARGETS}
}

cuda_test_binaries() { find "$BUILD/tests" -maxdepth 1 -type f -perm -u+x -name 'test_cuda_*' | sort; }

stage_cuda() {
  local bins rc=0
  bins=$(cuda_test_binaries)
  [ -n "$bins" ] || { echo "no tests/cuda binaries in $BUILD/tests (build failed?)"; return 1; }
  for t in $bins; do
    if ! "$t" --gtest_output="xml:$LOGS/$(basename "$t").xml"; then
      rc=1
      # Again with a stream sync after every launch, so an asynchronous fault names its kernel.
      echo "--- $(basename "$t") failed; rerunning with FTUNE_CUDA_SYNC=1"
      FTUNE_CUDA_SYNC=1 "$t" --gtest_output="xml:$LOGS/$(basename "$t")-sync.xml"
    fi
    # A skipped GPU test here means the GPU was not usable: that is a failure on this machine.
    if grep -q 'result="skipped"' "$LOGS/$(basename "$t").xml" 2>/dev/null; then
      echo "$(basename "$t"): tests were SKIPPED on the GPU machine"
      rc=1
    fi
  done
  return $rc
}

stage_memcheck() {
  if ! command -v compute-sanitizer >/dev/null; then
    local cs=/usr/local/cuda/bin/compute-sanitizer
    [ -x "$cs" ] || { echo "compute-sanitizer not found: memcheck not run"; return 0; }
    PATH="$PATH:/usr/local/cuda/bin"
  fi
  local bins rc=0
  bins=$(cuda_test_binaries)
  [ -n "$bins" ] || { echo "no tests/cuda binaries"; return 1; }
  # Each binary with the suites worth sanitizing (a binary whose filter selects nothing would end
  # before any CUDA call, which compute-sanitizer counts as an error): every op against the CPU
  # (but the allocator's deliberate out-of-memory, whose failed cudaMalloc it would report), and
  # the whole bf16 model forward/backward (flash attention, fused ops, cuBLASLt) once.
  local filter
  for t in $bins; do
    case $(basename "$t") in
      test_cuda_ops) filter='CudaVsCpu.*:-CudaVsCpu.AllocatorOutOfMemoryIsATypedError' ;;
      test_cuda_bf16_training) filter='*ForwardBackwardMatchesFp32Cpu*' ;;
      test_cuda_flash_attention) filter='FlashAttention.PeakedSoftmax*' ;;
      test_cuda_fp8) filter='CudaFp8.Quantize*:CudaFp8.Gemm*:CudaFp8.Transpose*' ;;
      *) continue ;;
    esac
    # Out-of-bounds and misaligned accesses, uninitialized device memory, leaks on exit.
    compute-sanitizer --tool memcheck --error-exitcode 97 --leak-check full \
      "$t" --gtest_filter="$filter" || rc=1
  done
  # Shared-memory races in the block reductions (norms, cross-entropy, sum of squares).
  compute-sanitizer --tool racecheck --error-exitcode 97 "$BUILD/tests/test_cuda_ops" \
    --gtest_filter='CudaVsCpu.RmsNorm*:CudaVsCpu.LmHead*:CudaVsCpu.AxpyScale*:CudaVsCpu.NaN*' || rc=1
  return $rc
}

stage_ctest() {
  (cd "$BUILD" && ctest --output-on-failure -j "$JOBS" -E '^(CudaVsCpu|CudaHostOnly|CudaNccl)\.' \
    --output-junit "$LOGS/ctest.xml")
}

stage_goldens() {
  # Python runs with the machine's own libraries, not the carried ones.
  LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH python3 tests/golden/make_goldens.py --check
}

# The embedded default job on the CPU and on the GPU (same losses expected; wall times go to
# docs/BENCHMARKS.md), then PEFT loading the GPU-trained adapter unchanged.
stage_defaultjob() {
  local d
  for dev in cpu cuda; do
    d=$SRC/$BUILD/defaultjob-$dev
    rm -rf "$d"
    echo "--- ftune train train.device=$dev"
    ( time "$SRC/$BUILD/ftune" train "train.output_dir=$d" "train.device=$dev" logging.console=none ) \
      2>&1 | grep -E "done:|error|real|user" || return 1
  done
}

# NCCL at world size 1 through the command line: the default job as the one rank of a
# torchrun-style environment (NCCL communicator, DataParallelSync) against a plain GPU run, both
# in float32 (so the comparison sees the communication path, not bf16 rounding of a differently
# ordered scaling); the losses must agree to a relative 1e-5.
stage_nccl1() {
  local d=$SRC/$BUILD/defaultjob-nccl1 p=$SRC/$BUILD/defaultjob-cuda-f32
  rm -rf "$d" "$p"
  "$SRC/$BUILD/ftune" train "train.output_dir=$p" train.device=cuda model.dtype=float32 \
    logging.console=none 2>&1 | grep -E "done:|error" || return 1
  RANK=0 LOCAL_RANK=0 WORLD_SIZE=1 LOCAL_WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29611 \
    "$SRC/$BUILD/ftune" train "train.output_dir=$d" train.device=cuda model.dtype=float32 \
    logging.console=none 2>&1 | grep -E "distributed:|done:|error" || return 1
  LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH python3 - "$d" "$p" <<'PY'
import json, sys
def losses(d):
    return [json.loads(l).get("loss", json.loads(l).get("eval_loss")) for l in open(d + "/metrics.jsonl")]
a, b = losses(sys.argv[1]), losses(sys.argv[2])
assert len(a) == len(b), (len(a), len(b))
worst = max(abs(x - y) / abs(y) for x, y in zip(a, b))
print(f"nccl world 1 vs no communicator: {len(a)} losses, worst relative difference {worst:.2e}")
sys.exit(0 if worst < 1e-5 else 1)
PY
}

stage_interop() {
  # ftune runs with the carried libraries (a wrapper), Python with the machine's own.
  local wrap=$SRC/$BUILD/ftune-wrapped
  printf '#!/bin/sh\nLD_LIBRARY_PATH="%s" exec "%s" "$@"\n' "${LD_LIBRARY_PATH:-}" "$SRC/$BUILD/ftune" >"$wrap"
  chmod +x "$wrap"
  local out=$SRC/$BUILD/defaultjob-cuda rc=0
  LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH python3 tests/interop/check_peft_load.py --ftune "$wrap" \
    --out "$out" || rc=1
  # ftune merge against PEFT's merge_and_unload (logits in fp32/bf16/fp16)
  LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH python3 tests/interop/check_merge.py --ftune "$wrap" \
    --base "$out/base_model" --adapter "$out/adapter" || rc=1
  # ftune generate (greedy, on the GPU in bf16 and on the CPU) against HF generate
  for dev in cpu cuda; do
    LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH python3 tests/interop/check_generate.py --ftune "$wrap" \
      --out "$out" --device $dev || rc=1
  done
  return $rc
}

stage_qlora() {
  local wrap=$SRC/$BUILD/ftune-wrapped site=$SRC/$BUILD/qlora-site
  printf '#!/bin/sh\nLD_LIBRARY_PATH="%s" exec "%s" "$@"\n' "${LD_LIBRARY_PATH:-}" "$SRC/$BUILD/ftune" >"$wrap"
  chmod +x "$wrap"
  if ! LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH python3 -c 'import bitsandbytes' 2>/dev/null; then
    ls "$SRC"/.whl/bitsandbytes-*.whl >/dev/null 2>&1 || { echo "no bitsandbytes and no .whl/bitsandbytes-*.whl"; return 1; }
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$site" "$SRC"/.whl/bitsandbytes-*.whl || return 1
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  LD_LIBRARY_PATH=$ORIG_LD_LIBRARY_PATH python3 tests/interop/check_qlora.py --ftune "$wrap"
}

run_stage env stage_env
run_stage build stage_build
run_stage cuda stage_cuda
run_stage memcheck stage_memcheck
run_stage ctest stage_ctest
run_stage goldens stage_goldens
run_stage defaultjob stage_defaultjob
run_stage nccl1 stage_nccl1
run_stage interop stage_interop
run_stage qlora stage_qlora

echo "--- summary ($SUMMARY)"
cat "$SUMMARY"
exit $failed
