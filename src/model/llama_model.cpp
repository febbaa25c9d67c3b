#include "model/llama_model.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"
#include "io/bnb4bit.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/rope.h"

namespace ftune {

struct LlamaModel::BatchInputs {
  int64_t n = 0;
  Tensor ids, positions, doc_start, targets;  // I32 [N] on the model's device
};

// The projection groups of a layer (lora.h): q/k/v and gate/up each run as one fused linear.
enum Group { kQkv, kO, kGateUp, kDown, kNumGroups };

// What a layer's forward keeps for its backward (HF names in comments).
struct LlamaModel::LayerCache {
  Tensor x;              // layer input (residual stream)
  Tensor n1, rstd1;      // input_layernorm(x)
  Tensor q, k, v;        // q/k after RoPE, v: [N, heads, hd]
  Tensor attn, lse;      // attention output [N, nh, hd], log-sum-exp [N, nh]
  Tensor h;              // x + o_proj(attn)
  Tensor n2, rstd2;      // post_attention_layernorm(h)
  Tensor gu, m;          // [gate_proj | up_proj] [N, 2F], silu(gate)*up [N, F]
  std::array<LoraGroupCache, kNumGroups> lin;
  // The checkpointed recompute stopped at n2: layer_backward runs the MLP in token chunks.
  bool mlp_in_chunks = false;
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
  FTUNE_CHECK(opts_.dtype == DType::F32 || !ops_.device().is_cpu(),
              "LlamaModel: the CPU backend computes in F32 only (asked for {})",
              dtype_name(opts_.dtype));
  FTUNE_CHECK(opts_.dtype == DType::F32 || opts_.dtype == DType::BF16 || opts_.dtype == DType::F16,
              "LlamaModel: dtype {} is not one of F32, BF16, F16", dtype_name(opts_.dtype));
  fuse_base_weights(base_, ops_, opts_.dtype);
  if (opts_.fp8_base) quantize_base_fp8(base_, ops_);
  const bool nf4 = !base_.layers.empty() && base_.layers[0].quantized();
  for (const auto& L : base_.layers)
    FTUNE_CHECK(L.empty() || L.quantized() == nf4, "LlamaModel: some layers are NF4 and some are not");
  setup_nf4_workspace();
  // prepare() validates every batch's index values on the host, so backends need not copy them
  // back to check (a synchronisation per op on the GPU).
  ops_.set_check_index_values(false);
  inv_freq_ = rope_inv_freq(spec_.rope, spec_.head_dim);
}

void LlamaModel::setup_nf4_workspace() {
  if (!base_is_nf4() || nf4_workspace_.defined()) return;
  // One workspace for the largest projection group (q/k/v or gate/up stacked, o, down); each
  // GEMM's weight is dequantized into it just before the GEMM, so the dense model never exists.
  int64_t most = 0;
  for (int g = 0; g < kNumGroups; ++g) {
    int64_t rows = 0;
    for (const auto& m : group_members(0, g)) rows += m.out;
    most = std::max(most, rows * spec_.proj_shape(group_members(0, g)[0].proj)[1]);
  }
  nf4_workspace_ = Tensor::empty({most}, opts_.dtype, ops_.device());
}

bool LlamaModel::base_is_nf4() const {
  if (sharded_) return sharded_->quantized();
  return !base_.layers.empty() && base_.layers[0].quantized();
}

void LlamaModel::shard_base(ShardGatherer& g) {
  FTUNE_CHECK(!sharded_, "LlamaModel: the base is already sharded");
  FTUNE_CHECK(!opts_.fp8_base, "model.fp8_base cannot be combined with a sharded base "
                               "(distributed.shard_base): turn one of them off");
  auto sh = std::make_unique<ShardedLayers>(g, ops_.device());
  for (auto& L : base_.layers) sh->add(L);
  sharded_ = std::move(sh);
}

const LayerWeights& LlamaModel::layer_weights(int l, int next) {
  if (sharded_) return sharded_->acquire(l, next);
  return base_.layers[static_cast<size_t>(l)];
}

int64_t LlamaModel::base_bytes_held() const {
  int64_t n = base_weight_bytes(base_);
  if (sharded_) n += sharded_->shard_bytes() + sharded_->buffer_bytes();
  return n;
}

void LlamaModel::idle_pass(bool backward) {
  if (!sharded_) return;
  const int L = spec_.num_layers;
  for (int l = 0; l < L; ++l) (void)layer_weights(l, next_in_forward(l));
  if (!backward) return;
  for (int l = L - 1; l >= 0; --l) {
    (void)layer_weights(l, l - 1);
    if (grads_ready_) grads_ready_(l);
  }
}

LlamaModel LlamaModel::from_hf_folder(const std::string& dir, Ops& ops, ModelOptions opts,
                                      ShardGatherer* shard) {
  const std::string cfg_path = dir + "/config.json";
  HFModelConfig cfg = load_hf_config(cfg_path);
  ModelSpec spec = model_spec_from_hf(cfg, cfg_path);
  CheckpointReader ckpt = CheckpointReader::open_folder(dir);
  bnb4bit_config(cfg, cfg_path);  // refuses quantizations other than bitsandbytes nf4
  WeightLoadOptions wo;
  wo.load_in_4bit = opts.load_in_4bit;
  wo.double_quant = opts.double_quant;
  std::unique_ptr<ShardedLayers> sh;
  FTUNE_CHECK(shard == nullptr || !opts.fp8_base,
              "model.fp8_base cannot be combined with a sharded base (distributed.shard_base): "
              "turn one of them off");
  if (shard != nullptr) {
    // Each layer fused and sharded as soon as it is read: a rank never holds the whole model.
    sh = std::make_unique<ShardedLayers>(*shard, ops.device());
    wo.on_layer = [&](int, LayerWeights& L) {
      fuse_layer_weights(L, ops, opts.dtype);
      sh->add(L);
    };
  }
  BaseWeights w = load_base_weights(spec, ckpt, dir, ops.device(), opts.dtype, wo);
  LlamaModel m(std::move(spec), std::move(w), ops, opts);
  if (sh) {
    m.sharded_ = std::move(sh);
    m.setup_nf4_workspace();
  }
  return m;
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
  if (opts_.dtype != DType::F32) lora_->set_compute_dtype(ops_, opts_.dtype);
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
  const std::vector<int32_t> targets = next_token_targets(batch);
  for (size_t i = 0; i < targets.size(); ++i)
    FTUNE_CHECK(targets[i] == kIgnoreIndex || (targets[i] >= 0 && targets[i] < spec_.vocab_size),
                "model: label {} at position {} is outside the vocabulary (size {})", targets[i],
                i + 1, spec_.vocab_size);
  auto upload = [&](const std::vector<int32_t>& v) {
    Tensor t = Tensor::from_ints(v, {in.n});
    return ops_.device().is_cpu() ? t : t.to(ops_.device());
  };
  in.ids = upload(batch.input_ids);
  in.positions = upload(batch.position_ids);
  in.doc_start = upload(batch.doc_start);
  ops_.describe_documents(in.doc_start, batch.doc_start);
  in.targets = upload(targets);
  return in;
}

std::vector<LoraGroupMember> LlamaModel::group_members(int l, int group) const {
  const int64_t qd = spec_.num_heads * spec_.head_dim, kd = spec_.num_kv_heads * spec_.head_dim;
  const int64_t F = spec_.intermediate_size, H = spec_.hidden_size;
  switch (group) {
    case kQkv:
      return {{Proj::Q, 0, qd, dropout_seed(l, Proj::Q)},
              {Proj::K, qd, kd, dropout_seed(l, Proj::K)},
              {Proj::V, qd + kd, kd, dropout_seed(l, Proj::V)}};
    case kO: return {{Proj::O, 0, H, dropout_seed(l, Proj::O)}};
    case kGateUp:
      return {{Proj::Gate, 0, F, dropout_seed(l, Proj::Gate)},
              {Proj::Up, F, F, dropout_seed(l, Proj::Up)}};
    default: return {{Proj::Down, 0, H, dropout_seed(l, Proj::Down)}};
  }
}

BaseMatrix LlamaModel::group_weight(const LayerWeights& W, int l, int group) {
  if (!W.quantized()) {
    const auto scale = [&](Proj p) { return W.fp8_scale[static_cast<size_t>(p)]; };
    switch (group) {
      case kQkv: return {W.qkv, scale(Proj::Q)};
      case kGateUp: return {W.gate_up, scale(Proj::Gate)};
      case kO: return {W.weight[static_cast<size_t>(Proj::O)], scale(Proj::O)};
      default: return {W.weight[static_cast<size_t>(Proj::Down)], scale(Proj::Down)};
    }
  }
  // Stacked groups: each projection (quantized on its own, as bnb does) fills its rows.
  const auto members = group_members(l, group);
  const int64_t in = W.nf4[static_cast<size_t>(members[0].proj)].shape[1];
  int64_t rows = 0;
  for (const auto& m : members) rows += m.out;
  Tensor w = nf4_workspace_.slice_flat(0, {rows, in});
  for (const auto& m : members) {
    Tensor dst = w.slice_rows(m.col, m.col + m.out);
    ops_.dequantize_nf4(W.nf4[static_cast<size_t>(m.proj)], dst);
  }
  return w;
}

void LlamaModel::layer_forward(int l, const LayerWeights& W, const Tensor& x,
                               const BatchInputs& in, LayerCache& c, Tensor& out, bool keep,
                               bool recompute) {
  const Device dev = ops_.device();
  const DType dt = opts_.dtype;
  const int64_t N = in.n, H = spec_.hidden_size, F = spec_.intermediate_size;
  const int64_t nh = spec_.num_heads, nkv = spec_.num_kv_heads, hd = spec_.head_dim;
  const float eps = static_cast<float>(spec_.rms_norm_eps);
  const float drop = dropout();
  const float scaling = lora_ ? lora_->spec.scaling() : 0.0f;
  auto lin = [&](int group, const BaseMatrix& w, const Tensor& bias, const Tensor& input,
                 Tensor& y) {
    lora_group_forward(ops_, input, w, bias, lora_.get(), l, group_members(l, group), scaling,
                       drop, y, &c.lin[static_cast<size_t>(group)]);
  };
  const Tensor none;

  c.x = x;
  c.n1 = Tensor::empty({N, H}, dt, dev);
  c.rstd1 = Tensor::empty({N}, DType::F32, dev);
  ops_.rms_norm_forward(x, W.attn_norm, eps, c.n1, c.rstd1);
  {
    Tensor qkv = Tensor::empty({N, (nh + 2 * nkv) * hd}, dt, dev);
    lin(kQkv, group_weight(W, l, kQkv), W.qkv_bias, c.n1, qkv);
    c.q = Tensor::empty({N, nh, hd}, dt, dev);
    c.k = Tensor::empty({N, nkv, hd}, dt, dev);
    c.v = Tensor::empty({N, nkv, hd}, dt, dev);
    ops_.qkv_rope_split_forward(qkv, in.positions, rope_cos_, rope_sin_, c.q, c.k, c.v);
  }
  c.attn = Tensor::empty({N, nh, hd}, dt, dev);
  c.lse = Tensor::empty({N, nh}, DType::F32, dev);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  ops_.attention_forward(c.q, c.k, c.v, in.doc_start, scale, c.attn, c.lse);
  {
    Tensor o = Tensor::empty({N, H}, dt, dev);
    lin(kO, group_weight(W, l, kO), W.bias[static_cast<size_t>(Proj::O)], c.attn.view({N, nh * hd}),
        o);
    // h = x + o_proj(attn); n2 = post_attention_layernorm(h), in one pass.
    c.h = Tensor::empty({N, H}, dt, dev);
    c.n2 = Tensor::empty({N, H}, dt, dev);
    c.rstd2 = Tensor::empty({N}, DType::F32, dev);
    ops_.add_rms_norm_forward(x, o, W.mlp_norm, eps, c.h, c.n2, c.rstd2);
  }
  // Nothing of the MLP kept (checkpointing's first forward, inference) or only what backward
  // reads (the recompute): row chunks bound its [N, 2F] and [N, F] transients.
  const int64_t chunk = mlp_chunk_rows(opts_.mlp_chunk_tokens);
  if (N > chunk && (recompute || !keep)) {
    if (recompute) {
      c.mlp_in_chunks = true;  // layer_backward recomputes the MLP chunk by chunk
      return;
    }
    out = Tensor::empty({N, H}, dt, dev);
    for (int64_t r0 = 0; r0 < N; r0 += chunk) {
      const int64_t r1 = std::min(N, r0 + chunk);
      Tensor gu = Tensor::empty({r1 - r0, 2 * F}, dt, dev);
      lora_group_forward(ops_, c.n2.slice_rows(r0, r1), group_weight(W, l, kGateUp), none,
                         lora_.get(), l, group_members(l, kGateUp), scaling, drop, gu, nullptr,
                         r0);
      Tensor m = Tensor::empty({r1 - r0, F}, dt, dev);
      ops_.swiglu_fused_forward(gu, m);
      gu = Tensor();
      Tensor rows = out.slice_rows(r0, r1);
      lora_group_forward(ops_, m, group_weight(W, l, kDown), W.bias[static_cast<size_t>(Proj::Down)],
                         lora_.get(), l, group_members(l, kDown), scaling, drop, rows, nullptr,
                         r0);
    }
    ops_.axpy(1.0f, c.h, out);  // out = h + down(m)
    c.release_all_but_input();
    return;
  }
  c.gu = Tensor::empty({N, 2 * F}, dt, dev);
  lin(kGateUp, group_weight(W, l, kGateUp), none, c.n2, c.gu);
  c.m = Tensor::empty({N, F}, dt, dev);
  ops_.swiglu_fused_forward(c.gu, c.m);
  if (recompute) {
    lora_group_cache_only(ops_, c.m, lora_.get(), l, group_members(l, kDown), drop,
                          &c.lin[static_cast<size_t>(kDown)]);
    return;
  }
  out = Tensor::empty({N, H}, dt, dev);
  lin(kDown, group_weight(W, l, kDown), W.bias[static_cast<size_t>(Proj::Down)], c.m, out);
  ops_.axpy(1.0f, c.h, out);  // out = h + down(m)
  if (!keep) c.release_all_but_input();
}

void LlamaModel::layer_backward(int l, const LayerWeights& W, const BatchInputs& in,
                                LayerCache& c, Tensor& dx) {
  const Device dev = ops_.device();
  const DType dt = opts_.dtype;
  const int64_t N = in.n, H = spec_.hidden_size, F = spec_.intermediate_size;
  const int64_t nh = spec_.num_heads, nkv = spec_.num_kv_heads, hd = spec_.head_dim;
  const float drop = dropout();
  const float scaling = lora_ ? lora_->spec.scaling() : 0.0f;
  auto lin_bwd = [&](int group, const BaseMatrix& w, const Tensor& dy, const Tensor& input,
                     Tensor& dinput) {
    lora_group_backward(ops_, dy, input, w, lora_.get(), l, group_members(l, group), scaling,
                        drop, c.lin[static_cast<size_t>(group)], dinput, false);
  };

  // out = h + down(m): dx is d/d(out) on entry.
  Tensor dn2;
  if (c.mlp_in_chunks) {
    dn2 = Tensor::empty({N, H}, dt, dev);
    mlp_backward_in_chunks(l, W, c, dx, dn2);
  } else {
    Tensor dm = Tensor::empty({N, F}, dt, dev);
    lin_bwd(kDown, group_weight(W, l, kDown), dx, c.m, dm);
    Tensor dgu = Tensor::empty({N, 2 * F}, dt, dev);
    ops_.swiglu_fused_backward(dm, c.gu, dgu);
    dm = Tensor();
    dn2 = Tensor::empty({N, H}, dt, dev);
    lin_bwd(kGateUp, group_weight(W, l, kGateUp), dgu, c.n2, dn2);
  }
  ops_.rms_norm_backward(dn2, c.h, W.mlp_norm, c.rstd2, dx, nullptr, true);  // dx: d/dh
  // h = x + o_proj(attn)
  Tensor dattn = Tensor::empty({N, nh, hd}, dt, dev);
  Tensor dattn2 = dattn.view({N, nh * hd});
  lin_bwd(kO, group_weight(W, l, kO), dx, c.attn.view({N, nh * hd}), dattn2);
  Tensor dq = Tensor::empty({N, nh, hd}, dt, dev);
  Tensor dk = Tensor::empty({N, nkv, hd}, dt, dev);
  Tensor dv = Tensor::empty({N, nkv, hd}, dt, dev);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  ops_.attention_backward(c.q, c.k, c.v, c.attn, c.lse, dattn, in.doc_start, scale, dq, dk, dv);
  dattn = dattn2 = Tensor();
  Tensor dqkv = Tensor::empty({N, (nh + 2 * nkv) * hd}, dt, dev);
  ops_.qkv_rope_merge_backward(dq, dk, dv, in.positions, rope_cos_, rope_sin_, dqkv);
  dq = dk = dv = Tensor();
  Tensor dn1 = Tensor::empty({N, H}, dt, dev);
  lin_bwd(kQkv, group_weight(W, l, kQkv), dqkv, c.n1, dn1);
  ops_.rms_norm_backward(dn1, c.x, W.attn_norm, c.rstd1, dx, nullptr, true);  // d/d(input)
}

void LlamaModel::mlp_backward_in_chunks(int l, const LayerWeights& W, LayerCache& c,
                                        const Tensor& dout, Tensor& dn2) {
  const Device dev = ops_.device();
  const DType dt = opts_.dtype;
  const int64_t N = c.n2.dim(0), F = spec_.intermediate_size;
  const int64_t chunk = mlp_chunk_rows(opts_.mlp_chunk_tokens);
  const float scaling = lora_ ? lora_->spec.scaling() : 0.0f;
  const float drop = dropout();
  const std::vector<LoraGroupMember> gate_up = group_members(l, kGateUp);
  const std::vector<LoraGroupMember> down = group_members(l, kDown);
  const Tensor none;
  // Per chunk of rows: gu = gate_up(n2), m = swiglu(gu), then the backward of down and of
  // gate_up for those rows. Every op is row-wise, so the result is the unchunked one (the LoRA
  // gradients are sums over the chunks). LoRA dropout draws each chunk's masks at the chunk's
  // rows of the whole input (dropout_row0), so they are the unchunked masks.
  for (int64_t r0 = 0; r0 < N; r0 += chunk) {
    const int64_t r1 = std::min(N, r0 + chunk), n = r1 - r0;
    const Tensor n2 = c.n2.slice_rows(r0, r1);
    LoraGroupCache gu_cache, down_cache;
    Tensor gu = Tensor::empty({n, 2 * F}, dt, dev);
    lora_group_forward(ops_, n2, group_weight(W, l, kGateUp), none, lora_.get(), l, gate_up,
                       scaling, drop, gu, &gu_cache, r0);
    Tensor m = Tensor::empty({n, F}, dt, dev);
    ops_.swiglu_fused_forward(gu, m);
    lora_group_cache_only(ops_, m, lora_.get(), l, down, drop, &down_cache, r0);
    Tensor dm = Tensor::empty({n, F}, dt, dev);
    lora_group_backward(ops_, dout.slice_rows(r0, r1), m, group_weight(W, l, kDown), lora_.get(),
                        l, down, scaling, drop, down_cache, dm, false);
    m = Tensor();
    Tensor dgu = Tensor::empty({n, 2 * F}, dt, dev);
    ops_.swiglu_fused_backward(dm, gu, dgu);
    dm = gu = Tensor();
    Tensor dn2_rows = dn2.slice_rows(r0, r1);
    lora_group_backward(ops_, dgu, n2, group_weight(W, l, kGateUp), lora_.get(), l, gate_up,
                        scaling, drop, gu_cache, dn2_rows, false);
  }
}

int64_t LlamaModel::run(const Batch& batch, float grad_scale, bool backward, Tensor* logits,
                        Tensor& loss_sum) {
  BatchInputs in = prepare(batch);
  dropout_step_ = batch.step;
  dropout_index_ = batch.global_index;
  training_ = backward;
  const Device dev = ops_.device();
  const int64_t N = in.n, H = spec_.hidden_size;
  const bool ckpt = backward && opts_.gradient_checkpointing;
  const DType dt = opts_.dtype;
  if (lora_) lora_->refresh_compute(ops_);  // the optimizer changed the F32 masters
  Tensor x = Tensor::empty({N, H}, dt, dev);
  ops_.embedding_forward(base_.embed, in.ids, x);
  std::vector<LayerCache> caches(static_cast<size_t>(spec_.num_layers));
  const bool offload = ckpt && opts_.offload_checkpoints;
  if (offload && !stash_) stash_ = ops_.make_activation_stash();
  if (offload) stash_->clear();  // no-op unless an earlier step failed half-way
  for (int l = 0; l < spec_.num_layers; ++l) {
    Tensor out;
    LayerCache& c = caches[static_cast<size_t>(l)];
    const LayerWeights& W = layer_weights(l, next_in_forward(l));
    layer_forward(l, W, x, in, c, out, backward && !ckpt);
    if (!backward) c = LayerCache();
    if (offload) {  // the saved input leaves the device while the next layers compute
      stash_->put(l, c.x);
      c.x = Tensor();
    }
    x = out;
  }
  Tensor nf = Tensor::empty({N, H}, dt, dev), rstdf = Tensor::empty({N}, DType::F32, dev);
  ops_.rms_norm_forward(x, base_.final_norm, static_cast<float>(spec_.rms_norm_eps), nf, rstdf);
  Tensor dnf;
  if (backward) dnf = Tensor::empty({N, H}, dt, dev);
  ops_.lm_head_cross_entropy(nf, base_.lm_head, in.targets, grad_scale, loss_sum,
                             backward ? &dnf : nullptr, logits,
                             ce_chunk_rows(opts_.ce_chunk_tokens, base_is_nf4()));
  const int64_t count = count_trained_tokens(batch);
  if (!backward) return count;

  Tensor dx = Tensor::empty({N, H}, dt, dev);
  ops_.rms_norm_backward(dnf, x, base_.final_norm, rstdf, dx, nullptr);
  for (int l = spec_.num_layers - 1; l >= 0; --l) {
    LayerCache& c = caches[static_cast<size_t>(l)];
    if (offload) {
      c.x = stash_->take(l);
      if (l > 0) stash_->prefetch(l - 1);  // comes back while this layer computes
    }
    const LayerWeights& W = layer_weights(l, l - 1);
    if (ckpt) {
      Tensor recomputed;
      Tensor input = c.x;
      layer_forward(l, W, input, in, c, recomputed, true, /*recompute=*/true);
    }
    layer_backward(l, W, in, c, dx);
    c = LayerCache();
    if (grads_ready_) grads_ready_(l);
  }
  return count;
}

Tensor LlamaModel::loss_accumulator() const { return Tensor::zeros({1}, DType::F64, ops_.device()); }

namespace {
double read_scalar(const Tensor& t) { return t.to(Device::cpu()).data<double>()[0]; }
}  // namespace

StepLoss LlamaModel::forward_backward(const Batch& batch, float grad_scale) {
  Tensor acc = loss_accumulator();
  const int64_t count = forward_backward_accumulate(batch, grad_scale, acc);
  return StepLoss{read_scalar(acc), count};
}

int64_t LlamaModel::forward_backward_accumulate(const Batch& batch, float grad_scale,
                                                Tensor& loss_sum) {
  FTUNE_CHECK(lora_ != nullptr, "forward_backward: attach a LoRA adapter first");
  return run(batch, grad_scale, true, nullptr, loss_sum);
}

StepLoss LlamaModel::forward(const Batch& batch, Tensor* logits) {
  if (logits != nullptr) {
    FTUNE_CHECK(logits->shape() == (Shape{batch.tokens(), spec_.vocab_size}),
                "forward: logits tensor is {}, expected [{}, {}]", shape_str(logits->shape()),
                batch.tokens(), spec_.vocab_size);
  }
  Tensor acc = loss_accumulator();
  const int64_t count = run(batch, 0.0f, false, logits, acc);
  return StepLoss{read_scalar(acc), count};
}

}  // namespace ftune
