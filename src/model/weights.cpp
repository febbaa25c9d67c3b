#include "model/weights.h"

#include <random>

#include "core/error.h"
#include "backend/ops.h"
#include "core/finite_check.h"
#include "io/bnb4bit.h"
#include "io/safetensors.h"

namespace ftune {

namespace {

// The checkpoint's tensor `name` (borrowed from the mapping) after checking shape, dtype and
// values.
Tensor checked_tensor(const CheckpointReader& ckpt, const std::string& origin,
                      const std::string& name, const Shape& expected) {
  FTUNE_CHECK(ckpt.contains(name), "{}: tensor '{}' is missing (expected shape {})", origin, name,
              shape_str(expected));
  Tensor t = ckpt.tensor(name);
  FTUNE_CHECK(t.shape() == expected, "{}: tensor '{}' in {} has shape {}, expected {}", origin, name,
              ckpt.file_of(name), shape_str(t.shape()), shape_str(expected));
  FTUNE_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::BF16 || t.dtype() == DType::F16,
              "{}: tensor '{}' in {} has dtype {}; expected F32, BF16 or F16", origin, name,
              ckpt.file_of(name), dtype_name(t.dtype()));
  check_finite(t, fmt::format("{}: tensor '{}' in {}", origin, name, ckpt.file_of(name)));
  return t;
}

Tensor load_one(const CheckpointReader& ckpt, const std::string& origin, const std::string& name,
                const Shape& expected, Device device, DType dt) {
  const Tensor t = checked_tensor(ckpt, origin, name, expected);
  // One tensor at a time: converted on the host (a copy: the mmap may go away), then uploaded.
  Tensor f = t.to_dtype(dt);
  return device.is_cpu() ? f : f.to(device);
}

// Loads `names` (each [rows_i, cols]) into consecutive row slices of one new matrix.
Tensor load_stacked(const CheckpointReader& ckpt, const std::string& origin,
                    const std::vector<std::pair<std::string, Shape>>& parts, Device device,
                    DType dt, std::vector<Tensor>& views) {
  int64_t rows = 0;
  for (const auto& [name, shape] : parts) rows += shape[0];
  Tensor out = Tensor::empty({rows, parts[0].second[1]}, dt, device);
  int64_t r = 0;
  views.clear();
  for (const auto& [name, shape] : parts) {
    Tensor dst = out.slice_rows(r, r + shape[0]);
    dst.copy_from(load_one(ckpt, origin, name, shape, Device::cpu(), dt));
    views.push_back(dst);
    r += shape[0];
  }
  return out;
}

}  // namespace

bool checkpoint_is_bnb4bit(const ModelSpec& spec, const CheckpointReader& ckpt) {
  return spec.num_layers > 0 && is_bnb4bit_weight(ckpt, tensor_names::proj_weight(0, Proj::Q));
}

