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
//
// Dtypes. Activations ("act" below) are F32 on the CPU backend (always: CPU ops take F32 only
// and reject any other dtype with an error naming the op and the argument) and F32, BF16 or F16
// on the CUDA backend. In one call every activation tensor has the same dtype, the one of the
// first activation argument. Math is always fp32: products and reductions accumulate in fp32
// (row sums of squares and loss sums in double), and each output element is rounded once, when
// it is stored. Tensors said to be F32 (statistics such as rstd and lse, RoPE tables, gradients
// of small parameters, logits) are F32 whatever act is; index tensors are I32, masks U8.
//   gemm            a, b: the same float dtype; c: F32 or a's dtype.
//   add_bias        y, bias act.            bias_backward   dy act, dbias F32.
//   axpy, scale     x and y: the same float dtype.          sum_squares     x F32.
//   cast            any of F32/BF16/F16 to any (both backends), round to nearest even.
//   dequantize_nf4  out act (the NF4 weight's own tensors: U8 codes, F32 tables).
//   quantize_fp8    x act; q F8_E4M3/F8_E5M2; scale F32.   gemm_fp8  a, b F8; c F32 or act.
//   transpose       any dtype of 1, 2 or 4 bytes.
//   embedding       forward: table, out act; backward: F32 only.
//   rms_norm        x, w, y, dy, dx act; rstd, dw F32.     add_rms_norm    a, b, w, sum, y act.
//   rope, qkv_rope  x / q, k, v, qkv act; cos, sin F32.
//   attention       q, k, v, o, d_o, dq, dk, dv act; lse F32.
//   attention_kv_cache  q, k_cache, v_cache, o act.
//   swiglu          all act.                dropout         x, out, dy, dx act; mask U8.
//   lm_head + CE    x, w, dx act; logits F32; loss_sum F64.
//   adamw_step      F32.
#pragma once
#include <cstdint>
#include <memory>

#include "backend/activation_stash.h"
#include "core/nf4.h"
#include "core/tensor.h"

namespace ftune {

class Ops {
 public:
  virtual ~Ops() = default;
  virtual Device device() const = 0;
  virtual const char* name() const = 0;
  // Waits until every op queued so far has finished (a no-op on the CPU, which runs each op to
  // completion before returning). For timing and profiling only.
  virtual void synchronize() {}
  // Backends that must copy index tensors (ids, positions, doc_start, targets) to the host to
  // check their values (CUDA: a synchronisation each) skip that when told the caller has
  // validated them already. The CPU checks in place at no cost and ignores this.
  virtual void set_check_index_values(bool on) { (void)on; }
  // Tells the backend, once per batch, the host copy of a doc_start tensor it will be given
  // (validated by the caller). Backends whose attention needs the documents on the host (CUDA's
  // cuDNN path: counts and lengths) keep them for the attention calls with this tensor; an
  // undescribed doc_start still works (CUDA then takes its own flash kernels). CPU: a no-op.
  virtual void describe_documents(const Tensor& doc_start, const std::vector<int32_t>& host) {
    (void)doc_start;
    (void)host;
  }
  // Where checkpointing mode `offload` parks saved activations (activation_stash.h).
  virtual std::unique_ptr<ActivationStash> make_activation_stash() { return make_host_copy_stash(); }

  // C[M,N] = alpha * op(A) * op(B) + beta * C, op(X) = X or X^T. 2-D, row-major; a and b one
  // float dtype, c F32 or a's dtype; fp32 accumulation. beta == 0: c is not read (NaN is fine).
  virtual void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c,
                    float alpha, float beta) = 0;
  // y[N,M] += bias[M] (broadcast over rows).
  virtual void add_bias(Tensor& y, const Tensor& bias) = 0;
  // dbias[M] += sum over rows of dy[N,M].
  virtual void bias_backward(const Tensor& dy, Tensor& dbias) = 0;
  // y += alpha * x (same numel, same dtype).
  virtual void axpy(float alpha, const Tensor& x, Tensor& y) = 0;
  // x *= alpha.
  virtual void scale(Tensor& x, float alpha) = 0;
  // sum of x^2 in double (for global gradient norms). x F32.
  virtual double sum_squares(const Tensor& x) = 0;
  // dst = src converted to dst's dtype (F32, BF16, F16 in any combination, same numel; shapes
  // may differ), rounding to nearest even as core/dtype.h does. Both backends take all three.
  virtual void cast(const Tensor& src, Tensor& dst) = 0;
  // out (numel == w.numel(), contiguous; viewed as w.shape row-major) = the NF4 weight w
  // dequantized exactly as bitsandbytes dequantize_4bit does (core/nf4.h): per element
  // fp32(code * block amax), double-quantized amax as fp32(fp32(code8 * nested_absmax) + offset),
  // rounded once into out's dtype. The frozen-weight GEMM path: dequantize, then gemm.
  virtual void dequantize_nf4(const Nf4Weight& w, Tensor& out) = 0;

