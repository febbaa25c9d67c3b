// LoRA adapters (PEFT semantics, FORMATS.md §3) and the one LoRA-linear function every
// projection goes through:  y = x Wᵀ + b + scaling · (dropout(x) Aᵀ) Bᵀ,
// scaling = alpha/r (rsLoRA: alpha/sqrt(r)); A [r, in], B [out, r]. Only A and B train.
#pragma once
#include <array>
#include <string>
#include <vector>

#include "backend/ops.h"
#include "model/model_spec.h"
#include "model/weights.h"

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

// One adapted projection: weights and their gradients (all F32), and the copies of the weights
// in the model's compute dtype (bf16 on GPUs; the same tensors as A and B when that is F32).
struct LoraPair {
  Tensor A, B;    // [r, in], [out, r]
  Tensor dA, dB;  // same shapes, accumulated by backward
  Tensor Ac, Bc;  // A and B in the compute dtype (refreshed by LoraWeights::refresh_compute)
  bool defined() const { return A.defined(); }
  const Tensor& A_compute() const { return Ac.defined() ? Ac : A; }
  const Tensor& B_compute() const { return Bc.defined() ? Bc : B; }
};

// The trainable parameters: per layer, per projection (undefined where not targeted).
//
// Made by allocate()/init() they live in ONE flat F32 buffer (and their gradients in a second one
// of the same layout), laid out in reverse layer order (the last layer first, the order backward
// produces gradients in, so a layer's gradients form one contiguous bucket for the all-reduce);
// within a layer all A matrices in projection order, then all B matrices. So the A matrices of
// q/k/v (and of gate/up), when all are targeted, form one [3r, H] ([2r, H]) matrix: one GEMM
// computes their down-projections. The optimizer, clipping and the gradient reduction each work
// on the whole flat buffer at once.
struct LoraWeights {
  LoraSpec spec;
  std::vector<std::array<LoraPair, kNumProj>> layers;
  Tensor flat_params, flat_grads;  // F32 [num_params()] (undefined for hand-made adapters)
  Tensor flat_compute;             // flat_params in the compute dtype (undefined when F32)
  // Element range [first, second) of layer l's parameters (and gradients) in the flat buffers.
  std::vector<std::pair<int64_t, int64_t>> layer_range;

  // Zero-filled adapter in the flat layout above.
  static LoraWeights allocate(const ModelSpec& model, const LoraSpec& spec, Device device);
  // PEFT default init: A ~ kaiming_uniform(a=√5) = U(−1/√in, 1/√in), B = 0, seeded by spec.seed.
  static LoraWeights init(const ModelSpec& model, const LoraSpec& spec, Device device);

  // Gives every pair compute copies in `dt` (no-op for F32) and fills them.
  void set_compute_dtype(Ops& ops, DType dt);
  // Re-fills the compute copies from the F32 weights (after an optimizer step or a load).
  void refresh_compute(Ops& ops);
  // The A matrices of `projs` (consecutive projections of one layer) as one [k*r, in] view, or an
  // undefined tensor when they are not adjacent in the flat buffer. compute: the compute copies.
  Tensor stacked_A(int layer, const std::vector<Proj>& projs, bool compute) const;
  Tensor stacked_dA(int layer, const std::vector<Proj>& projs) const;

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
  Tensor t;                    // dropout(x) Aᵀ  [N, r]
  uint64_t dropout_seed = 0;  // with dropout > 0: the backward regenerates dropout(x) and the
                              // mask from it (Ops::dropout_apply) instead of keeping them
  int64_t dropout_offset = 0;  // x's first element's index in the tensor the mask is drawn over
                               // (x a block of rows of a larger input: MLP token chunks)
};