BaseWeights load_base_weights(const ModelSpec& spec, const CheckpointReader& ckpt,
                              const std::string& origin, Device device, DType dt,
                              const WeightLoadOptions& opts) {
  const int64_t H = spec.hidden_size, V = spec.vocab_size;
  const bool prequantized = checkpoint_is_bnb4bit(spec, ckpt);
  const bool nf4 = prequantized || opts.load_in_4bit;
  BaseWeights w;
  w.embed = load_one(ckpt, origin, tensor_names::embed(), {V, H}, device, dt);
  w.final_norm = load_one(ckpt, origin, tensor_names::final_norm(), {H}, device, dt);
  if (spec.tie_word_embeddings) {
    w.lm_head = w.embed;
  } else {
    w.lm_head = load_one(ckpt, origin, tensor_names::lm_head(), {V, H}, device, dt);
  }
  w.layers.resize(static_cast<size_t>(spec.num_layers));
  auto part = [&](int l, Proj p) {
    const auto s = spec.proj_shape(p);
    return std::pair<std::string, Shape>{tensor_names::proj_weight(l, p), Shape{s[0], s[1]}};
  };
  for (int l = 0; l < spec.num_layers; ++l) {
    auto& L = w.layers[static_cast<size_t>(l)];
    L.attn_norm = load_one(ckpt, origin, tensor_names::attn_norm(l), {H}, device, dt);
    L.mlp_norm = load_one(ckpt, origin, tensor_names::mlp_norm(l), {H}, device, dt);
    if (nf4) {
      // Each projection on its own, as bitsandbytes quantizes each nn.Linear: read packed, or
      // quantized here from the compute-dtype values; only the packed form reaches the device.
      for (Proj p : kAllProj) {
        const auto [name, shape] = part(l, p);
        Nf4Weight q;
        if (prequantized) {
          FTUNE_CHECK(is_bnb4bit_weight(ckpt, name),
                      "{}: tensor '{}' is not bitsandbytes 4-bit although '{}' is; ftune needs "
                      "all seven projections of every layer quantized alike",
                      origin, name, tensor_names::proj_weight(0, Proj::Q));
          q = read_bnb4bit_weight(ckpt, name, shape, origin);
        } else {
          q = quantize_nf4(checked_tensor(ckpt, origin, name, shape).to_dtype(dt),
                           opts.double_quant);
        }
        L.nf4[static_cast<size_t>(p)] = device.is_cpu() ? q : q.to(device);
      }
    } else {
      std::vector<Tensor> views;
      L.qkv = load_stacked(ckpt, origin, {part(l, Proj::Q), part(l, Proj::K), part(l, Proj::V)},
                           device, dt, views);
      for (size_t i = 0; i < 3; ++i) L.weight[i] = views[i];
      L.gate_up = load_stacked(ckpt, origin, {part(l, Proj::Gate), part(l, Proj::Up)}, device, dt,
                               views);
      L.weight[static_cast<size_t>(Proj::Gate)] = views[0];
      L.weight[static_cast<size_t>(Proj::Up)] = views[1];
      for (Proj p : {Proj::O, Proj::Down}) {
        const auto s = spec.proj_shape(p);
        L.weight[static_cast<size_t>(p)] =
            load_one(ckpt, origin, tensor_names::proj_weight(l, p), {s[0], s[1]}, device, dt);
      }
    }
    for (Proj p : kAllProj) {
      const auto s = spec.proj_shape(p);
      const size_t i = static_cast<size_t>(p);
      if (spec.proj_bias[i])
        L.bias[i] = load_one(ckpt, origin, tensor_names::proj_bias(l, p), {s[0]}, device, dt);
    }
    if (opts.on_layer) opts.on_layer(l, L);
  }
  return w;
}

int64_t LayerWeights::proj_rows(Proj p) const {
  const size_t i = static_cast<size_t>(p);
  return quantized() ? nf4[i].shape[0] : weight[i].dim(0);
}

void quantize_base_weights(BaseWeights& w, bool double_quant) {
  for (auto& L : w.layers) {
    FTUNE_CHECK(!L.quantized(), "quantize_base_weights: already NF4");
    for (Proj p : kAllProj) {
      const size_t i = static_cast<size_t>(p);
      FTUNE_CHECK(L.weight[i].device().is_cpu(), "quantize_base_weights: CPU weights only");
      L.nf4[i] = quantize_nf4(L.weight[i].is_contiguous() ? L.weight[i] : L.weight[i].clone(),
                              double_quant);
      L.weight[i] = Tensor();
    }
    L.qkv = L.gate_up = Tensor();
  }
}

