// Internal to the CPU backend: the free functions behind CpuOps (one file per op family).
// Every function validates its arguments first through the checks shared with the CUDA backend
// (backend/op_checks.h, with Device::cpu() as the expected device), which throw ftune::Error
// naming the op (e.g. "rms_norm_forward: x is [4, 8] but w is [6]"), then computes in fp32 on
// the host. Parallel loops only split independent outputs, and every reduction runs in a fixed
// order, so results do not depend on the thread count or schedule.
#pragma once
#include <cstdint>

#include "backend/op_checks.h"
#include "backend/ops.h"
#include "core/tensor.h"

namespace ftune::cpu {

// Elements per OpenMP task below which loops stay serial (thread start-up costs more).
inline constexpr int64_t kParallelGrain = 1 << 14;

// ---- cpu_gemm.cpp ----
void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
          float beta);
void add_bias(Tensor& y, const Tensor& bias);
void bias_backward(const Tensor& dy, Tensor& dbias);

// ---- cpu_fp8.cpp ----
void quantize_fp8(const Tensor& x, Tensor& q, Tensor& scale);
void gemm_fp8(const Tensor& a, const Tensor& a_scale, const Tensor& b, const Tensor& b_scale,
              Tensor& c, float alpha, float beta);
void transpose(const Tensor& src, Tensor& dst);

// ---- cpu_elementwise.cpp ----
void axpy(float alpha, const Tensor& x, Tensor& y);
void scale(Tensor& x, float alpha);
double sum_squares(const Tensor& x);
void cast(const Tensor& src, Tensor& dst);

// ---- cpu_embedding.cpp ----
void embedding_forward(const Tensor& table, const Tensor& ids, Tensor& out);
void embedding_backward(const Tensor& dy, const Tensor& ids, Tensor& dtable);

// ---- cpu_norm.cpp ----
void rms_norm_forward(const Tensor& x, const Tensor& w, float eps, Tensor& y, Tensor& rstd);
void rms_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                       Tensor& dx, Tensor* dw, bool accumulate);
void add_rms_norm_forward(const Tensor& a, const Tensor& b, const Tensor& w, float eps,
                          Tensor& sum, Tensor& y, Tensor& rstd);

// ---- cpu_rope.cpp ----
void rope_forward(Tensor& x, const Tensor& positions, const Tensor& cos, const Tensor& sin);
void rope_backward(Tensor& dx, const Tensor& positions, const Tensor& cos, const Tensor& sin);
void qkv_rope_split_forward(const Tensor& qkv, const Tensor& positions, const Tensor& cos,
                            const Tensor& sin, Tensor& q, Tensor& k, Tensor& v);
void qkv_rope_merge_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                             const Tensor& positions, const Tensor& cos, const Tensor& sin,
                             Tensor& dqkv);

// ---- cpu_attention.cpp ----
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                       const Tensor& doc_start, float scale, Tensor& o, Tensor& lse);
void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o,
                        const Tensor& lse, const Tensor& d_o, const Tensor& doc_start,
                        float scale, Tensor& dq, Tensor& dk, Tensor& dv);

// ---- cpu_attention_kv_cache.cpp ----
void attention_kv_cache(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                        int64_t past, float scale, Tensor& o);

// ---- cpu_mlp.cpp ----
void swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& out);
void swiglu_backward(const Tensor& dout, const Tensor& gate, const Tensor& up, Tensor& dgate,
                     Tensor& dup);
void swiglu_fused_forward(const Tensor& gu, Tensor& out);
void swiglu_fused_backward(const Tensor& dout, const Tensor& gu, Tensor& dgu);

// ---- cpu_dropout.cpp ----
void dropout_forward(const Tensor& x, float p, uint64_t seed, Tensor& out, Tensor& mask);
void dropout_backward(const Tensor& dy, const Tensor& mask, float p, Tensor& dx);
void dropout_apply(const Tensor& x, float p, uint64_t seed, int64_t index_offset, Tensor& out);

// ---- cpu_cross_entropy.cpp ----
void lm_head_cross_entropy(const Tensor& x, const Tensor& w, const Tensor& targets,
                           float grad_scale, Tensor& loss_sum, Tensor* dx, Tensor* logits,
                           int64_t chunk_tokens);

// ---- cpu_adamw.cpp ----
void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, float lr, float beta1,
                float beta2, float eps, float weight_decay, int64_t step);

}  // namespace ftune::cpu
