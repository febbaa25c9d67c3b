#include "model/lora.h"

#include <cmath>
#include <random>

#include "core/error.h"

namespace ftune {

float LoraSpec::scaling() const {
  return static_cast<float>(use_rslora ? alpha / std::sqrt(static_cast<double>(r)) : alpha / r);
}

bool LoraSpec::targets_any() const {
  for (bool t : targets)
    if (t) return true;
  return false;
}

std::vector<std::string> LoraSpec::target_names() const {
  std::vector<std::string> v;
  for (Proj p : kAllProj)
    if (targets[static_cast<size_t>(p)]) v.emplace_back(proj_name(p));
  return v;
}

void LoraSpec::validate() const {
  FTUNE_CHECK(r > 0, "lora: r must be positive, got {}", r);
  FTUNE_CHECK(alpha > 0, "lora: alpha must be positive, got {}", alpha);
  FTUNE_CHECK(dropout >= 0 && dropout < 1, "lora: dropout must be in [0, 1), got {}", dropout);
  FTUNE_CHECK(targets_any(), "lora: no target modules");
}

namespace {
int64_t offset_in(const Tensor& flat, const Tensor& t);
}  // namespace

LoraWeights LoraWeights::allocate(const ModelSpec& model, const LoraSpec& spec, Device device) {
  spec.validate();
  LoraWeights w;
  w.spec = spec;
  w.layers.resize(static_cast<size_t>(model.num_layers));
  w.layer_range.resize(static_cast<size_t>(model.num_layers));
  // Offsets first (reverse layer order; per layer all A, then all B), then one allocation each.
  struct Slot {
    int layer;
    Proj p;
    bool is_a;
    int64_t offset;
    Shape shape;
  };
  std::vector<Slot> slots;
  int64_t total = 0;
  for (int l = model.num_layers - 1; l >= 0; --l) {
    const int64_t first = total;
    for (bool is_a : {true, false}) {
      for (Proj p : kAllProj) {
        if (!spec.targets[static_cast<size_t>(p)]) continue;
        const auto s = model.proj_shape(p);
        Shape shape = is_a ? Shape{spec.r, s[1]} : Shape{s[0], spec.r};
        slots.push_back({l, p, is_a, total, shape});
        total += shape_numel(shape);
      }
    }
    w.layer_range[static_cast<size_t>(l)] = {first, total};
  }
  w.flat_params = Tensor::zeros({total}, DType::F32, device);
  w.flat_grads = Tensor::zeros({total}, DType::F32, device);
  for (const Slot& sl : slots) {
    LoraPair& lp = w.layers[static_cast<size_t>(sl.layer)][static_cast<size_t>(sl.p)];
    (sl.is_a ? lp.A : lp.B) = w.flat_params.slice_flat(sl.offset, sl.shape);
    (sl.is_a ? lp.dA : lp.dB) = w.flat_grads.slice_flat(sl.offset, sl.shape);
  }
  return w;
}

LoraWeights LoraWeights::init(const ModelSpec& model, const LoraSpec& spec, Device device) {
  LoraWeights w = allocate(model, spec, device);
  // Drawn on the host in layer and projection order (the stream does not depend on the layout).
  Tensor host = device.is_cpu() ? w.flat_params : Tensor::zeros({w.flat_params.numel()});
  std::mt19937_64 rng(spec.seed);
  for (size_t l = 0; l < w.layers.size(); ++l) {
    for (Proj p : kAllProj) {
      const LoraPair& lp = w.layers[l][static_cast<size_t>(p)];
      if (!lp.defined()) continue;
      const int64_t in = lp.A.dim(1);
      const float bound = 1.0f / std::sqrt(static_cast<float>(in));
      std::uniform_real_distribution<float> u(-bound, bound);
      const int64_t off = offset_in(w.flat_params, lp.A);
      float* pa = host.f32() + off;
      for (int64_t i = 0; i < lp.A.numel(); ++i) pa[i] = u(rng);
    }
  }
  if (!device.is_cpu()) w.flat_params.copy_from(host);
  return w;
}

void LoraWeights::set_compute_dtype(Ops& ops, DType dt) {
  for (auto& layer : layers)
    for (auto& lp : layer) lp.Ac = lp.Bc = Tensor();
  flat_compute = Tensor();
  if (dt == DType::F32) return;
  FTUNE_CHECK(flat_params.defined(), "LoRA compute copies need the flat parameter layout");
  flat_compute = Tensor::empty(flat_params.shape(), dt, flat_params.device());
  for (auto& layer : layers) {
    for (auto& lp : layer) {
      if (!lp.defined()) continue;
      const int64_t oa = offset_in(flat_params, lp.A), ob = offset_in(flat_params, lp.B);
      FTUNE_CHECK(oa >= 0 && ob >= 0, "LoRA compute copies: a matrix outside the flat buffer");
      lp.Ac = flat_compute.slice_flat(oa, lp.A.shape());
      lp.Bc = flat_compute.slice_flat(ob, lp.B.shape());
    }
  }
  refresh_compute(ops);
}

void LoraWeights::refresh_compute(Ops& ops) {
  if (flat_compute.defined()) ops.cast(flat_params, flat_compute);
}

namespace {
// Offset (elements) of `t` in `flat`, or -1 when it is not a view of it.
int64_t offset_in(const Tensor& flat, const Tensor& t) {
  if (!flat.defined() || !t.defined()) return -1;
  const auto d = static_cast<const char*>(t.raw()) - static_cast<const char*>(flat.raw());
  const auto esz = static_cast<std::ptrdiff_t>(dtype_size(flat.dtype()));
  if (d < 0 || d % esz != 0 || d / esz + t.numel() > flat.numel()) return -1;
  return d / esz;
}

// projs' matrices (A or dA or compute A) stacked as rows of one view of `flat`, if adjacent.
Tensor stacked(const Tensor& flat, const std::vector<std::array<LoraPair, kNumProj>>& layers,
               int layer, const std::vector<Proj>& projs, const Tensor& (*pick)(const LoraPair&)) {
  const auto& L = layers[static_cast<size_t>(layer)];
  int64_t first = -1, next = -1, rows = 0, cols = 0;
  for (Proj p : projs) {
    const LoraPair& lp = L[static_cast<size_t>(p)];
    if (!lp.defined()) return Tensor();
    const Tensor& t = pick(lp);
    const int64_t off = offset_in(flat, t);
    if (off < 0 || (next >= 0 && (off != next || t.dim(1) != cols))) return Tensor();
    if (first < 0) first = off;
    cols = t.dim(1);
    next = off + t.numel();
    rows += t.dim(0);
  }
  if (first < 0) return Tensor();
  return flat.slice_flat(first, {rows, cols});
}
}  // namespace

Tensor LoraWeights::stacked_A(int layer, const std::vector<Proj>& projs, bool compute) const {
  if (compute && flat_compute.defined())
    return stacked(flat_compute, layers, layer, projs, [](const LoraPair& lp) -> const Tensor& { return lp.Ac; });
  return stacked(flat_params, layers, layer, projs, [](const LoraPair& lp) -> const Tensor& { return lp.A; });
}

Tensor LoraWeights::stacked_dA(int layer, const std::vector<Proj>& projs) const {
  return stacked(flat_grads, layers, layer, projs, [](const LoraPair& lp) -> const Tensor& { return lp.dA; });
}


std::vector<LoraWeights::Param> LoraWeights::params() {
  std::vector<Param> v;
  for (size_t l = 0; l < layers.size(); ++l) {
    for (Proj p : kAllProj) {
      LoraPair& lp = layers[l][static_cast<size_t>(p)];
      if (!lp.defined()) continue;
      v.push_back({tensor_names::lora_a(static_cast<int>(l), p), &lp.A, &lp.dA});
      v.push_back({tensor_names::lora_b(static_cast<int>(l), p), &lp.B, &lp.dB});
    }
  }
  return v;
}

void LoraWeights::zero_grad() {
  if (flat_grads.defined()) {
    flat_grads.zero_();
    return;
  }
  for (auto& p : params()) p.grad->zero_();
}

int64_t LoraWeights::num_params() const {
  int64_t n = 0;
  for (const auto& layer : layers)
    for (const auto& lp : layer)
      if (lp.defined()) n += lp.A.numel() + lp.B.numel();
  return n;
}

void lora_linear_forward(Ops& ops, const Tensor& x, const Tensor& w, const Tensor& bias,
                         const LoraPair* lora, float scaling, float dropout, uint64_t dropout_seed,
                         Tensor& y, LoraLinearCache* cache) {
  ops.gemm(x, false, w, true, y, 1.0f, 0.0f);
  if (bias.defined()) ops.add_bias(y, bias);
  lora_linear_forward_adapter(ops, x, lora, scaling, dropout, dropout_seed, y, cache);
}

void lora_linear_forward_adapter(Ops& ops, const Tensor& x, const LoraPair* lora, float scaling,
                                 float dropout, uint64_t dropout_seed, Tensor& y,
                                 LoraLinearCache* cache, int64_t dropout_offset) {
  if (lora == nullptr || !lora->defined()) return;
  const int64_t n = x.dim(0), r = lora->A.dim(0);
  Tensor xd = x;
  if (dropout > 0.0f) {
    xd = Tensor::empty(x.shape(), x.dtype(), x.device());
    ops.dropout_apply(x, dropout, dropout_seed, dropout_offset, xd);
  }
  Tensor t = Tensor::empty({n, r}, x.dtype(), x.device());
  ops.gemm(xd, false, lora->A_compute(), true, t, 1.0f, 0.0f);
  xd = Tensor();
  ops.gemm(t, false, lora->B_compute(), true, y, scaling, 1.0f);
  if (cache != nullptr) {
    cache->t = t;
    cache->dropout_seed = dropout_seed;
    cache->dropout_offset = dropout_offset;
  }
}

void lora_linear_backward(Ops& ops, const Tensor& dy, const Tensor& x, const Tensor& w,
                          LoraPair* lora, float scaling, float dropout,
                          const LoraLinearCache& cache, Tensor& dx, bool accumulate_dx) {
  ops.gemm(dy, false, w, false, dx, 1.0f, accumulate_dx ? 1.0f : 0.0f);
  lora_linear_backward_adapter(ops, dy, x, lora, scaling, dropout, cache, dx);
}

void lora_linear_backward_adapter(Ops& ops, const Tensor& dy, const Tensor& x, LoraPair* lora,
                                  float scaling, float dropout, const LoraLinearCache& cache,
                                  Tensor& dx) {
  if (lora == nullptr || !lora->defined()) return;
  FTUNE_CHECK(cache.t.defined(), "lora_linear_backward: forward cache is missing");
  const int64_t n = dy.dim(0), r = lora->A.dim(0);
  // dB += s · dyᵀ t ;  dt = s · dy B ;  dA += dtᵀ xd ;  dx += dropout_bwd(dt A)
  ops.gemm(dy, true, cache.t, false, lora->dB, scaling, 1.0f);
  Tensor dt = Tensor::empty({n, r}, dy.dtype(), dy.device());
  ops.gemm(dy, false, lora->B_compute(), false, dt, scaling, 0.0f);
  if (dropout > 0.0f) {
    // dropout(x) again from the seed (the forward kept only t), then reused for dxd.
    Tensor xd = Tensor::empty(x.shape(), x.dtype(), x.device());
    ops.dropout_apply(x, dropout, cache.dropout_seed, cache.dropout_offset, xd);
    ops.gemm(dt, true, xd, false, lora->dA, 1.0f, 1.0f);
    Tensor& dxd = xd;
    ops.gemm(dt, false, lora->A_compute(), false, dxd, 1.0f, 0.0f);
    ops.dropout_apply(dxd, dropout, cache.dropout_seed, cache.dropout_offset, dxd);
    ops.axpy(1.0f, dxd, dx);
  } else {
    ops.gemm(dt, true, x, false, lora->dA, 1.0f, 1.0f);
    ops.gemm(dt, false, lora->A_compute(), false, dx, 1.0f, 1.0f);
  }
}

namespace {
std::vector<Proj> member_projs(const std::vector<LoraGroupMember>& members) {
  std::vector<Proj> v;
  for (const auto& m : members) v.push_back(m.proj);
  return v;
}
}  // namespace

void base_forward(Ops& ops, const Tensor& x, const BaseMatrix& w, Tensor& y) {
  if (!w.fp8()) {
    ops.gemm(x, false, w.w, true, y, 1.0f, 0.0f);
    return;
  }
  Tensor x8 = Tensor::empty(x.shape(), DType::F8_E4M3, x.device());
  Tensor sx = Tensor::empty({1}, DType::F32, x.device());
  ops.quantize_fp8(x, x8, sx);
  ops.gemm_fp8(x8, sx, w.w, w.scale, y, 1.0f, 0.0f);
}

void base_backward(Ops& ops, const Tensor& dy, const BaseMatrix& w, Tensor& dx, bool accumulate) {
  const float beta = accumulate ? 1.0f : 0.0f;
  if (!w.fp8()) {
    ops.gemm(dy, false, w.w, false, dx, 1.0f, beta);
    return;
  }
  Tensor dy8 = Tensor::empty(dy.shape(), DType::F8_E5M2, dy.device());
  Tensor sdy = Tensor::empty({1}, DType::F32, dy.device());
  ops.quantize_fp8(dy, dy8, sdy);
  Tensor wt = Tensor::empty({w.w.dim(1), w.w.dim(0)}, w.w.dtype(), w.w.device());
  ops.transpose(w.w, wt);
  ops.gemm_fp8(dy8, sdy, wt, w.scale, dx, 1.0f, beta);
}

void lora_group_forward(Ops& ops, const Tensor& x, const BaseMatrix& w, const Tensor& bias,
                        const LoraWeights* lora, int layer,
                        const std::vector<LoraGroupMember>& members, float scaling, float dropout,
                        Tensor& y, LoraGroupCache* cache, int64_t dropout_row0) {
  base_forward(ops, x, w, y);
  const int64_t dropout_offset = dropout_row0 * x.dim(1);
  if (bias.defined()) ops.add_bias(y, bias);
  if (lora == nullptr) return;
  const auto& pairs = lora->layers[static_cast<size_t>(layer)];
  const int64_t n = x.dim(0), r = lora->spec.r;
  const Tensor stacked =
      dropout > 0.0f ? Tensor() : lora->stacked_A(layer, member_projs(members), true);
  if (stacked.defined()) {
    // t = x [A_1; ...; A_k]ᵀ, then each member's columns of y += s · t_p B_pᵀ.
    Tensor t = Tensor::empty({n, stacked.dim(0)}, x.dtype(), x.device());
    ops.gemm(x, false, stacked, true, t, 1.0f, 0.0f);
    for (size_t i = 0; i < members.size(); ++i) {
      const LoraPair& lp = pairs[static_cast<size_t>(members[i].proj)];
      Tensor yp = members.size() == 1 ? y : y.col_slice(members[i].col, members[i].col + members[i].out);
      Tensor tp = members.size() == 1 ? t : t.col_slice(static_cast<int64_t>(i) * r, static_cast<int64_t>(i + 1) * r);
      ops.gemm(tp, false, lp.B_compute(), true, yp, scaling, 1.0f);
    }
    if (cache != nullptr) {
      cache->t = t;
      cache->per.clear();
    }
    return;
  }
  if (cache != nullptr) {
    cache->t = Tensor();
    cache->per.assign(members.size(), LoraLinearCache{});
  }
  for (size_t i = 0; i < members.size(); ++i) {
    const LoraPair& lp = pairs[static_cast<size_t>(members[i].proj)];
    if (!lp.defined()) continue;
    if (members.size() == 1) {
      lora_linear_forward_adapter(ops, x, &lp, scaling, dropout, members[i].dropout_seed, y,
                                  cache ? &cache->per[i] : nullptr, dropout_offset);
      continue;
    }
    // The branch's last GEMM adds straight into this member's (row-strided) columns.
    Tensor yp = y.col_slice(members[i].col, members[i].col + members[i].out);
    lora_linear_forward_adapter(ops, x, &lp, scaling, dropout, members[i].dropout_seed, yp,
                                cache ? &cache->per[i] : nullptr, dropout_offset);
  }
}

void lora_group_cache_only(Ops& ops, const Tensor& x, const LoraWeights* lora, int layer,
                           const std::vector<LoraGroupMember>& members, float dropout,
                           LoraGroupCache* cache, int64_t dropout_row0) {
  if (lora == nullptr || cache == nullptr) return;
  const auto& pairs = lora->layers[static_cast<size_t>(layer)];
  const int64_t n = x.dim(0);
  const Tensor stacked =
      dropout > 0.0f ? Tensor() : lora->stacked_A(layer, member_projs(members), true);
  if (stacked.defined()) {
    cache->t = Tensor::empty({n, stacked.dim(0)}, x.dtype(), x.device());
    ops.gemm(x, false, stacked, true, cache->t, 1.0f, 0.0f);
    cache->per.clear();
    return;
  }
  cache->t = Tensor();
  cache->per.assign(members.size(), LoraLinearCache{});
  for (size_t i = 0; i < members.size(); ++i) {
    const LoraPair& lp = pairs[static_cast<size_t>(members[i].proj)];
    if (!lp.defined()) continue;
    LoraLinearCache& c = cache->per[i];
    Tensor xd = x;
    if (dropout > 0.0f) {
      xd = Tensor::empty(x.shape(), x.dtype(), x.device());
      ops.dropout_apply(x, dropout, members[i].dropout_seed, dropout_row0 * x.dim(1), xd);
    }
    c.t = Tensor::empty({n, lp.A.dim(0)}, x.dtype(), x.device());
    c.dropout_seed = members[i].dropout_seed;
    c.dropout_offset = dropout_row0 * x.dim(1);
    ops.gemm(xd, false, lp.A_compute(), true, c.t, 1.0f, 0.0f);
  }
}

void lora_group_backward(Ops& ops, const Tensor& dy, const Tensor& x, const BaseMatrix& w,
                         LoraWeights* lora, int layer, const std::vector<LoraGroupMember>& members,
                         float scaling, float dropout, const LoraGroupCache& cache, Tensor& dx,
                         bool accumulate_dx) {
  base_backward(ops, dy, w, dx, accumulate_dx);
  if (lora == nullptr) return;
  auto& pairs = lora->layers[static_cast<size_t>(layer)];
  const int64_t n = dy.dim(0), r = lora->spec.r;
  auto dy_of = [&](size_t i) {
    return members.size() == 1 ? dy : dy.col_slice(members[i].col, members[i].col + members[i].out);
  };
  if (cache.t.defined()) {
    const auto projs = member_projs(members);
    const Tensor A = lora->stacked_A(layer, projs, true);
    Tensor dA = lora->stacked_dA(layer, projs);
    FTUNE_CHECK(A.defined() && dA.defined(), "lora_group_backward: stacked A matrices are missing");
    // dB_p += s · dy_pᵀ t_p ;  dt_p = s · dy_p B_p ;  dA += dtᵀ x ;  dx += dt A
    Tensor dt = Tensor::empty({n, A.dim(0)}, dy.dtype(), dy.device());
    for (size_t i = 0; i < members.size(); ++i) {
      LoraPair& lp = pairs[static_cast<size_t>(members[i].proj)];
      const Tensor dyp = dy_of(i);
      const Tensor tp = members.size() == 1 ? cache.t : cache.t.col_slice(static_cast<int64_t>(i) * r, static_cast<int64_t>(i + 1) * r);
      Tensor dtp = members.size() == 1 ? dt : dt.col_slice(static_cast<int64_t>(i) * r, static_cast<int64_t>(i + 1) * r);
      ops.gemm(dyp, true, tp, false, lp.dB, scaling, 1.0f);
      ops.gemm(dyp, false, lp.B_compute(), false, dtp, scaling, 0.0f);
    }
    ops.gemm(dt, true, x, false, dA, 1.0f, 1.0f);
    ops.gemm(dt, false, A, false, dx, 1.0f, 1.0f);
    return;
  }
  for (size_t i = 0; i < members.size(); ++i) {
    LoraPair& lp = pairs[static_cast<size_t>(members[i].proj)];
    if (!lp.defined()) continue;
    FTUNE_CHECK(i < cache.per.size(), "lora_group_backward: forward cache is missing");
    if (members.size() == 1) {
      lora_linear_backward_adapter(ops, dy, x, &lp, scaling, dropout, cache.per[i], dx);
      continue;
    }
    // dy_p is only read by GEMMs, which take the strided view.
    lora_linear_backward_adapter(ops, dy_of(i), x, &lp, scaling, dropout, cache.per[i], dx);
  }
}

}  // namespace ftune