  // FP8 (model.fp8_base), per-tensor scaled: a tensor is held as 8-bit float codes q and one
  // scale s (F32 [1] on the backend's device), value ~= q * s (core/fp8.h). Nothing is copied
  // to the host: the scale stays on the device from quantize_fp8 to gemm_fp8.
  // quantize_fp8: s = amax(|x|) / max_finite (1 when x is all zeros) and every code
  // q = fp8(x * (max_finite / amax)), rounded to nearest even, saturating (core/fp8.h, bit for
  // bit on every backend). x act, contiguous; q F8_E4M3 or F8_E5M2, contiguous, x's numel.
  virtual void quantize_fp8(const Tensor& x, Tensor& q, Tensor& scale) = 0;
  // c[M,N] = alpha * sa * sb * (sum over k of a[m,k] * b[n,k]) + beta * c: a [M,K] and b [N,K]
  // 8-bit floats (E4M3 or E5M2, not both E5M2), rows contiguous (both K-major: b is a weight
  // [out, in] or a transposed one); sa, sb F32 [1]; c [M,N] F32 or an activation dtype (may be
  // row-strided). Products of codes are exact; the CPU sums them in fp32, Hopper's FP8 tensor
  // cores with less alignment precision inside a block (about 1e-3 relative). beta == 0: c is
  // not read.
  virtual void gemm_fp8(const Tensor& a, const Tensor& a_scale, const Tensor& b,
                        const Tensor& b_scale, Tensor& c, float alpha, float beta) = 0;
  // dst [C, R] = src [R, C] transposed (2-D, both contiguous, one dtype of 1, 2 or 4 bytes).
  virtual void transpose(const Tensor& src, Tensor& dst) = 0;

  // out[N,H] = table[ids[n], :]; ids I32 [N]. Ids out of range throw.
  virtual void embedding_forward(const Tensor& table, const Tensor& ids, Tensor& out) = 0;
  // dtable[ids[n], :] += dy[n, :]. F32 only.
  virtual void embedding_backward(const Tensor& dy, const Tensor& ids, Tensor& dtable) = 0;