int64_t base_weight_bytes(const BaseWeights& w) {
  int64_t b = static_cast<int64_t>(w.embed.nbytes() + w.final_norm.nbytes());
  if (w.lm_head.defined() && !w.lm_head.same_data(w.embed)) b += static_cast<int64_t>(w.lm_head.nbytes());
  for (const auto& L : w.layers) {
    b += static_cast<int64_t>(L.attn_norm.nbytes() + L.mlp_norm.nbytes());
    if (L.quantized()) {
      for (const auto& q : L.nf4) b += q.nbytes();
    } else if (L.qkv.defined()) {
      b += static_cast<int64_t>(L.qkv.nbytes() + L.gate_up.nbytes() + L.weight[3].nbytes() +
                                L.weight[6].nbytes());
      if (L.fp8())  // one scale per stacked matrix: q/k/v, o, gate/up, down
        for (Proj p : {Proj::Q, Proj::O, Proj::Gate, Proj::Down})
          b += static_cast<int64_t>(L.fp8_scale[static_cast<size_t>(p)].nbytes());
    } else {
      for (const auto& t : L.weight) b += static_cast<int64_t>(t.nbytes());
    }
    for (const auto& t : L.bias)
      if (t.defined()) b += static_cast<int64_t>(t.nbytes());
  }
  return b;
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

namespace {

// t converted to dt on its device (t itself when it already has that dtype).
Tensor converted(Ops& ops, const Tensor& t, DType dt) {
  if (!t.defined() || t.dtype() == dt) return t;
  Tensor o = Tensor::empty(t.shape(), dt, t.device());
  ops.cast(t, o);
  return o;
}

// Rows of `parts` stacked into one [sum rows, cols] matrix of dtype dt (a copy); the parts are
// re-pointed at its row slices.
Tensor stack_rows(Ops& ops, const std::vector<Tensor*>& parts, DType dt) {
  int64_t rows = 0;
  for (Tensor* p : parts) {
    FTUNE_CHECK(p->ndim() == 2 && p->dim(1) == parts[0]->dim(1),
                "fuse_base_weights: {} does not stack with {}", shape_str(p->shape()),
                shape_str(parts[0]->shape()));
    rows += p->dim(0);
  }
  const Tensor& first = *parts[0];
  Tensor out = Tensor::empty({rows, first.dim(1)}, dt, first.device());
  int64_t r = 0;
  for (Tensor* p : parts) {
    Tensor dst = out.slice_rows(r, r + p->dim(0));
    if (p->dtype() == dt)
      dst.copy_from(*p);
    else
      ops.cast(*p, dst);
    *p = dst;
    r += dst.dim(0);
  }
  return out;
}

}  // namespace

void fuse_base_weights(BaseWeights& w, Ops& ops, DType dt) {
  const bool tied = w.lm_head.defined() && w.lm_head.same_data(w.embed);
  w.embed = converted(ops, w.embed, dt);
  w.final_norm = converted(ops, w.final_norm, dt);
  w.lm_head = tied ? w.embed : converted(ops, w.lm_head, dt);
  for (auto& L : w.layers)
    if (!L.empty()) fuse_layer_weights(L, ops, dt);
}

void fuse_layer_weights(LayerWeights& L, Ops& ops, DType dt) {
  L.attn_norm = converted(ops, L.attn_norm, dt);
  L.mlp_norm = converted(ops, L.mlp_norm, dt);
  auto at = [&](Proj p) { return &L.weight[static_cast<size_t>(p)]; };
  if (L.fp8()) {
    // Already FP8 (quantize_base_fp8): the codes stay as they are.
  } else if (L.quantized()) {
    for (const auto& q : L.nf4)
      FTUNE_CHECK(q.defined(), "fuse_base_weights: a layer with some projections in NF4 and "
                               "some not");
  } else {
    if (!L.qkv.defined() || L.qkv.dtype() != dt)
      L.qkv = stack_rows(ops, {at(Proj::Q), at(Proj::K), at(Proj::V)}, dt);
    if (!L.gate_up.defined() || L.gate_up.dtype() != dt)
      L.gate_up = stack_rows(ops, {at(Proj::Gate), at(Proj::Up)}, dt);
    L.weight[static_cast<size_t>(Proj::O)] =
        converted(ops, L.weight[static_cast<size_t>(Proj::O)], dt);
    L.weight[static_cast<size_t>(Proj::Down)] =
        converted(ops, L.weight[static_cast<size_t>(Proj::Down)], dt);
  }
  const bool any_bias = L.bias[0].defined() || L.bias[1].defined() || L.bias[2].defined();
  if (any_bias && (!L.qkv_bias.defined() || L.qkv_bias.dtype() != dt)) {
    const int64_t total = L.proj_rows(Proj::Q) + L.proj_rows(Proj::K) + L.proj_rows(Proj::V);
    Tensor b = Tensor::zeros({total}, dt, L.attn_norm.device());
    int64_t off = 0;
    for (Proj p : {Proj::Q, Proj::K, Proj::V}) {
      const size_t i = static_cast<size_t>(p);
      const int64_t out = L.proj_rows(p);
      Tensor dst = b.slice_flat(off, {out});
      if (L.bias[i].defined()) {
        if (L.bias[i].dtype() == dt)
          dst.copy_from(L.bias[i]);
        else
          ops.cast(L.bias[i], dst);
        L.bias[i] = dst;
      }
      off += out;
    }
    L.qkv_bias = b;
  }
  for (Proj p : {Proj::O, Proj::Gate, Proj::Up, Proj::Down}) {
    const size_t i = static_cast<size_t>(p);
    L.bias[i] = converted(ops, L.bias[i], dt);
  }
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
      if (w.layers[l].quantized())
        o.layers[l].nf4[i] = w.layers[l].nf4[i].to(device);
      else
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
      if (L.quantized()) {
        for (auto& t : bnb4bit_tensors(tensor_names::proj_weight(l, p), L.nf4[i].to(Device::cpu()),
                                       "float32"))
          out.push_back(std::move(t));
      } else {
        out.emplace_back(tensor_names::proj_weight(l, p), L.weight[i]);
      }
      if (L.bias[i].defined()) out.emplace_back(tensor_names::proj_bias(l, p), L.bias[i]);
    }
  }
  out.emplace_back(tensor_names::final_norm(), w.final_norm);
  if (!spec.tie_word_embeddings) out.emplace_back(tensor_names::lm_head(), w.lm_head);
  return out;
}

