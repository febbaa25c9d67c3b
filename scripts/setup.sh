#!/usr/bin/env bash
# Installs ftune's build and test dependencies (Debian packages; test-only Python tools from PyPI).
# Idempotent: packages already present are skipped by apt-get and pip.
set -euo pipefail

PKGS=(build-essential cmake pkg-config git
      libyaml-cpp-dev nlohmann-json3-dev libcli11-dev libfmt-dev libspdlog-dev
      libopenblas-dev libopenblas-openmp-dev libgloo-dev libpcre2-dev libgtest-dev libgmock-dev libbenchmark-dev
      python3 python3-pip
      clang libclang-rt-14-dev)  # libFuzzer + sanitizer runtimes for scripts/fuzz.sh

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

# Test-only Python tools (tokenizer parity, chat-template rendering, TensorBoard reader, llama.cpp's
# GGUF reader for the export test).
PY=${PYTHON:-python3}
PIP_PKGS=(numpy tokenizers jinja2 tensorboard safetensors gguf)
need_pip=()
for m in "${PIP_PKGS[@]}"; do
  mod=$m
  "$PY" -c "import $mod" >/dev/null 2>&1 || need_pip+=("$m")
done
if [ "${#need_pip[@]}" -gt 0 ]; then
  echo "setup: pip installing ${need_pip[*]}"
  "$PY" -m pip install -q "${need_pip[@]}" || "$PY" -m pip install -q --break-system-packages "${need_pip[@]}"
fi

# cuDNN's fused attention needs the header-only cudnn-frontend (MIT), published on PyPI only as a
# wheel: when the CUDA toolkit is here, its include/ folder is unpacked into .deps/cudnn_frontend
# (CMake looks there). Without it the CUDA build still works, with ftune's own attention kernels.
CUDNN_FE_VERSION=1.32.0
FE_DIR="$(cd "$(dirname "$0")/.." && pwd)/.deps/cudnn_frontend"
if { command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ]; } &&
   [ ! -f "$FE_DIR/include/cudnn_frontend.h" ]; then
  tmp=$(mktemp -d)
  if "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
       --implementation cp --platform manylinux_2_28_x86_64 -d "$tmp" \
       "nvidia-cudnn-frontend==$CUDNN_FE_VERSION" &&
     mkdir -p "$FE_DIR" &&
     "$PY" - "$tmp"/nvidia_cudnn_frontend-*.whl "$FE_DIR" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith("include/")])
PY
  then
    echo "setup: cudnn-frontend $CUDNN_FE_VERSION headers in $FE_DIR"
  else
    echo "setup: WARNING: could not fetch cudnn-frontend; the CUDA build will use ftune's own attention kernels"
  fi
  rm -rf "$tmp"
fi
echo "setup: dependencies present"
