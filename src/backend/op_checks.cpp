// The argument checks of every backend op (declared in op_checks.h), written once for the CPU
// and CUDA backends. Messages name the op and the argument so a caller can tell which tensor was
// wrong; the tests assert them word for word on both backends.
#include "backend/op_checks.h"

#include <string_view>

#include <string>

#include "core/error.h"

namespace ftune {

void require_tensor(const char* op, const char* name, const Tensor& t, DType dt, Device dev) {
  FTUNE_CHECK(t.defined(), "{}: {} is undefined", op, name);
  if (dev.is_cpu()) {
    FTUNE_CHECK(t.device().is_cpu(), "{}: {} is on {}, the CPU backend needs host tensors", op,
                name, t.device().str());
  } else {
    FTUNE_CHECK(t.device() == dev,
                "{}: {} is on {}, the CUDA backend of {} needs tensors on that device", op, name,
                t.device().str(), dev.str());
  }
  FTUNE_CHECK(t.dtype() == dt, "{}: {} has dtype {}, expected {}", op, name,
              dtype_name(t.dtype()), dtype_name(dt));
  FTUNE_CHECK(t.is_contiguous() || std::string_view(op) == "gemm",
              "{}: {} is a strided view; only gemm accepts those", op, name);
}

void require_shape(const char* op, const char* name, const Tensor& t, DType dt,
                   const Shape& want, Device dev) {
  require_tensor(op, name, t, dt, dev);
  FTUNE_CHECK(t.shape() == want, "{}: {} is {}, expected {}", op, name, shape_str(t.shape()),
              shape_str(want));
}

void require_rank(const char* op, const char* name, const Tensor& t, DType dt, int rank,
                  Device dev) {
  require_tensor(op, name, t, dt, dev);
  FTUNE_CHECK(t.ndim() == rank, "{}: {} is {}, expected a {}-D tensor", op, name,
              shape_str(t.shape()), rank);
}

void check_indices(const char* op, const char* name, const int32_t* v, int64_t count,
                   int64_t limit, const char* what, const int32_t* allowed) {
  for (int64_t i = 0; i < count; ++i) {
    if (allowed != nullptr && v[i] == *allowed) continue;
    FTUNE_CHECK(v[i] >= 0 && v[i] < limit, "{}: {}[{}] = {} is outside {} [0, {}){}", op, name, i,
                v[i], what, limit,
                allowed != nullptr ? fmt::format(" and is not {}", *allowed) : std::string());
  }
}

void check_doc_start(const char* op, const int32_t* ds, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const int64_t s = ds[i];
    const bool starts_here = s == i;
    const bool continues = i > 0 && s == ds[i - 1] && s < i && s >= 0;
    FTUNE_CHECK(starts_here || continues,
                "{}: doc_start[{}] = {} is not a valid document start (must be {} or "
                "doc_start[{}], documents are contiguous)",
                op, i, s, i, i - 1);
  }
}

// ---- gemm, bias, vector helpers ----

GemmDims check_gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, const Tensor& c,
                    Device dev) {
  constexpr const char* op = "gemm";
  require_rank(op, "a", a, DType::F32, 2, dev);
  require_rank(op, "b", b, DType::F32, 2, dev);
  require_rank(op, "c", c, DType::F32, 2, dev);
  const int64_t m = trans_a ? a.dim(1) : a.dim(0);
  const int64_t k = trans_a ? a.dim(0) : a.dim(1);
  const int64_t kb = trans_b ? b.dim(1) : b.dim(0);
  const int64_t n = trans_b ? b.dim(0) : b.dim(1);
  FTUNE_CHECK(k == kb, "gemm: op(a) is [{}, {}] but op(b) is [{}, {}] (a {}{}, b {}{})", m, k, kb,
              n, shape_str(a.shape()), trans_a ? "^T" : "", shape_str(b.shape()),
              trans_b ? "^T" : "");
  FTUNE_CHECK(c.dim(0) == m && c.dim(1) == n, "gemm: c is {} but op(a)*op(b) is [{}, {}]",
              shape_str(c.shape()), m, n);
  return GemmDims{m, n, k};
}

