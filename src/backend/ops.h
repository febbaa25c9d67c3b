// The backend interface: every numeric operation the model and trainer need, forward and
// backward. The CPU backend (src/backend/cpu) is the fp32 reference; the CUDA backend implements
// the same interface and is tested against it. Shapes below use N = tokens of a micro-batch
// (rows of a packed batch flattened), H = hidden, nh/nkv = query/kv heads, hd = head_dim.
//
// Packed sequences: `doc_start[i]` (I32, [N]) is the flat index of the first token of the
// document that token i belongs to. Token i attends to j iff doc_start[j] == doc_start[i] and
// j <= i, i.e. j in [doc_start[i], i]. Row boundaries are document boundaries too.
//
// Unless said otherwise outputs are written (not accumulated) and must be preallocated with the
// right shape; "+=" marks accumulation into an existing gradient.
#pragma once
#include <cstdint>
#include <memory>

#include "core/tensor.h"

namespace ftune {

// Result of the chunked lm_head + cross-entropy.
struct CrossEntropyResult {
  double loss_sum = 0.0;  // sum of -log p(target) over counted tokens
  int64_t count = 0;      // tokens whose target != -100
};

class Ops {
 public:
  virtual ~Ops() = default;
  virtual Device device() const = 0;
  virtual const char* name() const = 0;
  // Waits until every op queued so far has finished (a no-op on the CPU, which runs each op to
  // completion before returning). For timing and profiling only.
  virtual void synchronize() {}

  // C[M,N] = alpha * op(A) * op(B) + beta * C, op(X) = X or X^T. All F32 2-D, row-major.
  virtual void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c,
                    float alpha, float beta) = 0;
  // y[N,M] += bias[M] (broadcast over rows).
  virtual void add_bias(Tensor& y, const Tensor& bias) = 0;
  // dbias[M] += sum over rows of dy[N,M].
  virtual void bias_backward(const Tensor& dy, Tensor& dbias) = 0;
  // y += alpha * x (same numel).
  virtual void axpy(float alpha, const Tensor& x, Tensor& y) = 0;
  // x *= alpha.
  virtual void scale(Tensor& x, float alpha) = 0;
  // dst = src converted (F32, BF16, F16 in and out; round to nearest even), same numel.
  virtual void cast(const Tensor& src, Tensor& dst) = 0;
  // sum of x^2 in double (for global gradient norms).
  virtual double sum_squares(const Tensor& x) = 0;

  // out[N,H] = table[ids[n], :]; ids I32 [N]. Ids out of range throw.
  virtual void embedding_forward(const Tensor& table, const Tensor& ids, Tensor& out) = 0;
  // dtable[ids[n], :] += dy[n, :].
  virtual void embedding_backward(const Tensor& dy, const Tensor& ids, Tensor& dtable) = 0;

