// HF config.json of Llama-family models (FORMATS.md §2), as transformers' LlamaConfig /
// MistralConfig / Qwen2Config read it, from both transformers 4.x (top-level rope_theta +
// rope_scaling) and v5 (rope_parameters) files. Defaults are the config classes' defaults.
// This is the file's content only: what an architecture implies (e.g. Qwen2's q/k/v biases,
// which its config.json does not state) lives in the architecture table in src/model.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ftune {

// RoPE frequency scaling (transformers modeling_rope_utils.py). Supported types: "default",
// "linear" (inv_freq / factor) and "llama3" (FORMATS.md §2 formula); others are rejected.
struct RopeScaling {
  std::string type = "default";
  double factor = 1;
  double low_freq_factor = 1;
  double high_freq_factor = 4;
  int64_t original_max_position_embeddings = 0;
};

struct HFModelConfig {
  std::string model_type;                  // "llama", "mistral", "qwen2", ...
  std::vector<std::string> architectures;  // e.g. {"LlamaForCausalLM"}; may be empty
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // null/absent -> num_attention_heads
  int64_t head_dim = 0;             // null/absent -> hidden_size / num_attention_heads
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000;
  RopeScaling rope_scaling;
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // key absent in Qwen2 configs (biases implied by the arch)
  bool mlp_bias = false;
  std::optional<int64_t> sliding_window;  // Mistral/Qwen2; null -> none
  std::optional<bool> use_sliding_window;  // Qwen2 only
  std::optional<int64_t> bos_token_id;
  std::optional<int64_t> pad_token_id;
  std::vector<int64_t> eos_token_ids;  // "eos_token_id": int or list
  std::string torch_dtype;             // "torch_dtype" (4.x) or "dtype" (v5); "" when absent
  std::string hidden_act = "silu";
  nlohmann::json raw;  // the whole file, for keys not modelled here
};

// Reads and validates config.json; errors name the file and the key (missing required key,
// wrong type, non-positive size, heads not divisible by kv heads, unsupported rope type or
// hidden_act).
HFModelConfig load_hf_config(const std::string& config_json_path);
// Same, from parsed JSON; `origin` names the source in errors.
HFModelConfig parse_hf_config(const nlohmann::json& j, const std::string& origin);

}  // namespace ftune