namespace {
// A [rows, cols] matrix and a [cols] vector (bias or its gradient).
MatrixDims check_matrix_and_row_vector(const char* op, const char* mat_name, const Tensor& mat,
                                       const char* vec_name, const Tensor& vec, Device dev) {
  require_rank(op, mat_name, mat, DType::F32, 2, dev);
  require_rank(op, vec_name, vec, DType::F32, 1, dev);
  FTUNE_CHECK(vec.dim(0) == mat.dim(1), "{}: {} is {} but {} is {}", op, mat_name,
              shape_str(mat.shape()), vec_name, shape_str(vec.shape()));
  return MatrixDims{mat.dim(0), mat.dim(1)};
}
}  // namespace

MatrixDims check_add_bias(const Tensor& y, const Tensor& bias, Device dev) {
  return check_matrix_and_row_vector("add_bias", "y", y, "bias", bias, dev);
}

MatrixDims check_bias_backward(const Tensor& dy, const Tensor& dbias, Device dev) {
  return check_matrix_and_row_vector("bias_backward", "dy", dy, "dbias", dbias, dev);
}

void check_axpy(const Tensor& x, const Tensor& y, Device dev) {
  require_tensor("axpy", "x", x, DType::F32, dev);
  require_tensor("axpy", "y", y, DType::F32, dev);
  FTUNE_CHECK(x.numel() == y.numel(), "axpy: x is {} but y is {}", shape_str(x.shape()),
              shape_str(y.shape()));
}

// ---- embedding ----

namespace {
// table (or dtable) [vocab, h], ids I32 [n], rows (out or dy) [n, h].
EmbeddingDims check_embedding(const char* op, const char* table_name, const Tensor& table,
                              const Tensor& ids, const char* rows_name, const Tensor& rows,
                              Device dev) {
  require_rank(op, table_name, table, DType::F32, 2, dev);
  require_rank(op, "ids", ids, DType::I32, 1, dev);
  const EmbeddingDims d{ids.dim(0), table.dim(1), table.dim(0)};
  require_shape(op, rows_name, rows, DType::F32, {d.n, d.h}, dev);
  return d;
}
}  // namespace

EmbeddingDims check_embedding_forward(const Tensor& table, const Tensor& ids, const Tensor& out,
                                      Device dev) {
  return check_embedding("embedding_forward", "table", table, ids, "out", out, dev);
}

EmbeddingDims check_embedding_backward(const Tensor& dy, const Tensor& ids, const Tensor& dtable,
                                       Device dev) {
  return check_embedding("embedding_backward", "dtable", dtable, ids, "dy", dy, dev);
}

// ---- RMSNorm ----

namespace {
MatrixDims check_norm_input(const char* op, const Tensor& x, const Tensor& w, Device dev) {
  require_rank(op, "x", x, DType::F32, 2, dev);
  require_tensor(op, "w", w, DType::F32, dev);
  FTUNE_CHECK(w.ndim() == 1 && w.dim(0) == x.dim(1), "{}: x is {} but w is {}", op,
              shape_str(x.shape()), shape_str(w.shape()));
  return MatrixDims{x.dim(0), x.dim(1)};
}
}  // namespace

MatrixDims check_rms_norm_forward(const Tensor& x, const Tensor& w, float eps, const Tensor& y,
                                  const Tensor& rstd, Device dev) {
  constexpr const char* op = "rms_norm_forward";
  const MatrixDims d = check_norm_input(op, x, w, dev);
  require_shape(op, "y", y, DType::F32, {d.rows, d.cols}, dev);
  require_shape(op, "rstd", rstd, DType::F32, {d.rows}, dev);
  FTUNE_CHECK(eps >= 0.0f, "rms_norm_forward: eps = {} is negative", eps);
  return d;
}

MatrixDims check_rms_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& w,
                                   const Tensor& rstd, const Tensor& dx, const Tensor* dw,
                                   Device dev) {
  constexpr const char* op = "rms_norm_backward";
  const MatrixDims d = check_norm_input(op, x, w, dev);
  require_shape(op, "dy", dy, DType::F32, {d.rows, d.cols}, dev);
  require_shape(op, "rstd", rstd, DType::F32, {d.rows}, dev);
  require_shape(op, "dx", dx, DType::F32, {d.rows, d.cols}, dev);
  if (dw != nullptr) require_shape(op, "dw", *dw, DType::F32, {d.cols}, dev);
  return d;
}

// ---- RoPE ----

