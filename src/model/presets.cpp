#include "model/presets.h"

#include "core/nf4.h"

#include <nlohmann/json.hpp>

#include <array>
#include <cmath>
#include <future>

#include "core/error.h"
#include "io/hf_config.h"

namespace ftune {

namespace {

// config.json values as published with each model (hidden sizes, heads, vocabulary, RoPE).
constexpr const char* kLlama32_1B = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
  "num_key_value_heads": 8, "head_dim": 64, "vocab_size": 128256, "max_position_embeddings": 131072,
  "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": true,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "bos_token_id": 128000, "eos_token_id": 128001})";
constexpr const char* kLlama32_3B = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 3072, "intermediate_size": 8192, "num_hidden_layers": 28, "num_attention_heads": 24,
  "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 128256, "max_position_embeddings": 131072,
  "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": true,
  "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                   "original_max_position_embeddings": 8192, "rope_type": "llama3"},
  "bos_token_id": 128000, "eos_token_id": 128001})";
constexpr const char* kLlama3_8B = R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
  "num_key_value_heads": 8, "vocab_size": 128256, "max_position_embeddings": 8192,
  "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "tie_word_embeddings": false,
  "bos_token_id": 128000, "eos_token_id": 128001})";
constexpr const char* kMistral7B = R"({"architectures": ["MistralForCausalLM"], "model_type": "mistral",
  "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
  "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 32768, "max_position_embeddings": 32768,
  "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "sliding_window": null, "tie_word_embeddings": false,
  "bos_token_id": 1, "eos_token_id": 2})";
constexpr const char* kQwen25_7B = R"({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2",
  "hidden_size": 3584, "intermediate_size": 18944, "num_hidden_layers": 28, "num_attention_heads": 28,
  "num_key_value_heads": 4, "vocab_size": 152064, "max_position_embeddings": 131072,
  "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "tie_word_embeddings": false,
  "use_sliding_window": false, "sliding_window": 131072, "max_window_layers": 28,
  "bos_token_id": 151643, "eos_token_id": 151643})";

// splitmix64: a counter-based generator (value i depends on (seed, i) only).
uint64_t mix(uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// n values N(0, std) (Box-Muller on two counter draws) in dtype dt, into dst (host).
void fill_normal(void* dst, int64_t n, DType dt, uint64_t stream, float std) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t a = mix(stream ^ mix(static_cast<uint64_t>(i) * 2));
    const uint64_t b = mix(stream ^ mix(static_cast<uint64_t>(i) * 2 + 1));
    const double u1 = (static_cast<double>(a >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
    const double u2 = static_cast<double>(b >> 11) * 0x1.0p-53;
    const float v = static_cast<float>(std * std::sqrt(-2.0 * std::log(u1)) *
                                       std::cos(6.283185307179586 * u2));
    switch (dt) {
      case DType::BF16: static_cast<uint16_t*>(dst)[i] = f32_to_bf16(v); break;
      case DType::F16: static_cast<uint16_t*>(dst)[i] = f32_to_f16(v); break;
      default: static_cast<float*>(dst)[i] = v; break;
    }
  }
}

}  // namespace

const std::vector<ModelPreset>& model_presets() {
  static const std::vector<ModelPreset> k = {
      {"llama-3.2-1b", kLlama32_1B}, {"llama-3.2-3b", kLlama32_3B}, {"llama-3-8b", kLlama3_8B},
      {"mistral-7b", kMistral7B},     {"qwen2.5-7b", kQwen25_7B},
  };
  return k;
}

ModelSpec preset_spec(const std::string& name) {
  std::string known;
  for (const auto& p : model_presets()) {
    if (name == p.name) {
      const std::string origin = "preset " + name;
      return model_spec_from_hf(parse_hf_config(nlohmann::json::parse(p.config_json), origin),
                                origin);
    }
    known += known.empty() ? p.name : std::string(", ") + p.name;
  }
  fail("model.preset: unknown preset '{}' (known: {})", name, known);
}

BaseWeights random_base_weights_on(const ModelSpec& spec, uint64_t seed, float std, Device device,
                                   DType dt, bool nf4, bool double_quant) {
  uint64_t stream = mix(seed);
  auto make = [&](const Shape& shape, bool ones) {
    Tensor host = Tensor::empty(shape, dt);
    stream = mix(stream);
    if (ones) {
      Tensor f = Tensor::empty(shape);
      f.fill_(1.0f);
      host = f.to_dtype(dt);
    } else {
      fill_normal(host.raw(), host.numel(), dt, stream, std);
    }
    return device.is_cpu() ? host : host.to(device);
  };
  const int64_t H = spec.hidden_size, V = spec.vocab_size, F = spec.intermediate_size;
  BaseWeights w;
  w.embed = make({V, H}, false);
  w.final_norm = make({H}, true);
  w.lm_head = spec.tie_word_embeddings ? w.embed : make({V, H}, false);
  w.layers.resize(static_cast<size_t>(spec.num_layers));
  for (auto& L : w.layers) {
    L.attn_norm = make({H}, true);
    L.mlp_norm = make({H}, true);
    if (nf4) {  // the layer's seven projections made and quantized in parallel
      std::array<std::future<Nf4Weight>, kNumProj> q;
      for (Proj p : kAllProj) {
        stream = mix(stream);
        q[static_cast<size_t>(p)] = std::async(std::launch::async, [&spec, p, dt, std, double_quant,
                                                                     seed = stream] {
          const auto ps = spec.proj_shape(p);
          Tensor host = Tensor::empty({ps[0], ps[1]}, dt);
          fill_normal(host.raw(), host.numel(), dt, seed, std);
          return quantize_nf4(host, double_quant);
        });
      }
      for (Proj p : kAllProj) {
        const size_t i = static_cast<size_t>(p);
        L.nf4[i] = q[i].get().to(device);
        if (spec.proj_bias[i]) L.bias[i] = make({spec.proj_shape(p)[0]}, false);
      }
      continue;
    }
    L.qkv = make({spec.q_dim() + 2 * spec.kv_dim(), H}, false);
    L.weight[static_cast<size_t>(Proj::Q)] = L.qkv.slice_rows(0, spec.q_dim());
    L.weight[static_cast<size_t>(Proj::K)] = L.qkv.slice_rows(spec.q_dim(), spec.q_dim() + spec.kv_dim());
    L.weight[static_cast<size_t>(Proj::V)] =
        L.qkv.slice_rows(spec.q_dim() + spec.kv_dim(), spec.q_dim() + 2 * spec.kv_dim());
    L.weight[static_cast<size_t>(Proj::O)] = make({H, spec.q_dim()}, false);
    L.gate_up = make({2 * F, H}, false);
    L.weight[static_cast<size_t>(Proj::Gate)] = L.gate_up.slice_rows(0, F);
    L.weight[static_cast<size_t>(Proj::Up)] = L.gate_up.slice_rows(F, 2 * F);
    L.weight[static_cast<size_t>(Proj::Down)] = make({H, F}, false);
    for (Proj p : kAllProj) {
      const size_t i = static_cast<size_t>(p);
      if (spec.proj_bias[i]) L.bias[i] = make({spec.proj_shape(p)[0]}, false);
    }
  }
  return w;
}

}  // namespace ftune
