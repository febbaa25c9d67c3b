// Text generation with a KV cache: the prompt is run once (prefill), then one token at a time
// (decode), each step attending over the cached keys/values (Ops::attention_kv_cache) instead of
// re-running the sequence. The layer math is LlamaModel's forward (HF LlamaForCausalLM) on the
// same base weights and LoRA adapter (applied unmerged, without dropout, through
// lora_group_forward), so the logits of every position equal those of a full forward over the
// whole sequence (tests/unit/test_generator.cpp checks this to 1e-5 in fp32 on the CPU).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/kv_cache.h"
#include "model/llama_model.h"
#include "model/sampling.h"

namespace ftune {

struct GenerationOptions {
  int64_t max_new_tokens = 256;
  SamplingOptions sampling;
  std::vector<int32_t> stop_ids;  // generation ends after any of these (EOS, end of turn)
};

struct GenerationResult {
  std::vector<int32_t> ids;  // the generated tokens, including the stop token when one ended it
  std::string stop_reason;   // "stop" (a stop token), "length" (max_new_tokens) or "cancelled"
  int64_t prompt_tokens = 0;
  int64_t reused_tokens = 0;  // prompt tokens whose keys/values were already cached
};

class Generator {
 public:
  // The model must outlive the generator; its adapter (if any) may be trained in between calls.
  explicit Generator(LlamaModel& model, int64_t initial_capacity = 256);

  // Runs `ids` after the cached tokens (appending them to the cache) and returns F32 CPU logits
  // [ids.size(), V] of every new position (all_logits) or [1, V] of the last one.
  Tensor forward(const std::vector<int32_t>& ids, bool all_logits = false);

  // Generates after `prompt`: the cached tokens it starts with are reused (the cache is cut to
  // the longest common prefix, keeping at least the last prompt token to run), the rest is run,
  // then tokens are sampled until a stop token or max_new_tokens. on_token (may be empty) sees
  // every generated token as it comes; returning false stops generation early.
  GenerationResult generate(const std::vector<int32_t>& prompt, const GenerationOptions& opts,
                            const std::function<bool(int32_t)>& on_token = nullptr);

  // The tokens whose keys/values the cache holds.
  const std::vector<int32_t>& cached_tokens() const { return tokens_; }
  void reset();
  const KvCache& cache() const { return cache_; }

 private:
  void ensure_rope(int64_t positions);

  LlamaModel& model_;
  KvCache cache_;
  std::vector<int32_t> tokens_;
  std::vector<float> inv_freq_;
  Tensor rope_cos_, rope_sin_;
  int64_t rope_positions_ = 0;
};

}  // namespace ftune