RopeDims check_rope(const char* op, const Tensor& x, const Tensor& positions, const Tensor& cos,
                    const Tensor& sin, Device dev) {
  require_rank(op, "x", x, DType::F32, 3, dev);
  const int64_t n = x.dim(0), heads = x.dim(1), hd = x.dim(2);
  FTUNE_CHECK(hd % 2 == 0, "{}: head_dim {} of x {} is odd", op, hd, shape_str(x.shape()));
  const int64_t half = hd / 2;
  require_shape(op, "positions", positions, DType::I32, {n}, dev);
  require_rank(op, "cos", cos, DType::F32, 2, dev);
  require_rank(op, "sin", sin, DType::F32, 2, dev);
  FTUNE_CHECK(cos.dim(1) == half && sin.shape() == cos.shape(),
              "{}: x is {} but cos is {} and sin is {} (expected [P, {}])", op,
              shape_str(x.shape()), shape_str(cos.shape()), shape_str(sin.shape()), half);
  return RopeDims{n, heads, half, cos.dim(0)};
}

// ---- attention ----

namespace {
AttentionDims check_qkv(const char* op, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& doc_start, Device dev) {
  require_rank(op, "q", q, DType::F32, 3, dev);
  require_rank(op, "k", k, DType::F32, 3, dev);
  require_rank(op, "v", v, DType::F32, 3, dev);
  AttentionDims d{q.dim(0), q.dim(1), k.dim(1), q.dim(2), 0};
  FTUNE_CHECK(k.shape() == v.shape(), "{}: k is {} but v is {}", op, shape_str(k.shape()),
              shape_str(v.shape()));
  FTUNE_CHECK(k.dim(0) == d.n && k.dim(2) == d.hd,
              "{}: q is {} but k is {} (tokens and head_dim must match)", op,
              shape_str(q.shape()), shape_str(k.shape()));
  FTUNE_CHECK(d.nkv > 0 && d.nh % d.nkv == 0,
              "{}: {} query heads are not a multiple of {} kv heads (q {}, k {})", op, d.nh,
              d.nkv, shape_str(q.shape()), shape_str(k.shape()));
  d.group = d.nh / d.nkv;
  require_shape(op, "doc_start", doc_start, DType::I32, {d.n}, dev);
  return d;
}
}  // namespace

AttentionDims check_attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                                      const Tensor& doc_start, const Tensor& o, const Tensor& lse,
                                      Device dev) {
  constexpr const char* op = "attention_forward";
  const AttentionDims d = check_qkv(op, q, k, v, doc_start, dev);
  require_shape(op, "o", o, DType::F32, q.shape(), dev);
  require_shape(op, "lse", lse, DType::F32, {d.n, d.nh}, dev);
  return d;
}

AttentionDims check_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                                       const Tensor& o, const Tensor& lse, const Tensor& d_o,
                                       const Tensor& doc_start, const Tensor& dq, const Tensor& dk,
                                       const Tensor& dv, Device dev) {
  constexpr const char* op = "attention_backward";
  const AttentionDims d = check_qkv(op, q, k, v, doc_start, dev);
  require_shape(op, "o", o, DType::F32, q.shape(), dev);
  require_shape(op, "d_o", d_o, DType::F32, q.shape(), dev);
  require_shape(op, "lse", lse, DType::F32, {d.n, d.nh}, dev);
  require_shape(op, "dq", dq, DType::F32, q.shape(), dev);
  require_shape(op, "dk", dk, DType::F32, k.shape(), dev);
  require_shape(op, "dv", dv, DType::F32, v.shape(), dev);
  return d;
}

// ---- SwiGLU ----

namespace {
// t is F32 on dev with gate's shape.
void require_like_gate(const char* op, const char* name, const Tensor& t, const Tensor& gate,
                       Device dev) {
  require_tensor(op, name, t, DType::F32, dev);
  FTUNE_CHECK(t.shape() == gate.shape(), "{}: gate is {} but {} is {}", op,
              shape_str(gate.shape()), name, shape_str(t.shape()));
}
}  // namespace

void check_swiglu_forward(const Tensor& gate, const Tensor& up, const Tensor& out, Device dev) {
  constexpr const char* op = "swiglu_forward";
  require_tensor(op, "gate", gate, DType::F32, dev);
  require_like_gate(op, "up", up, gate, dev);
  require_like_gate(op, "out", out, gate, dev);
}

