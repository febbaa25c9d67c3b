// Argument validation for every op of backend/ops.h, shared by the CPU reference
// (src/backend/cpu) and the CUDA backend (src/backend/cuda), so both reject the same calls with
// the same message. Each check_<op> validates dtypes, shapes, devices (every tensor must live on
// `dev`: Device::cpu() for the CPU backend, the CUDA backend's device for CUDA) and
// hyper-parameter ranges, throws ftune::Error naming the op and the argument
// (e.g. "rms_norm_forward: x is [4, 8] but w is [6]"), and returns the sizes the kernels need.
// Plain C++17 (the CUDA files include it); it reads no tensor data. Checks of index values
// (ids, positions, targets, doc_start) run over host pointers: the CPU passes its tensors' data,
// CUDA a host copy. Backend-specific limits (BLAS/cuBLAS int ranges, grid limits, head_dim for
// the CUDA attention kernel) stay in the backends.
#pragma once
#include <cstdint>

#include "core/nf4.h"
#include "core/tensor.h"

namespace ftune {

// ---- generic tensor checks ----
// The activation dtypes a backend computes on (backend/ops.h, "Dtypes"): F32 on the CPU;
// F32, BF16 or F16 on CUDA.
bool is_float_dtype(DType dt);
// t is defined, lives on dev and has an activation dtype that dev's backend takes; returns it.
// Else throws "op: name has dtype BF16, the CPU backend computes in F32 only" or
// "op: name has dtype I32, expected F32, BF16 or F16".
DType require_act(const char* op, const char* name, const Tensor& t, Device dev);
// require_act + the given rank.
DType require_act_rank(const char* op, const char* name, const Tensor& t, int rank, Device dev);
// t is defined, lives on dev and has dtype dt.
void require_tensor(const char* op, const char* name, const Tensor& t, DType dt, Device dev);
// require_tensor + exactly the given shape.
void require_shape(const char* op, const char* name, const Tensor& t, DType dt,
                   const Shape& want, Device dev);
// require_tensor + the given rank.
void require_rank(const char* op, const char* name, const Tensor& t, DType dt, int rank,
                  Device dev);

// ---- index values (host pointers) ----
// Every v[i] (i < count) is in [0, limit), or equals *allowed when given; else throws
// "op: name[i] = v is outside <what> [0, limit)" (+ " and is not <allowed>").
void check_indices(const char* op, const char* name, const int32_t* v, int64_t count,
                   int64_t limit, const char* what, const int32_t* allowed = nullptr);
// doc_start[0..n) describes contiguous documents: doc_start[i] == i (a new document) or
// doc_start[i] == doc_start[i-1] (see backend/ops.h, "Packed sequences").
void check_doc_start(const char* op, const int32_t* doc_start, int64_t n);

// ---- gemm, bias, vector helpers ----
struct GemmDims {
  int64_t m, n, k;  // C[m, n] = op(A)[m, k] op(B)[k, n]
  DType ab = DType::F32, c = DType::F32;
};
GemmDims check_gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& c,
                    Device dev);
// Both return {rows, cols} of y / dy.
struct MatrixDims {
  int64_t rows, cols;
  DType act = DType::F32;
};
MatrixDims check_add_bias(const Tensor& y, const Tensor& bias, Device dev);
MatrixDims check_bias_backward(const Tensor& dy, const Tensor& dbias, Device dev);
void check_axpy(const Tensor& x, const Tensor& y, Device dev);
// scale: x any activation dtype. sum_squares: x F32.
DType check_scale(const Tensor& x, Device dev);
void check_sum_squares(const Tensor& x, Device dev);
// cast: src and dst F32, BF16 or F16 (on every backend), same element count.
void check_cast(const Tensor& src, const Tensor& dst, Device dev);
// dequantize_nf4: w valid (core/nf4.h) with every tensor on dev; out on dev, contiguous, an
// activation dtype, numel == w.numel().
void check_dequantize_nf4(const Nf4Weight& w, const Tensor& out, Device dev);
// quantize_fp8: x an activation dtype, contiguous; q F8_E4M3/F8_E5M2 contiguous with x's numel;
// scale F32 with one element. Returns the element count.
int64_t check_quantize_fp8(const Tensor& x, const Tensor& q, const Tensor& scale, Device dev);
// gemm_fp8: a [M,K], b [N,K] 8-bit floats, not both E5M2, rows contiguous; scales F32 [1];
// c [M,N] F32 or an activation dtype. Returns {M, N, K, a's dtype, c's dtype}.
GemmDims check_gemm_fp8(const Tensor& a, const Tensor& a_scale, const Tensor& b,
                        const Tensor& b_scale, const Tensor& c, Device dev);
// transpose: src [R, C], dst [C, R], one dtype of 1, 2 or 4 bytes, both contiguous.
void check_transpose(const Tensor& src, const Tensor& dst, Device dev);

