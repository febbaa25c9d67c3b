#!/usr/bin/env bash
# Does llama.cpp load what `ftune export --format gguf` writes, and generate what ftune does?
# A manual check (llama.cpp is not a dependency): trains the default job for a few steps, merges,
# exports f16 and q8_0 GGUF files, runs llama.cpp's `llama-simple` (greedy) on each and
# `ftune generate` (greedy, on the merged model) on the same prompt, and checks that llama.cpp's
# output (the prompt, then the continuation) ends with ftune's continuation.
#   LLAMA_SIMPLE=/path/to/llama-simple FTUNE=build/ftune bash dev/llama_cpp/check_gguf.sh
# Build llama-simple from llama.cpp's sources (e.g. the copy inside the llama-cpp-python sdist on
# PyPI): cmake -S llama.cpp -B b -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF && cmake --build b
# --target llama-simple.
set -euo pipefail
FTUNE=$(realpath "${FTUNE:-build/ftune}")
LLAMA_SIMPLE=$(realpath "${LLAMA_SIMPLE:?set LLAMA_SIMPLE to the llama-simple binary of llama.cpp}")
WORK=$(mktemp -d /tmp/ftune_gguf_check.XXXX)
PROMPT=${PROMPT:-"The capital of France is"}
N=${N:-16}
STEPS=${STEPS:-30}
cd "$WORK"
"$FTUNE" train train.max_steps="$STEPS" train.eval_steps=0 logging.console=none >/dev/null 2>&1
"$FTUNE" merge --model outputs/base_model --adapter outputs/adapter --out merged --dtype fp32 >/dev/null
want=$("$FTUNE" generate --model merged --prompt "$PROMPT" --max-new-tokens "$N" 2>/dev/null)
echo "ftune generate: $want"
status=0
for type in f16 q8_0; do
  "$FTUNE" export --model outputs/base_model --adapter outputs/adapter --format gguf --type "$type" \
      --out "model-$type.gguf" >/dev/null
  got=$("$LLAMA_SIMPLE" -m "model-$type.gguf" -n "$N" "$PROMPT" 2>"llama-$type.log" | tail -n 1)
  echo "llama.cpp $type: $got"
  if [[ "$got" != *"$want" ]]; then
    echo "llama.cpp $type generated other text than ftune"; status=1
  fi
  if ! grep -q "loaded meta data\|llama_model_loader" "llama-$type.log"; then
    echo "llama.cpp did not load model-$type.gguf (see $WORK/llama-$type.log)"; status=1
  fi
done
echo "work folder: $WORK"
exit $status