void check_swiglu_backward(const Tensor& dout, const Tensor& gate, const Tensor& up,
                           const Tensor& dgate, const Tensor& dup, Device dev) {
  constexpr const char* op = "swiglu_backward";
  require_tensor(op, "gate", gate, DType::F32, dev);
  require_like_gate(op, "dout", dout, gate, dev);
  require_like_gate(op, "up", up, gate, dev);
  require_like_gate(op, "dgate", dgate, gate, dev);
  require_like_gate(op, "dup", dup, gate, dev);
}

// ---- dropout ----

namespace {
// p in [0, 1); in (F32), out (F32, in's shape) and a U8 mask with in's element count.
void check_dropout(const char* op, float p, const char* in_name, const Tensor& in,
                   const char* out_name, const Tensor& out, const Tensor& mask, Device dev) {
  FTUNE_CHECK(p >= 0.0f && p < 1.0f, "{}: p = {} must be in [0, 1)", op, p);
  require_tensor(op, in_name, in, DType::F32, dev);
  require_shape(op, out_name, out, DType::F32, in.shape(), dev);
  require_tensor(op, "mask", mask, DType::U8, dev);
  FTUNE_CHECK(mask.numel() == in.numel(), "{}: {} is {} but mask is {}", op, in_name,
              shape_str(in.shape()), shape_str(mask.shape()));
}
}  // namespace

void check_dropout_forward(const Tensor& x, float p, const Tensor& out, const Tensor& mask,
                           Device dev) {
  check_dropout("dropout_forward", p, "x", x, "out", out, mask, dev);
}

void check_dropout_backward(const Tensor& dy, const Tensor& mask, float p, const Tensor& dx,
                            Device dev) {
  check_dropout("dropout_backward", p, "dy", dy, "dx", dx, mask, dev);
}

// ---- lm_head + cross-entropy ----

CrossEntropyDims check_lm_head_cross_entropy(const Tensor& x, const Tensor& w,
                                             const Tensor& targets, const Tensor* dx,
                                             const Tensor* logits, int64_t chunk_tokens,
                                             Device dev) {
  constexpr const char* op = "lm_head_cross_entropy";
  require_rank(op, "x", x, DType::F32, 2, dev);
  require_rank(op, "w", w, DType::F32, 2, dev);
  const CrossEntropyDims d{x.dim(0), x.dim(1), w.dim(0)};
  FTUNE_CHECK(w.dim(1) == d.h, "{}: x is {} but w is {} (hidden sizes differ)", op,
              shape_str(x.shape()), shape_str(w.shape()));
  FTUNE_CHECK(d.vocab > 0 && d.h > 0, "{}: w is {} (empty vocabulary or hidden size)", op,
              shape_str(w.shape()));
  require_shape(op, "targets", targets, DType::I32, {d.n}, dev);
  if (dx != nullptr) require_shape(op, "dx", *dx, DType::F32, {d.n, d.h}, dev);
  if (logits != nullptr) require_shape(op, "logits", *logits, DType::F32, {d.n, d.vocab}, dev);
  FTUNE_CHECK(chunk_tokens > 0, "{}: chunk_tokens = {} must be positive", op, chunk_tokens);
  return d;
}

// ---- AdamW ----

void check_adamw_step(const Tensor& param, const Tensor& grad, const Tensor& m, const Tensor& v,
                      float lr, float beta1, float beta2, float eps, float weight_decay,
                      int64_t step, Device dev) {
  constexpr const char* op = "adamw_step";
  require_tensor(op, "param", param, DType::F32, dev);
  require_shape(op, "grad", grad, DType::F32, param.shape(), dev);
  require_shape(op, "m", m, DType::F32, param.shape(), dev);
  require_shape(op, "v", v, DType::F32, param.shape(), dev);
  FTUNE_CHECK(step >= 1, "{}: step = {} (steps count from 1)", op, step);
  FTUNE_CHECK(beta1 >= 0.0f && beta1 < 1.0f && beta2 >= 0.0f && beta2 < 1.0f,
              "{}: betas ({}, {}) must be in [0, 1)", op, beta1, beta2);
  FTUNE_CHECK(lr >= 0.0f && eps >= 0.0f && weight_decay >= 0.0f,
              "{}: lr = {}, eps = {}, weight_decay = {} must be non-negative", op, lr, eps,
              weight_decay);
}

}  // namespace ftune
