// ModelSpec: everything the model code needs to know about an architecture instance, derived
// from an HF config.json (io/hf_config) through the architecture table, or built directly for
// the built-in tiny model.
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "model/architecture.h"

namespace ftune {

struct HFModelConfig;

struct RopeSpec {
  double theta = 10000.0;
  std::string type = "default";  // default | linear | llama3
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelSpec {
  std::string arch = "llama";  // kArchitectures model_type
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 2048;
  double rms_norm_eps = 1e-5;
  RopeSpec rope;
  bool tie_word_embeddings = false;
  std::array<bool, kNumProj> proj_bias{};  // which projections carry a bias
  std::optional<int32_t> bos_token_id;
  std::vector<int32_t> eos_token_ids;
  std::optional<int32_t> pad_token_id;
  std::optional<int64_t> sliding_window;  // window of sliding-window attention, if any

  int64_t q_dim() const { return num_heads * head_dim; }
  int64_t kv_dim() const { return num_kv_heads * head_dim; }
  // [out, in] of a projection's weight.
  std::array<int64_t, 2> proj_shape(Proj p) const;
  // Throws ftune::Error when sizes are inconsistent.
  void validate() const;
};

// From a parsed config.json; throws naming `origin` for an unknown architecture.
ModelSpec model_spec_from_hf(const HFModelConfig& cfg, const std::string& origin);

// The built-in tiny Llama used by the default job and tests.
ModelSpec tiny_llama_spec(int64_t vocab_size);

}  // namespace ftune
