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
echo "setup: dependencies present"