void quantize_base_fp8(BaseWeights& w, Ops& ops) {
  for (auto& L : w.layers) {
    if (L.empty() || L.fp8()) continue;
    FTUNE_CHECK(!L.quantized(), "model.fp8_base: the base weights are NF4 (model.load_in_4bit or a "
                                "bnb-4bit checkpoint); FP8 applies to a bf16/fp16 base only");
    FTUNE_CHECK(L.qkv.defined() && L.gate_up.defined(),
                "quantize_base_fp8: the layer's q/k/v and gate/up are not stacked (call "
                "fuse_base_weights first)");
    auto quantize = [&](const Tensor& dense, Tensor* scale) {
      Tensor q = Tensor::empty(dense.shape(), DType::F8_E4M3, dense.device());
      *scale = Tensor::empty({1}, DType::F32, dense.device());
      ops.quantize_fp8(dense, q, *scale);
      return q;
    };
    auto rows = [&](Proj p) { return L.proj_rows(p); };
    Tensor s_qkv, s_gu, s_o, s_down;
    L.qkv = quantize(L.qkv, &s_qkv);
    const int64_t q = rows(Proj::Q), k = rows(Proj::K), v = rows(Proj::V);
    L.weight[static_cast<size_t>(Proj::Q)] = L.qkv.slice_rows(0, q);
    L.weight[static_cast<size_t>(Proj::K)] = L.qkv.slice_rows(q, q + k);
    L.weight[static_cast<size_t>(Proj::V)] = L.qkv.slice_rows(q + k, q + k + v);
    const int64_t g = rows(Proj::Gate), u = rows(Proj::Up);
    L.gate_up = quantize(L.gate_up, &s_gu);
    L.weight[static_cast<size_t>(Proj::Gate)] = L.gate_up.slice_rows(0, g);
    L.weight[static_cast<size_t>(Proj::Up)] = L.gate_up.slice_rows(g, g + u);
    L.weight[static_cast<size_t>(Proj::O)] = quantize(L.weight[static_cast<size_t>(Proj::O)], &s_o);
    L.weight[static_cast<size_t>(Proj::Down)] =
        quantize(L.weight[static_cast<size_t>(Proj::Down)], &s_down);
    for (Proj p : {Proj::Q, Proj::K, Proj::V}) L.fp8_scale[static_cast<size_t>(p)] = s_qkv;
    for (Proj p : {Proj::Gate, Proj::Up}) L.fp8_scale[static_cast<size_t>(p)] = s_gu;
    L.fp8_scale[static_cast<size_t>(Proj::O)] = s_o;
    L.fp8_scale[static_cast<size_t>(Proj::Down)] = s_down;
  }
}

}  // namespace ftune
