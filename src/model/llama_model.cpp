#include "model/llama_model.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/rope.h"

namespace ftune {

struct LlamaModel::BatchInputs {
  int64_t n = 0;
  Tensor ids, positions, doc_start, targets;  // I32 [N] on the model's device
};

// What a layer's forward keeps for its backward (HF names in comments).
struct LlamaModel::LayerCache {
  Tensor x;              // layer input (residual stream)
  Tensor n1, rstd1;      // input_layernorm(x)
  Tensor q, k, v;        // q/k after RoPE, v: [N, heads, hd]
  Tensor attn, lse;      // attention output [N, nh, hd], log-sum-exp [N, nh]
  Tensor h;              // x + o_proj(attn)
  Tensor n2, rstd2;      // post_attention_layernorm(h)
  Tensor g, u, m;        // gate_proj, up_proj, silu(g)*u
  std::array<LoraLinearCache, kNumProj> lin;
  void release_all_but_input() {
    Tensor keep = x;
    *this = LayerCache();
    x = keep;
  }
};

LlamaModel::LlamaModel(ModelSpec spec, BaseWeights base, Ops& ops, ModelOptions opts)
    : spec_(std::move(spec)), base_(std::move(base)), ops_(ops), opts_(opts) {
  spec_.validate();
  FTUNE_CHECK(static_cast<int64_t>(base_.layers.size()) == spec_.num_layers,
              "LlamaModel: {} layers of weights for a {}-layer spec", base_.layers.size(),
              spec_.num_layers);
  inv_freq_ = rope_inv_freq(spec_.rope, spec_.head_dim);
}

LlamaModel LlamaModel::from_hf_folder(const std::string& dir, Ops& ops, ModelOptions opts) {
  const std::string cfg_path = dir + "/config.json";
  HFModelConfig cfg = load_hf_config(cfg_path);
  ModelSpec spec = model_spec_from_hf(cfg, cfg_path);
  CheckpointReader ckpt = CheckpointReader::open_folder(dir);
  BaseWeights w = load_base_weights(spec, ckpt, dir, ops.device());
  return LlamaModel(std::move(spec), std::move(w), ops, opts);
}

void LlamaModel::attach_lora(LoraWeights lora) {
  FTUNE_CHECK(static_cast<int64_t>(lora.layers.size()) == spec_.num_layers,
              "attach_lora: adapter has {} layers, model has {}", lora.layers.size(),
              spec_.num_layers);
  for (const auto& layer : lora.layers) {
    for (Proj p : kAllProj) {
      const LoraPair& lp = layer[static_cast<size_t>(p)];
      if (!lp.defined()) continue;
      const auto s = spec_.proj_shape(p);
      FTUNE_CHECK(lp.A.shape() == (Shape{lora.spec.r, s[1]}) && lp.B.shape() == (Shape{s[0], lora.spec.r}),
                  "attach_lora: {} has A {} and B {}, expected [{}, {}] and [{}, {}]", proj_name(p),
                  shape_str(lp.A.shape()), shape_str(lp.B.shape()), lora.spec.r, s[1], s[0],
                  lora.spec.r);
    }
  }
  lora_ = std::make_unique<LoraWeights>(std::move(lora));
}

LoraWeights& LlamaModel::lora() {
  FTUNE_CHECK(lora_ != nullptr, "LlamaModel: no LoRA adapter attached");
  return *lora_;
}

float LlamaModel::dropout() const {
  return lora_ && training_ ? static_cast<float>(lora_->spec.dropout) : 0.0f;
}

uint64_t LlamaModel::dropout_seed(int layer, Proj p) const {
  // splitmix64 over (adapter seed, optimizer step, global micro-batch index, layer,
  // projection): the same mask on every rank and for any number of processes.
  auto mix = [](uint64_t z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  };
  uint64_t z = mix(lora_ ? lora_->spec.seed : 0);
  z = mix(z ^ static_cast<uint64_t>(dropout_step_));
  z = mix(z ^ static_cast<uint64_t>(dropout_index_));
  z = mix(z ^ (static_cast<uint64_t>(layer) << 8 | static_cast<uint64_t>(p)));
  return z;
}

void LlamaModel::ensure_rope(int64_t positions) {
  if (positions <= rope_positions_) return;
  const int64_t n = std::max<int64_t>(positions, std::min<int64_t>(spec_.max_position_embeddings, 4096));
  RopeTables t = rope_tables(inv_freq_, n);
  rope_cos_ = ops_.device().is_cpu() ? t.cos : t.cos.to(ops_.device());
  rope_sin_ = ops_.device().is_cpu() ? t.sin : t.sin.to(ops_.device());
  rope_positions_ = n;
}

LlamaModel::BatchInputs LlamaModel::prepare(const Batch& batch) {
  batch.validate();
  BatchInputs in;
  in.n = batch.tokens();
  FTUNE_CHECK(in.n > 0, "model: empty batch");
  int32_t max_pos = 0;
  for (int64_t i = 0; i < in.n; ++i) {
    const int32_t id = batch.input_ids[static_cast<size_t>(i)];
    FTUNE_CHECK(id >= 0 && id < spec_.vocab_size, "model: token id {} at position {} is outside the vocabulary (size {})",
                id, i, spec_.vocab_size);
    max_pos = std::max(max_pos, batch.position_ids[static_cast<size_t>(i)]);
  }
  FTUNE_CHECK(!spec_.sliding_window || max_pos < *spec_.sliding_window,
              "model: a document of {} tokens exceeds the sliding window ({}); ftune attends over "
              "whole documents only, so use max_seq_length <= {}",
              max_pos + 1, *spec_.sliding_window, *spec_.sliding_window);
  ensure_rope(static_cast<int64_t>(max_pos) + 1);
  auto upload = [&](const std::vector<int32_t>& v) {
    Tensor t = Tensor::from_ints(v, {in.n});
    return ops_.device().is_cpu() ? t : t.to(ops_.device());
  };
  in.ids = upload(batch.input_ids);
  in.positions = upload(batch.position_ids);
  in.doc_start = upload(batch.doc_start);
  in.targets = upload(next_token_targets(batch));
  return in;
}

void LlamaModel::layer_forward(int l, const Tensor& x, const BatchInputs& in, LayerCache& c,
                               Tensor& out, bool keep) {
  const LayerWeights& W = base_.layers[static_cast<size_t>(l)];
  const Device dev = ops_.device();
  const int64_t N = in.n, H = spec_.hidden_size, F = spec_.intermediate_size;
  const int64_t nh = spec_.num_heads, nkv = spec_.num_kv_heads, hd = spec_.head_dim;
  const float eps = static_cast<float>(spec_.rms_norm_eps);
  const float drop = dropout();
  const float scaling = lora_ ? lora_->spec.scaling() : 0.0f;
  auto lin = [&](Proj p, const Tensor& input, Tensor& y) {
    const size_t i = static_cast<size_t>(p);
    const LoraPair* lp = lora_ ? &lora_->layers[static_cast<size_t>(l)][i] : nullptr;
    lora_linear_forward(ops_, input, W.weight[i], W.bias[i], lp, scaling, drop, dropout_seed(l, p), y,
                        &c.lin[i]);
  };

  c.x = x;
  c.n1 = Tensor::empty({N, H}, DType::F32, dev);
  c.rstd1 = Tensor::empty({N}, DType::F32, dev);
  ops_.rms_norm_forward(x, W.attn_norm, eps, c.n1, c.rstd1);
  c.q = Tensor::empty({N, nh, hd}, DType::F32, dev);
  c.k = Tensor::empty({N, nkv, hd}, DType::F32, dev);
  c.v = Tensor::empty({N, nkv, hd}, DType::F32, dev);
  Tensor q2 = c.q.view({N, nh * hd}), k2 = c.k.view({N, nkv * hd}), v2 = c.v.view({N, nkv * hd});
  lin(Proj::Q, c.n1, q2);
  lin(Proj::K, c.n1, k2);
  lin(Proj::V, c.n1, v2);
  ops_.rope_forward(c.q, in.positions, rope_cos_, rope_sin_);
  ops_.rope_forward(c.k, in.positions, rope_cos_, rope_sin_);
  c.attn = Tensor::empty({N, nh, hd}, DType::F32, dev);
  c.lse = Tensor::empty({N, nh}, DType::F32, dev);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  ops_.attention_forward(c.q, c.k, c.v, in.doc_start, scale, c.attn, c.lse);
  c.h = Tensor::empty({N, H}, DType::F32, dev);
  Tensor attn2 = c.attn.view({N, nh * hd});
  lin(Proj::O, attn2, c.h);
  ops_.axpy(1.0f, x, c.h);  // h = x + o_proj(attn)
  c.n2 = Tensor::empty({N, H}, DType::F32, dev);
  c.rstd2 = Tensor::empty({N}, DType::F32, dev);
  ops_.rms_norm_forward(c.h, W.mlp_norm, eps, c.n2, c.rstd2);
  c.g = Tensor::empty({N, F}, DType::F32, dev);
  c.u = Tensor::empty({N, F}, DType::F32, dev);
  lin(Proj::Gate, c.n2, c.g);
  lin(Proj::Up, c.n2, c.u);
  c.m = Tensor::empty({N, F}, DType::F32, dev);
  ops_.swiglu_forward(c.g, c.u, c.m);
  out = Tensor::empty({N, H}, DType::F32, dev);
  lin(Proj::Down, c.m, out);
  ops_.axpy(1.0f, c.h, out);  // out = h + down(m)
  if (!keep) c.release_all_but_input();
}

void LlamaModel::layer_backward(int l, const BatchInputs& in, LayerCache& c, Tensor& dx) {
  LayerWeights& W = base_.layers[static_cast<size_t>(l)];
  const Device dev = ops_.device();
  const int64_t N = in.n, H = spec_.hidden_size, F = spec_.intermediate_size;
  const int64_t nh = spec_.num_heads, nkv = spec_.num_kv_heads, hd = spec_.head_dim;
  const float drop = dropout();
  const float scaling = lora_ ? lora_->spec.scaling() : 0.0f;
  auto lin_bwd = [&](Proj p, const Tensor& dy, const Tensor& input, Tensor& dinput, bool acc) {
    const size_t i = static_cast<size_t>(p);
    LoraPair* lp = lora_ ? &lora_->layers[static_cast<size_t>(l)][i] : nullptr;
    lora_linear_backward(ops_, dy, input, W.weight[i], lp, scaling, drop, c.lin[i], dinput, acc);
  };

  // out = h + down(m): dx is d/d(out) on entry.
  Tensor dm = Tensor::empty({N, F}, DType::F32, dev);
  lin_bwd(Proj::Down, dx, c.m, dm, false);
  Tensor dg = Tensor::empty({N, F}, DType::F32, dev), du = Tensor::empty({N, F}, DType::F32, dev);
  ops_.swiglu_backward(dm, c.g, c.u, dg, du);
  Tensor dn2 = Tensor::empty({N, H}, DType::F32, dev);
  lin_bwd(Proj::Gate, dg, c.n2, dn2, false);
  lin_bwd(Proj::Up, du, c.n2, dn2, true);
  Tensor tmp = Tensor::empty({N, H}, DType::F32, dev);
  ops_.rms_norm_backward(dn2, c.h, W.mlp_norm, c.rstd2, tmp, nullptr);
  ops_.axpy(1.0f, tmp, dx);  // dx now holds d/dh
  // h = x + o_proj(attn)
  Tensor dattn = Tensor::empty({N, nh, hd}, DType::F32, dev);
  Tensor dattn2 = dattn.view({N, nh * hd});
  lin_bwd(Proj::O, dx, c.attn.view({N, nh * hd}), dattn2, false);
  Tensor dq = Tensor::empty({N, nh, hd}, DType::F32, dev);
  Tensor dk = Tensor::empty({N, nkv, hd}, DType::F32, dev);
  Tensor dv = Tensor::empty({N, nkv, hd}, DType::F32, dev);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  ops_.attention_backward(c.q, c.k, c.v, c.attn, c.lse, dattn, in.doc_start, scale, dq, dk, dv);
  ops_.rope_backward(dq, in.positions, rope_cos_, rope_sin_);
  ops_.rope_backward(dk, in.positions, rope_cos_, rope_sin_);
  Tensor dn1 = Tensor::empty({N, H}, DType::F32, dev);
  lin_bwd(Proj::Q, dq.view({N, nh * hd}), c.n1, dn1, false);
  lin_bwd(Proj::K, dk.view({N, nkv * hd}), c.n1, dn1, true);
  lin_bwd(Proj::V, dv.view({N, nkv * hd}), c.n1, dn1, true);
  ops_.rms_norm_backward(dn1, c.x, W.attn_norm, c.rstd1, tmp, nullptr);
  ops_.axpy(1.0f, tmp, dx);  // dx = d/dx of the layer input
}

StepLoss LlamaModel::run(const Batch& batch, float grad_scale, bool backward, Tensor* logits) {
  BatchInputs in = prepare(batch);
  dropout_step_ = batch.step;
  dropout_index_ = batch.global_index;
  training_ = backward;
  const Device dev = ops_.device();
  const int64_t N = in.n, H = spec_.hidden_size;
  const bool ckpt = backward && opts_.gradient_checkpointing;
  Tensor x = Tensor::empty({N, H}, DType::F32, dev);
  ops_.embedding_forward(base_.embed, in.ids, x);
  std::vector<LayerCache> caches(static_cast<size_t>(spec_.num_layers));
  for (int l = 0; l < spec_.num_layers; ++l) {
    Tensor out;
    layer_forward(l, x, in, caches[static_cast<size_t>(l)], out, backward && !ckpt);
    if (!backward) caches[static_cast<size_t>(l)] = LayerCache();
    x = out;
  }
  Tensor nf = Tensor::empty({N, H}, DType::F32, dev), rstdf = Tensor::empty({N}, DType::F32, dev);
  ops_.rms_norm_forward(x, base_.final_norm, static_cast<float>(spec_.rms_norm_eps), nf, rstdf);
  Tensor dnf;
  if (backward) dnf = Tensor::empty({N, H}, DType::F32, dev);
  const CrossEntropyResult ce = ops_.lm_head_cross_entropy(
      nf, base_.lm_head, in.targets, grad_scale, backward ? &dnf : nullptr, logits,
      opts_.ce_chunk_tokens);
  StepLoss loss{ce.loss_sum, ce.count};
  if (!backward) return loss;

  Tensor dx = Tensor::empty({N, H}, DType::F32, dev);
  ops_.rms_norm_backward(dnf, x, base_.final_norm, rstdf, dx, nullptr);
  for (int l = spec_.num_layers - 1; l >= 0; --l) {
    LayerCache& c = caches[static_cast<size_t>(l)];
    if (ckpt) {
      Tensor recomputed;
      Tensor input = c.x;
      layer_forward(l, input, in, c, recomputed, true);
    }
    layer_backward(l, in, c, dx);
    c = LayerCache();
  }
  return loss;
}

StepLoss LlamaModel::forward_backward(const Batch& batch, float grad_scale) {
  FTUNE_CHECK(lora_ != nullptr, "forward_backward: attach a LoRA adapter first");
  return run(batch, grad_scale, true, nullptr);
}

StepLoss LlamaModel::forward(const Batch& batch, Tensor* logits) {
  if (logits != nullptr) {
    FTUNE_CHECK(logits->shape() == (Shape{batch.tokens(), spec_.vocab_size}),
                "forward: logits tensor is {}, expected [{}, {}]", shape_str(logits->shape()),
                batch.tokens(), spec_.vocab_size);
  }
  return run(batch, 0.0f, false, logits);
}

}  // namespace ftune