// ---- projections that share one input, computed as one fused linear ----
// A group is one or more projections of a layer whose base weights are stacked as rows of one
// matrix w [sum out_p, in] (q/k/v; gate/up; or a single projection): y = x wᵀ + b is one GEMM,
// and member p's output is columns [col_p, col_p + out_p) of y. Each member's LoRA branch adds
// scaling · (dropout_p(x) A_pᵀ) B_pᵀ to its columns. Without dropout, and when the members' A
// matrices are adjacent in LoraWeights' flat buffer, the down-projections x A_pᵀ of all members
// are one GEMM too (t = x [A_q; A_k; A_v]ᵀ), and backward's dA/dx terms likewise.
struct LoraGroupMember {
  Proj proj;
  int64_t col;  // first column of this projection in the group's output
  int64_t out;  // its width
  uint64_t dropout_seed;
};
struct LoraGroupCache {
  Tensor t;                          // [N, k*r] down-projections (stacked path)
  std::vector<LoraLinearCache> per;  // per member (unstacked path)
};
// The frozen part of a linear. base_forward: y = x wᵀ (written). base_backward: dx = dy w
// (written, or added when accumulate). Dense weights: one GEMM. FP8 weights (BaseMatrix::fp8):
// x is quantized per tensor to E4M3 and the product runs on FP8 tensor cores; in backward dy is
// quantized to E5M2 (gradients need range more than precision) and w transposed into a
// temporary [in, out] (the FP8 GEMM takes K-major operands only), so only the codes are stored.
void base_forward(Ops& ops, const Tensor& x, const BaseMatrix& w, Tensor& y);
void base_backward(Ops& ops, const Tensor& dy, const BaseMatrix& w, Tensor& dx, bool accumulate);

// y [N, sum out] written. lora may be null (no adapter), or have undefined pairs for members.
// dropout_row0: x is rows [dropout_row0, ...) of a larger input, whose masks the dropout draws
// (the same masks as one call over the whole input).
void lora_group_forward(Ops& ops, const Tensor& x, const BaseMatrix& w, const Tensor& bias,
                        const LoraWeights* lora, int layer,
                        const std::vector<LoraGroupMember>& members, float scaling, float dropout,
                        Tensor& y, LoraGroupCache* cache, int64_t dropout_row0 = 0);
// What lora_group_backward reads from a forward, without the forward's output: the LoRA
// down-projections (and dropout masks) of the members (for recomputation by checkpointing).
void lora_group_cache_only(Ops& ops, const Tensor& x, const LoraWeights* lora, int layer,
                           const std::vector<LoraGroupMember>& members, float dropout,
                           LoraGroupCache* cache, int64_t dropout_row0 = 0);
// dx = dy w (+ LoRA terms) written, or added when accumulate_dx; LoRA grads accumulated.
void lora_group_backward(Ops& ops, const Tensor& dy, const Tensor& x, const BaseMatrix& w,
                         LoraWeights* lora, int layer, const std::vector<LoraGroupMember>& members,
                         float scaling, float dropout, const LoraGroupCache& cache, Tensor& dx,
                         bool accumulate_dx);

// y[N,out] = x Wᵀ + b (+ LoRA when lora != nullptr). cache may be null for inference.
void lora_linear_forward(Ops& ops, const Tensor& x, const Tensor& w, const Tensor& bias,
                         const LoraPair* lora, float scaling, float dropout, uint64_t dropout_seed,
                         Tensor& y, LoraLinearCache* cache);

// The LoRA branch alone: y += scaling · (dropout(x) Aᵀ) Bᵀ (y may be a column slice).
void lora_linear_forward_adapter(Ops& ops, const Tensor& x, const LoraPair* lora, float scaling,
                                 float dropout, uint64_t dropout_seed, Tensor& y,
                                 LoraLinearCache* cache, int64_t dropout_offset = 0);
// Its backward: dx += the branch's input gradient; lora->dA/dB accumulated (dy may be strided).
void lora_linear_backward_adapter(Ops& ops, const Tensor& dy, const Tensor& x, LoraPair* lora,
                                  float scaling, float dropout, const LoraLinearCache& cache,
                                  Tensor& dx);

// dx = dy W (+ LoRA path) written, or added when accumulate_dx; lora->dA/dB accumulated.
void lora_linear_backward(Ops& ops, const Tensor& dy, const Tensor& x, const Tensor& w,
                          LoraPair* lora, float scaling, float dropout,
                          const LoraLinearCache& cache, Tensor& dx, bool accumulate_dx);

}  // namespace ftune