  // HF LlamaRMSNorm: y = w * (x * rstd), rstd[n] = 1/sqrt(mean(x[n]^2) + eps). x,y [N,H]; w [H].
  virtual void rms_norm_forward(const Tensor& x, const Tensor& w, float eps, Tensor& y,
                                Tensor& rstd) = 0;
  // dx = d/dx (written; with accumulate, dx += d/dx, so a residual gradient needs no temporary);
  // dw += d/dw when dw != nullptr (F32). dx may alias dy only without accumulate.
  virtual void rms_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& w,
                                 const Tensor& rstd, Tensor& dx, Tensor* dw,
                                 bool accumulate = false) = 0;
  // The residual add and the next norm in one pass: sum = a + b (written, rounded to act),
  // then y = rmsnorm(sum) * w and rstd as rms_norm_forward computes them from the stored sum.
  // a, b, sum, y [N,H], w [H] act; rstd F32 [N]. sum may alias a or b.
  virtual void add_rms_norm_forward(const Tensor& a, const Tensor& b, const Tensor& w, float eps,
                                    Tensor& sum, Tensor& y, Tensor& rstd) = 0;

  // Half-split RoPE (HF rotate_half) applied in place to x [N, heads, hd] using per-token
  // positions (I32 [N]) and tables cos/sin [P, hd/2] (P > max position):
  //   x'[i] = x[i] cos - x[i+hd/2] sin;  x'[i+hd/2] = x[i+hd/2] cos + x[i] sin.
  virtual void rope_forward(Tensor& x, const Tensor& positions, const Tensor& cos,
                            const Tensor& sin) = 0;
  // In-place backward: dx = R(-theta) dy (the transpose of the rotation).
  virtual void rope_backward(Tensor& dx, const Tensor& positions, const Tensor& cos,
                             const Tensor& sin) = 0;

  // The output of a fused QKV projection split into heads, with RoPE on q and k:
  // qkv [N, (nh + 2 nkv) hd] holds per token q (nh heads), then k (nkv heads), then v (nkv
  // heads), each head hd wide; q [N,nh,hd] = rope(q part), k [N,nkv,hd] = rope(k part),
  // v [N,nkv,hd] = v part (rope as rope_forward, same positions/cos/sin contract, except that
  // CUDA does not copy positions to the host to check them: an out-of-table position gives NaN
  // in that token's q and k instead of an error; the CPU throws).
  virtual void qkv_rope_split_forward(const Tensor& qkv, const Tensor& positions,
                                      const Tensor& cos, const Tensor& sin, Tensor& q, Tensor& k,
                                      Tensor& v) = 0;
  // Its backward: dqkv (written) = [R(-theta) dq | R(-theta) dk | dv] per token.
  virtual void qkv_rope_merge_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                       const Tensor& positions, const Tensor& cos,
                                       const Tensor& sin, Tensor& dqkv) = 0;

  // Causal grouped-query attention within documents (see doc_start above).
  // q [N,nh,hd], k/v [N,nkv,hd], nh % nkv == 0, query head h uses kv head h / (nh/nkv).
  // o [N,nh,hd]; lse [N,nh] = log-sum-exp of the scaled scores (saved for backward).
  // CUDA runs BF16/F16 with head_dim 16/32/64/96/128 through FlashAttention-2 kernels, which
  // trust doc_start (validated when the batch is built: no host copy inside a step); other calls
  // take a simple fallback that checks doc_start on a host copy, as the CPU does.
  virtual void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                 const Tensor& doc_start, float scale, Tensor& o,
                                 Tensor& lse) = 0;
  // Inference: attention of T new queries of ONE sequence against its KV cache. q [T,nh,hd] are
  // the queries at positions past .. past+T-1; k_cache/v_cache [C,nkv,hd] hold the keys and
  // values of positions 0 .. past+T-1 in their first past+T rows (C >= past+T; later rows are
  // not read). Query t attends to rows [0, past+t] (causal), query head h to kv head
  // h / (nh/nkv), as attention_forward does over the whole sequence. o [T,nh,hd] written.
  virtual void attention_kv_cache(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                                  int64_t past, float scale, Tensor& o) = 0;
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
  // The same on a fused gate/up projection output gu [N, 2F] (gate = columns [0, F), up =
  // columns [F, 2F)): out [N,F] = silu(gate) * up.
  virtual void swiglu_fused_forward(const Tensor& gu, Tensor& out) = 0;
  // dgu [N, 2F] (written) = [dgate | dup]. dgu may alias gu (each element is read first).
  virtual void swiglu_fused_backward(const Tensor& dout, const Tensor& gu, Tensor& dgu) = 0;

  // Inverted dropout: out = x * mask / (1-p), mask[i] ~ Bernoulli(1-p) from (seed, i) by a
  // counter-based hash, so any backend reproduces the same mask. mask (U8, same numel) saved.
  virtual void dropout_forward(const Tensor& x, float p, uint64_t seed, Tensor& out,
                               Tensor& mask) = 0;
  // dx = dy * mask / (1-p).
  virtual void dropout_backward(const Tensor& dy, const Tensor& mask, float p, Tensor& dx) = 0;
  // The same mask without storing it: out[i] = keep(seed, index_offset + i) ? x[i] / (1-p) : 0,
  // i.e. dropout_forward's `out` for the rows of a larger tensor starting at flat index
  // index_offset. It is its own backward (dx = dropout_apply(dy) with the same seed and offset),
  // so the LoRA path regenerates masks instead of keeping them. out may be x.
  virtual void dropout_apply(const Tensor& x, float p, uint64_t seed, int64_t index_offset,
                             Tensor& out) = 0;

  // lm_head + cross-entropy, fused and computed in chunks of `chunk_tokens` rows so the full
  // [N, V] logits never exist. x [N,H], w [V,H] act, targets I32 [N] (-100 = ignored).
  // loss_sum (F64 [1] on the op's device) += sum over counted tokens of -log p(target), without
  // any host synchronisation (callers count the tokens from the targets they uploaded).
  // If dx != nullptr: dx[N,H] (act) = grad_scale * d(loss)/dx (written; ignored rows are 0).
  // If logits != nullptr (F32 [N,V]): the logits are also written (tests, eval).
  // Targets outside [0, V) other than -100: the CPU throws; CUDA does not read targets on the
  // host, and adds NaN to loss_sum instead (and a zero gradient for that row).
  virtual void lm_head_cross_entropy(const Tensor& x, const Tensor& w, const Tensor& targets,
                                     float grad_scale, Tensor& loss_sum, Tensor* dx,
                                     Tensor* logits, int64_t chunk_tokens) = 0;

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