// ---- embedding (ids values: check_indices(op, "ids", ..., vocab, "the table")) ----
struct EmbeddingDims {
  int64_t n, h, vocab;  // tokens, hidden size, table rows
  DType act = DType::F32;
};
EmbeddingDims check_embedding_forward(const Tensor& table, const Tensor& ids, const Tensor& out,
                                      Device dev);
EmbeddingDims check_embedding_backward(const Tensor& dy, const Tensor& ids, const Tensor& dtable,
                                       Device dev);

// ---- RMSNorm: {rows, hidden} ----
MatrixDims check_rms_norm_forward(const Tensor& x, const Tensor& w, float eps, const Tensor& y,
                                  const Tensor& rstd, Device dev);
MatrixDims check_rms_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& w,
                                   const Tensor& rstd, const Tensor& dx, const Tensor* dw,
                                   Device dev);
MatrixDims check_add_rms_norm_forward(const Tensor& a, const Tensor& b, const Tensor& w, float eps,
                                      const Tensor& sum, const Tensor& y, const Tensor& rstd,
                                      Device dev);

// ---- RoPE (op is "rope_forward" or "rope_backward"; positions values:
// check_indices(op, "positions", ..., table_len, "the rope table")) ----
struct RopeDims {
  int64_t n, heads, half, table_len;  // half = head_dim / 2; table_len = rows of cos/sin
  DType act = DType::F32;
};
RopeDims check_rope(const char* op, const Tensor& x, const Tensor& positions, const Tensor& cos,
                    const Tensor& sin, Device dev);

// ---- fused QKV split + RoPE (positions values as for RoPE) ----
struct QkvDims {
  int64_t n, nh, nkv, hd, table_len;
  DType act = DType::F32;
};
// op "qkv_rope_split_forward": fused = qkv, heads = q, k, v (written).
// op "qkv_rope_merge_backward": fused = dqkv (written), heads = dq, dk, dv.
QkvDims check_qkv_rope(const char* op, const char* fused_name, const Tensor& fused,
                       const Tensor& positions, const Tensor& cos, const Tensor& sin,
                       const char* q_name, const Tensor& q, const char* k_name, const Tensor& k,
                       const char* v_name, const Tensor& v, Device dev);

// ---- attention (doc_start shape checked here, its values by check_doc_start) ----
struct AttentionDims {
  int64_t n, nh, nkv, hd, group;  // group = nh / nkv query heads per kv head
  DType act = DType::F32;
};
AttentionDims check_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                      const Tensor& doc_start, const Tensor& o, const Tensor& lse,
                                      Device dev);
AttentionDims check_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                                       const Tensor& o, const Tensor& lse, const Tensor& d_o,
                                       const Tensor& doc_start, const Tensor& dq, const Tensor& dk,
                                       const Tensor& dv, Device dev);
// attention_kv_cache: q [T,nh,hd], caches [C,nkv,hd] with C >= past + T, o like q.
AttentionDims check_attention_kv_cache(const Tensor& q, const Tensor& k_cache,
                                       const Tensor& v_cache, int64_t past, const Tensor& o,
                                       Device dev);

// ---- SwiGLU, dropout ----
void check_swiglu_forward(const Tensor& gate, const Tensor& up, const Tensor& out, Device dev);
void check_swiglu_backward(const Tensor& dout, const Tensor& gate, const Tensor& up,
                           const Tensor& dgate, const Tensor& dup, Device dev);
// Fused gate/up buffer gu [N, 2F]: returns {N, F}.
MatrixDims check_swiglu_fused_forward(const Tensor& gu, const Tensor& out, Device dev);
MatrixDims check_swiglu_fused_backward(const Tensor& dout, const Tensor& gu, const Tensor& dgu,
                                       Device dev);
void check_dropout_forward(const Tensor& x, float p, const Tensor& out, const Tensor& mask,
                           Device dev);
void check_dropout_apply(const Tensor& x, float p, int64_t index_offset, const Tensor& out,
                         Device dev);
void check_dropout_backward(const Tensor& dy, const Tensor& mask, float p, const Tensor& dx,
                            Device dev);

// ---- lm_head + cross-entropy (targets values: check_indices(op, "targets", ..., vocab,
// "the vocabulary", &ignore_index)) ----
struct CrossEntropyDims {
  int64_t n, h, vocab;
  DType act = DType::F32;
};
CrossEntropyDims check_lm_head_cross_entropy(const Tensor& x, const Tensor& w,
                                             const Tensor& targets, const Tensor& loss_sum,
                                             const Tensor* dx, const Tensor* logits,
                                             int64_t chunk_tokens, Device dev);

// ---- AdamW ----
void check_adamw_step(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                      float lr, float beta1, float beta2, float eps, float weight_decay,
                      int64_t step, Device dev);

}  // namespace ftune