  // HF LlamaRMSNorm: y = w * (x * rstd), rstd[n] = 1/sqrt(mean(x[n]^2) + eps). x,y [N,H]; w [H].
  virtual void rms_norm_forward(const Tensor& x, const Tensor& w, float eps, Tensor& y,
                                Tensor& rstd) = 0;
  // dx = d/dx (written); dw += d/dw when dw != nullptr.
  virtual void rms_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& w,
                                 const Tensor& rstd, Tensor& dx, Tensor* dw) = 0;

  // Half-split RoPE (HF rotate_half) applied in place to x [N, heads, hd] using per-token
  // positions (I32 [N]) and tables cos/sin [P, hd/2] (P > max position):
  //   x'[i] = x[i] cos - x[i+hd/2] sin;  x'[i+hd/2] = x[i+hd/2] cos + x[i] sin.
  virtual void rope_forward(Tensor& x, const Tensor& positions, const Tensor& cos,
                            const Tensor& sin) = 0;
  // In-place backward: dx = R(-theta) dy (the transpose of the rotation).
  virtual void rope_backward(Tensor& dx, const Tensor& positions, const Tensor& cos,
                             const Tensor& sin) = 0;

  // Causal grouped-query attention within documents (see doc_start above).
  // q [N,nh,hd], k/v [N,nkv,hd], nh % nkv == 0, query head h uses kv head h / (nh/nkv).
  // o [N,nh,hd]; lse [N,nh] = log-sum-exp of the scaled scores (saved for backward).
  virtual void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                 const Tensor& doc_start, float scale, Tensor& o,
                                 Tensor& lse) = 0;
  // dq, dk, dv written.
  virtual void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& o, const Tensor& lse, const Tensor& d_o,
                                  const Tensor& doc_start, float scale, Tensor& dq, Tensor& dk,
                                  Tensor& dv) = 0;

  // out = silu(gate) * up, all [N,F].
  virtual void swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& out) = 0;
  // dgate, dup written.
  virtual void swiglu_backward(const Tensor& dout, const Tensor& gate, const Tensor& up,
                               Tensor& dgate, Tensor& dup) = 0;

  // Inverted dropout: out = x * mask / (1-p), mask[i] ~ Bernoulli(1-p) from (seed, i) by a
  // counter-based hash, so any backend reproduces the same mask. mask (U8, same numel) saved.
  virtual void dropout_forward(const Tensor& x, float p, uint64_t seed, Tensor& out,
                               Tensor& mask) = 0;
  // dx = dy * mask / (1-p).
  virtual void dropout_backward(const Tensor& dy, const Tensor& mask, float p, Tensor& dx) = 0;

  // lm_head + cross-entropy, fused and computed in chunks of `chunk_tokens` rows so the full
  // [N, V] logits never exist. x [N,H], w [V,H], targets I32 [N] (-100 = ignored).
  // If dx != nullptr: dx[N,H] = grad_scale * d(loss_sum)/dx (written; ignored rows are 0).
  // If logits != nullptr ([N,V]): the logits are also written (tests, eval).
  virtual CrossEntropyResult lm_head_cross_entropy(const Tensor& x, const Tensor& w,
                                                   const Tensor& targets, float grad_scale,
                                                   Tensor* dx, Tensor* logits,
                                                   int64_t chunk_tokens) = 0;

  // ---- fused ops (one pass where the composite would take several) ----
  // sum = a + b (written), y = rms_norm(sum) * w, rstd as rms_norm_forward. All [N,H] but w, rstd.
  virtual void add_rms_norm_forward(const Tensor& a, const Tensor& b, const Tensor& w, float eps,
                                    Tensor& sum, Tensor& y, Tensor& rstd) = 0;
  // Splits a fused QKV projection qkv [N, (nh+2nkv)*hd] (columns: q heads, k heads, v heads) into
  // q [N,nh,hd], k [N,nkv,hd], v [N,nkv,hd] and applies RoPE (as rope_forward) to q and k.
  virtual void qkv_rope_split_forward(const Tensor& qkv, const Tensor& positions,
                                      const Tensor& cos, const Tensor& sin, Tensor& q, Tensor& k,
                                      Tensor& v) = 0;
  // Its backward: dqkv [N, (nh+2nkv)*hd] = [rope_backward(dq) | rope_backward(dk) | dv].
  virtual void qkv_rope_merge_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                       const Tensor& positions, const Tensor& cos,
                                       const Tensor& sin, Tensor& dqkv) = 0;
  // SwiGLU on a fused gate/up projection gu [N, 2F] (gate = columns [0,F), up = [F,2F)):
  // out [N,F] = silu(gate) * up; the backward writes dgu [N,2F] (d gate | d up).
  virtual void swiglu_fused_forward(const Tensor& gu, Tensor& out) = 0;
  virtual void swiglu_fused_backward(const Tensor& dout, const Tensor& gu, Tensor& dgu) = 0;

  // AdamW with decoupled weight decay and bias correction (torch.optim.AdamW semantics):
  //   m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr*wd*p;
  //   p -= lr * (m/(1-b1^t)) / (sqrt(v/(1-b2^t)) + eps). step t starts at 1. All F32.
  virtual void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, float lr,
                          float beta1, float beta2, float eps, float weight_decay,
                          int64_t step) = 0;
};

// The CPU reference backend (always built).
std::unique_ptr<Ops> make_cpu_ops();

// The counter-based dropout hash shared by all backends: keep(seed, i) for probability p.
bool dropout_keep(uint64_t seed, uint64_t index, float p);

}  // namespace ftune
