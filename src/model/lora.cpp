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

LoraWeights LoraWeights::init(const ModelSpec& model, const LoraSpec& spec, Device device) {
  spec.validate();
  LoraWeights w;
  w.spec = spec;
  w.layers.resize(static_cast<size_t>(model.num_layers));
  std::mt19937_64 rng(spec.seed);
  for (auto& layer : w.layers) {
    for (Proj p : kAllProj) {
      if (!spec.targets[static_cast<size_t>(p)]) continue;
      const auto s = model.proj_shape(p);
      const int64_t out = s[0], in = s[1];
      LoraPair& lp = layer[static_cast<size_t>(p)];
      Tensor a = Tensor::empty({spec.r, in});
      const float bound = 1.0f / std::sqrt(static_cast<float>(in));
      std::uniform_real_distribution<float> u(-bound, bound);
      float* pa = a.f32();
      for (int64_t i = 0; i < a.numel(); ++i) pa[i] = u(rng);
      lp.A = device.is_cpu() ? a : a.to(device);
      lp.B = Tensor::zeros({out, spec.r}, DType::F32, device);
      lp.dA = Tensor::zeros({spec.r, in}, DType::F32, device);
      lp.dB = Tensor::zeros({out, spec.r}, DType::F32, device);
    }
  }
  return w;
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
  if (lora == nullptr || !lora->defined()) return;
  const int64_t n = x.dim(0), r = lora->A.dim(0);
  Tensor xd = x;
  Tensor mask;
  if (dropout > 0.0f) {
    xd = Tensor::empty(x.shape(), DType::F32, x.device());
    mask = Tensor::empty(x.shape(), DType::U8, x.device());
    ops.dropout_forward(x, dropout, dropout_seed, xd, mask);
  }
  Tensor t = Tensor::empty({n, r}, DType::F32, x.device());
  ops.gemm(xd, false, lora->A, true, t, 1.0f, 0.0f);
  ops.gemm(t, false, lora->B, true, y, scaling, 1.0f);
  if (cache != nullptr) {
    cache->xd = dropout > 0.0f ? xd : Tensor();
    cache->mask = mask;
    cache->t = t;
  }
}

void lora_linear_backward(Ops& ops, const Tensor& dy, const Tensor& x, const Tensor& w,
                          LoraPair* lora, float scaling, float dropout,
                          const LoraLinearCache& cache, Tensor& dx, bool accumulate_dx) {
  ops.gemm(dy, false, w, false, dx, 1.0f, accumulate_dx ? 1.0f : 0.0f);
  if (lora == nullptr || !lora->defined()) return;
  FTUNE_CHECK(cache.t.defined(), "lora_linear_backward: forward cache is missing");
  const int64_t n = dy.dim(0), r = lora->A.dim(0);
  const Tensor& xd = dropout > 0.0f ? cache.xd : x;
  // dB += s · dyᵀ t ;  dt = s · dy B ;  dA += dtᵀ xd ;  dx += dropout_bwd(dt A)
  ops.gemm(dy, true, cache.t, false, lora->dB, scaling, 1.0f);
  Tensor dt = Tensor::empty({n, r}, DType::F32, dy.device());
  ops.gemm(dy, false, lora->B, false, dt, scaling, 0.0f);
  ops.gemm(dt, true, xd, false, lora->dA, 1.0f, 1.0f);
  if (dropout > 0.0f) {
    Tensor dxd = Tensor::empty(x.shape(), DType::F32, dy.device());
    ops.gemm(dt, false, lora->A, false, dxd, 1.0f, 0.0f);
    ops.dropout_backward(dxd, cache.mask, dropout, dxd);
    ops.axpy(1.0f, dxd, dx);
  } else {
    ops.gemm(dt, false, lora->A, false, dx, 1.0f, 1.0f);
  }
}

}  // namespace ftune
