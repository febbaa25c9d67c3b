#include "model/weights.h"

#include <random>

#include "core/error.h"
#include "core/finite_check.h"
#include "io/safetensors.h"

namespace ftune {

namespace {

Tensor load_one(const CheckpointReader& ckpt, const std::string& origin, const std::string& name,
                const Shape& expected, Device device) {
  FTUNE_CHECK(ckpt.contains(name), "{}: tensor '{}' is missing (expected shape {})", origin, name,
              shape_str(expected));
  Tensor t = ckpt.tensor(name);
  FTUNE_CHECK(t.shape() == expected, "{}: tensor '{}' in {} has shape {}, expected {}", origin, name,
              ckpt.file_of(name), shape_str(t.shape()), shape_str(expected));
  FTUNE_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::BF16 || t.dtype() == DType::F16,
              "{}: tensor '{}' in {} has dtype {}; expected F32, BF16 or F16", origin, name,
              ckpt.file_of(name), dtype_name(t.dtype()));
  check_finite(t, fmt::format("{}: tensor '{}' in {}", origin, name, ckpt.file_of(name)));
  Tensor f = t.to_dtype(DType::F32);  // always a copy: the mmap may go away
  return device.is_cpu() ? f : f.to(device);
}

}  // namespace

BaseWeights load_base_weights(const ModelSpec& spec, const CheckpointReader& ckpt,
                              const std::string& origin, Device device) {
  const int64_t H = spec.hidden_size, V = spec.vocab_size;
  BaseWeights w;
  w.embed = load_one(ckpt, origin, tensor_names::embed(), {V, H}, device);
  w.final_norm = load_one(ckpt, origin, tensor_names::final_norm(), {H}, device);
  if (spec.tie_word_embeddings) {
    w.lm_head = w.embed;
  } else {
    w.lm_head = load_one(ckpt, origin, tensor_names::lm_head(), {V, H}, device);
  }
  w.layers.resize(static_cast<size_t>(spec.num_layers));
  for (int l = 0; l < spec.num_layers; ++l) {
    auto& L = w.layers[static_cast<size_t>(l)];
    L.attn_norm = load_one(ckpt, origin, tensor_names::attn_norm(l), {H}, device);
    L.mlp_norm = load_one(ckpt, origin, tensor_names::mlp_norm(l), {H}, device);
    for (Proj p : kAllProj) {
      const auto s = spec.proj_shape(p);
      const size_t i = static_cast<size_t>(p);
      L.weight[i] = load_one(ckpt, origin, tensor_names::proj_weight(l, p), {s[0], s[1]}, device);
      if (spec.proj_bias[i])
        L.bias[i] = load_one(ckpt, origin, tensor_names::proj_bias(l, p), {s[0]}, device);
    }
  }
  return w;
}

BaseWeights random_base_weights(const ModelSpec& spec, uint64_t seed, float std) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, std);
  auto randn = [&](const Shape& s) {
    Tensor t = Tensor::empty(s);
    float* p = t.f32();
    for (int64_t i = 0; i < t.numel(); ++i) p[i] = nd(rng);
    return t;
  };
  auto ones = [](int64_t n) {
    Tensor t = Tensor::empty({n});
    t.fill_(1.0f);
    return t;
  };
  const int64_t H = spec.hidden_size, V = spec.vocab_size;
  BaseWeights w;
  w.embed = randn({V, H});
  w.final_norm = ones(H);
  w.lm_head = spec.tie_word_embeddings ? w.embed : randn({V, H});
  w.layers.resize(static_cast<size_t>(spec.num_layers));
  for (auto& L : w.layers) {
    L.attn_norm = ones(H);
    L.mlp_norm = ones(H);
    for (Proj p : kAllProj) {
      const auto s = spec.proj_shape(p);
      const size_t i = static_cast<size_t>(p);
      L.weight[i] = randn({s[0], s[1]});
      if (spec.proj_bias[i]) L.bias[i] = randn({s[0]});
    }
  }
  return w;
}

BaseWeights base_weights_to(const BaseWeights& w, const ModelSpec& spec, Device device) {
  BaseWeights o;
  o.embed = w.embed.to(device);
  o.final_norm = w.final_norm.to(device);
  o.lm_head = spec.tie_word_embeddings ? o.embed : w.lm_head.to(device);
  o.layers.resize(w.layers.size());
  for (size_t l = 0; l < w.layers.size(); ++l) {
    o.layers[l].attn_norm = w.layers[l].attn_norm.to(device);
    o.layers[l].mlp_norm = w.layers[l].mlp_norm.to(device);
    for (size_t i = 0; i < kNumProj; ++i) {
      o.layers[l].weight[i] = w.layers[l].weight[i].to(device);
      if (w.layers[l].bias[i].defined()) o.layers[l].bias[i] = w.layers[l].bias[i].to(device);
    }
  }
  return o;
}

std::vector<std::pair<std::string, Tensor>> named_base_weights(const ModelSpec& spec,
                                                               const BaseWeights& w) {
  std::vector<std::pair<std::string, Tensor>> out;
  out.emplace_back(tensor_names::embed(), w.embed);
  for (int l = 0; l < spec.num_layers; ++l) {
    const auto& L = w.layers[static_cast<size_t>(l)];
    out.emplace_back(tensor_names::attn_norm(l), L.attn_norm);
    out.emplace_back(tensor_names::mlp_norm(l), L.mlp_norm);
    for (Proj p : kAllProj) {
      const size_t i = static_cast<size_t>(p);
      out.emplace_back(tensor_names::proj_weight(l, p), L.weight[i]);
      if (L.bias[i].defined()) out.emplace_back(tensor_names::proj_bias(l, p), L.bias[i]);
    }
  }
  out.emplace_back(tensor_names::final_norm(), w.final_norm);
  if (!spec.tie_word_embeddings) out.emplace_back(tensor_names::lm_head(), w.lm_head);
  return out;
}

}  // namespace ftune
