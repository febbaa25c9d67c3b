#include "model/model_spec.h"

#include "core/error.h"
#include "io/hf_config.h"

namespace ftune {

std::array<int64_t, 2> ModelSpec::proj_shape(Proj p) const {
  switch (p) {
    case Proj::Q: return {q_dim(), hidden_size};
    case Proj::K:
    case Proj::V: return {kv_dim(), hidden_size};
    case Proj::O: return {hidden_size, q_dim()};
    case Proj::Gate:
    case Proj::Up: return {intermediate_size, hidden_size};
    case Proj::Down: return {hidden_size, intermediate_size};
  }
  fail("proj_shape: bad projection");
}

void ModelSpec::validate() const {
  FTUNE_CHECK(vocab_size > 0 && hidden_size > 0 && intermediate_size > 0 && num_layers > 0 &&
                  num_heads > 0 && num_kv_heads > 0 && head_dim > 0,
              "model spec: sizes must be positive (vocab {}, hidden {}, intermediate {}, layers {}, "
              "heads {}, kv_heads {}, head_dim {})",
              vocab_size, hidden_size, intermediate_size, num_layers, num_heads, num_kv_heads,
              head_dim);
  FTUNE_CHECK(num_heads % num_kv_heads == 0,
              "model spec: num_attention_heads {} is not a multiple of num_key_value_heads {}",
              num_heads, num_kv_heads);
  FTUNE_CHECK(head_dim % 2 == 0, "model spec: head_dim {} must be even for RoPE", head_dim);
  FTUNE_CHECK(rope.type == "default" || rope.type == "linear" || rope.type == "llama3",
              "model spec: unsupported rope type '{}' (supported: default, linear, llama3)",
              rope.type);
  FTUNE_CHECK(find_architecture(arch, "") != nullptr, "model spec: unknown architecture '{}'",
              arch);
}

ModelSpec model_spec_from_hf(const HFModelConfig& cfg, const std::string& origin) {
  const std::string cls = cfg.architectures.empty() ? std::string() : cfg.architectures[0];
  const ArchInfo* a = find_architecture(cfg.model_type, cls);
  FTUNE_CHECK(a != nullptr, "{}: unknown architecture '{}' (model_type '{}'); supported: {}", origin,
              cls, cfg.model_type, supported_architectures());
  ModelSpec s;
  s.arch = a->model_type;
  s.vocab_size = cfg.vocab_size;
  s.hidden_size = cfg.hidden_size;
  s.intermediate_size = cfg.intermediate_size;
  s.num_layers = cfg.num_hidden_layers;
  s.num_heads = cfg.num_attention_heads;
  s.num_kv_heads = cfg.num_key_value_heads;
  s.head_dim = cfg.head_dim;
  s.max_position_embeddings = cfg.max_position_embeddings;
  s.rms_norm_eps = cfg.rms_norm_eps;
  s.rope.theta = cfg.rope_theta;
  s.rope.type = cfg.rope_scaling.type;
  s.rope.factor = cfg.rope_scaling.factor;
  s.rope.low_freq_factor = cfg.rope_scaling.low_freq_factor;
  s.rope.high_freq_factor = cfg.rope_scaling.high_freq_factor;
  s.rope.original_max_position_embeddings = cfg.rope_scaling.original_max_position_embeddings;
  s.tie_word_embeddings = cfg.tie_word_embeddings;
  const bool attn_bias = a->config_attention_bias && cfg.attention_bias;
  for (Proj p : {Proj::Q, Proj::K, Proj::V}) s.proj_bias[static_cast<size_t>(p)] = a->qkv_bias || attn_bias;
  s.proj_bias[static_cast<size_t>(Proj::O)] = attn_bias;
  for (Proj p : {Proj::Gate, Proj::Up, Proj::Down}) s.proj_bias[static_cast<size_t>(p)] = cfg.mlp_bias;
  if (cfg.bos_token_id) s.bos_token_id = static_cast<int32_t>(*cfg.bos_token_id);
  if (cfg.pad_token_id) s.pad_token_id = static_cast<int32_t>(*cfg.pad_token_id);
  for (int64_t e : cfg.eos_token_ids) s.eos_token_ids.push_back(static_cast<int32_t>(e));
  // Sliding-window attention only matters past the window; ftune attends causally in full, so
  // it records the window and refuses longer sequences rather than silently differing.
  const bool sw_on = cfg.use_sliding_window.value_or(s.arch == "mistral");
  if (sw_on && cfg.sliding_window) s.sliding_window = *cfg.sliding_window;
  try {
    s.validate();
  } catch (const Error& e) {
    fail("{}: {}", origin, e.what());
  }
  return s;
}

ModelSpec tiny_llama_spec(int64_t vocab_size) {
  ModelSpec s;
  s.arch = "llama";
  s.vocab_size = vocab_size;
  s.hidden_size = 128;
  s.intermediate_size = 352;
  s.num_layers = 2;
  s.num_heads = 4;
  s.num_kv_heads = 2;
  s.head_dim = 32;
  s.max_position_embeddings = 4096;
  s.rms_norm_eps = 1e-5;
  s.rope.theta = 10000.0;
  s.tie_word_embeddings = true;
  return s;
}

}  // namespace ftune
