// LoRA adapters (PEFT semantics, FORMATS.md §3) and the one LoRA-linear function every
// projection goes through:  y = x Wᵀ + b + scaling · (dropout(x) Aᵀ) Bᵀ,
// scaling = alpha/r (rsLoRA: alpha/sqrt(r)); A [r, in], B [out, r]. Only A and B train.
#pragma once
#include <array>
#include <string>
#include <vector>

#include "backend/ops.h"
#include "model/model_spec.h"

namespace ftune {

struct LoraSpec {
  int64_t r = 16;
  double alpha = 16.0;
  double dropout = 0.0;
  bool use_rslora = false;
  std::array<bool, kNumProj> targets{true, true, true, true, true, true, true};
  uint64_t seed = 42;  // init and dropout streams

  float scaling() const;
  bool targets_any() const;
  std::vector<std::string> target_names() const;  // PEFT target_modules
  void validate() const;
};

// One adapted projection: weights and their gradients (all F32).
struct LoraPair {
  Tensor A, B;    // [r, in], [out, r]
  Tensor dA, dB;  // same shapes, accumulated by backward
  bool defined() const { return A.defined(); }
};

// The trainable parameters: per layer, per projection (undefined where not targeted).
struct LoraWeights {
  LoraSpec spec;
  std::vector<std::array<LoraPair, kNumProj>> layers;

  // PEFT default init: A ~ kaiming_uniform(a=√5) = U(−1/√in, 1/√in), B = 0, seeded by spec.seed.
  static LoraWeights init(const ModelSpec& model, const LoraSpec& spec, Device device);

  // (PEFT key, param, grad) for every trainable tensor in a fixed order.
  struct Param {
    std::string name;
    Tensor* value;
    Tensor* grad;
  };
  std::vector<Param> params();
  void zero_grad();
  int64_t num_params() const;
};

// What the forward of one LoRA linear keeps for its backward.
struct LoraLinearCache {
  Tensor xd;    // dropout(x) when dropout > 0 (else undefined: x is used)
  Tensor mask;  // dropout mask
  Tensor t;     // dropout(x) Aᵀ  [N, r]
};

// y[N,out] = x Wᵀ + b (+ LoRA when lora != nullptr). cache may be null for inference.
void lora_linear_forward(Ops& ops, const Tensor& x, const Tensor& w, const Tensor& bias,
                         const LoraPair* lora, float scaling, float dropout, uint64_t dropout_seed,
                         Tensor& y, LoraLinearCache* cache);

// dx = dy W (+ LoRA path) written, or added when accumulate_dx; lora->dA/dB accumulated.
void lora_linear_backward(Ops& ops, const Tensor& dy, const Tensor& x, const Tensor& w,
                          LoraPair* lora, float scaling, float dropout,
                          const LoraLinearCache& cache, Tensor& dx, bool accumulate_dx);

}  // namespace ftune
