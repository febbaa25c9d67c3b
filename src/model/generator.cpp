// The cached forward of one sequence (see generator.h). Per layer, for the T new tokens at
// positions past .. past+T-1 (HF LlamaDecoderLayer with past_key_values):
//   n1 = input_layernorm(x); [q|k|v] = n1 Wqkvᵀ (+ bias, + LoRA); RoPE on q and k, whose rows
//   (and v's) are written straight into the cache at rows past .. past+T-1;
//   attn = softmax(q Kᵀ scale, causal) V over cache rows 0 .. past+t;
//   h = x + o_proj(attn); out = h + down(silu(gate(n2)) * up(n2)), n2 = post_attention_layernorm(h)
// then the final norm and lm_head on the rows whose logits are wanted.
#include "model/generator.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "model/rope.h"

namespace ftune {

namespace {

// The projection groups of a layer, as LlamaModel runs them (q/k/v fused, gate/up fused);
// inference has no dropout, so the dropout seeds are unused.
std::vector<LoraGroupMember> qkv_members(const ModelSpec& s) {
  const int64_t qd = s.q_dim(), kd = s.kv_dim();
  return {{Proj::Q, 0, qd, 0}, {Proj::K, qd, kd, 0}, {Proj::V, qd + kd, kd, 0}};
}
std::vector<LoraGroupMember> gate_up_members(const ModelSpec& s) {
  const int64_t F = s.intermediate_size;
  return {{Proj::Gate, 0, F, 0}, {Proj::Up, F, F, 0}};
}

Tensor upload(const std::vector<int32_t>& v, Device dev) {
  Tensor t = Tensor::from_ints(v, {static_cast<int64_t>(v.size())});
  return dev.is_cpu() ? t : t.to(dev);
}

}  // namespace

Generator::Generator(LlamaModel& model, int64_t initial_capacity)
    : model_(model),
      cache_(model.spec(), model.options().dtype, model.ops().device(),
             std::max<int64_t>(initial_capacity, 1)) {
  FTUNE_CHECK(!model.sharded(), "generate: the model's base is sharded across ranks "
                                "(distributed.shard_base); generation runs on one process with "
                                "the whole model");
  inv_freq_ = rope_inv_freq(model.spec().rope, model.spec().head_dim);
}

void Generator::reset() {
  cache_.truncate(0);
  tokens_.clear();
}

void Generator::ensure_rope(int64_t positions) {
  if (positions <= rope_positions_) return;
  const int64_t n = std::max(positions, 2 * rope_positions_);
  RopeTables t = rope_tables(inv_freq_, n);
  const Device dev = model_.ops().device();
  rope_cos_ = dev.is_cpu() ? t.cos : t.cos.to(dev);
  rope_sin_ = dev.is_cpu() ? t.sin : t.sin.to(dev);
  rope_positions_ = n;
}

Tensor Generator::forward(const std::vector<int32_t>& ids, bool all_logits) {
  const ModelSpec& spec = model_.spec();
  Ops& ops = model_.ops();
  const BaseWeights& base = model_.base();
  const Device dev = ops.device();
  const DType dt = model_.options().dtype;
  const int64_t T = static_cast<int64_t>(ids.size());
  FTUNE_CHECK(T > 0, "generate: no tokens to run");
  for (size_t i = 0; i < ids.size(); ++i)
    FTUNE_CHECK(ids[i] >= 0 && ids[i] < spec.vocab_size,
                "generate: token id {} at position {} is outside the vocabulary (size {})", ids[i],
                cache_.length() + static_cast<int64_t>(i), spec.vocab_size);
  const int64_t past = cache_.length();
  FTUNE_CHECK(!spec.sliding_window || past + T <= *spec.sliding_window,
              "generate: {} tokens exceed the sliding window ({}); ftune attends over the whole "
              "sequence only",
              past + T, *spec.sliding_window);
  cache_.reserve(past + T);
  ensure_rope(past + T);
  std::vector<int32_t> pos(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) pos[static_cast<size_t>(i)] = static_cast<int32_t>(past + i);
  const Tensor ids_t = upload(ids, dev), positions = upload(pos, dev);

  const int64_t H = spec.hidden_size, F = spec.intermediate_size;
  const int64_t nh = spec.num_heads, nkv = spec.num_kv_heads, hd = spec.head_dim;
  const float eps = static_cast<float>(spec.rms_norm_eps);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const LoraWeights* lora = model_.has_lora() ? &model_.lora() : nullptr;
  const float scaling = lora ? lora->spec.scaling() : 0.0f;
  const Tensor none;
  const auto qkv_m = qkv_members(spec), gu_m = gate_up_members(spec);

  Tensor x = Tensor::empty({T, H}, dt, dev);
  ops.embedding_forward(base.embed, ids_t, x);
  for (int l = 0; l < spec.num_layers; ++l) {
    const LayerWeights& W = base.layers[static_cast<size_t>(l)];
    auto lin = [&](const std::vector<LoraGroupMember>& members, const BaseMatrix& w,
                   const Tensor& bias, const Tensor& input, Tensor& y) {
      lora_group_forward(ops, input, w, bias, lora, l, members, scaling, 0.0f, y, nullptr);
    };
    Tensor n1 = Tensor::empty({T, H}, dt, dev), rstd = Tensor::empty({T}, DType::F32, dev);
    ops.rms_norm_forward(x, W.attn_norm, eps, n1, rstd);
    Tensor q = Tensor::empty({T, nh, hd}, dt, dev);
    {
      Tensor qkv = Tensor::empty({T, (nh + 2 * nkv) * hd}, dt, dev);
      lin(qkv_m, {W.qkv, W.fp8_scale[0]}, W.qkv_bias, n1, qkv);
      Tensor k_new = cache_.k_rows(l, past, past + T), v_new = cache_.v_rows(l, past, past + T);
      ops.qkv_rope_split_forward(qkv, positions, rope_cos_, rope_sin_, q, k_new, v_new);
    }
    Tensor attn = Tensor::empty({T, nh, hd}, dt, dev);
    ops.attention_kv_cache(q, cache_.k(l), cache_.v(l), past, scale, attn);
    Tensor o = Tensor::empty({T, H}, dt, dev);
    lin({{Proj::O, 0, H, 0}},
        {W.weight[static_cast<size_t>(Proj::O)], W.fp8_scale[static_cast<size_t>(Proj::O)]},
        W.bias[static_cast<size_t>(Proj::O)], attn.view({T, nh * hd}), o);
    Tensor h = Tensor::empty({T, H}, dt, dev), n2 = Tensor::empty({T, H}, dt, dev);
    ops.add_rms_norm_forward(x, o, W.mlp_norm, eps, h, n2, rstd);
    Tensor gu = Tensor::empty({T, 2 * F}, dt, dev);
    lin(gu_m, {W.gate_up, W.fp8_scale[static_cast<size_t>(Proj::Gate)]}, none, n2, gu);
    Tensor m = Tensor::empty({T, F}, dt, dev);
    ops.swiglu_fused_forward(gu, m);
    Tensor out = Tensor::empty({T, H}, dt, dev);
    lin({{Proj::Down, 0, H, 0}},
        {W.weight[static_cast<size_t>(Proj::Down)], W.fp8_scale[static_cast<size_t>(Proj::Down)]},
        W.bias[static_cast<size_t>(Proj::Down)], m, out);
    ops.axpy(1.0f, h, out);
    x = out;
  }
  cache_.append(T);
  tokens_.insert(tokens_.end(), ids.begin(), ids.end());

  const int64_t rows = all_logits ? T : 1;
  Tensor last = all_logits ? x : x.slice_rows(T - 1, T);
  Tensor nf = Tensor::empty({rows, H}, dt, dev), rstdf = Tensor::empty({rows}, DType::F32, dev);
  ops.rms_norm_forward(last, base.final_norm, eps, nf, rstdf);
  Tensor logits = Tensor::empty({rows, spec.vocab_size}, DType::F32, dev);
  ops.gemm(nf, false, base.lm_head, true, logits, 1.0f, 0.0f);
  return dev.is_cpu() ? logits : logits.to(Device::cpu());
}

GenerationResult Generator::generate(const std::vector<int32_t>& prompt,
                                     const GenerationOptions& opts,
                                     const std::function<bool(int32_t)>& on_token) {
  FTUNE_CHECK(!prompt.empty(), "generate: the prompt has no tokens");
  FTUNE_CHECK(opts.max_new_tokens >= 0, "generate: max_new_tokens {} must be >= 0",
              opts.max_new_tokens);
  opts.sampling.validate();
  if (model_.has_lora()) model_.lora().refresh_compute(model_.ops());  // trained since?
  GenerationResult r;
  r.prompt_tokens = static_cast<int64_t>(prompt.size());
  // Reuse the cached prefix; the last prompt token always runs (its logits start generation).
  size_t common = 0;
  while (common < tokens_.size() && common + 1 < prompt.size() &&
         tokens_[common] == prompt[common])
    ++common;
  cache_.truncate(static_cast<int64_t>(common));
  tokens_.resize(common);
  r.reused_tokens = static_cast<int64_t>(common);
  r.stop_reason = "length";
  if (opts.max_new_tokens == 0) return r;

  Sampler sampler(opts.sampling);
  const int64_t V = model_.spec().vocab_size;
  Tensor logits = forward(std::vector<int32_t>(prompt.begin() + static_cast<std::ptrdiff_t>(common),
                                               prompt.end()));
  for (int64_t n = 0; n < opts.max_new_tokens; ++n) {
    const int32_t tok = sampler.sample(logits.f32(), V);
    r.ids.push_back(tok);
    const bool stop =
        std::find(opts.stop_ids.begin(), opts.stop_ids.end(), tok) != opts.stop_ids.end();
    if (on_token && !on_token(tok)) {
      r.stop_reason = stop ? "stop" : "cancelled";
      break;
    }
    if (stop) {
      r.stop_reason = "stop";
      break;
    }
    if (n + 1 < opts.max_new_tokens) logits = forward({tok});
  }
  return r;
}

}  // namespace ftune
