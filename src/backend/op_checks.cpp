// The argument checks of every backend op (declared in op_checks.h), written once for the CPU
// and CUDA backends. Messages name the op and the argument so a caller can tell which tensor was
// wrong; the tests assert them word for word on both backends.
#include "backend/op_checks.h"

#include <string_view>

#include <string>

#include "core/error.h"
#include "core/fp8.h"

namespace ftune {

namespace {
void require_on(const char* op, const char* name, const Tensor& t, Device dev);
}  // namespace

void require_tensor(const char* op, const char* name, const Tensor& t, DType dt, Device dev) {
  require_on(op, name, t, dev);
  FTUNE_CHECK(t.dtype() == dt, "{}: {} has dtype {}, expected {}", op, name,
              dtype_name(t.dtype()), dtype_name(dt));
}

bool is_float_dtype(DType dt) {
  return dt == DType::F32 || dt == DType::BF16 || dt == DType::F16;
}

namespace {
// t defined and on dev (the device part of require_tensor).
void require_on(const char* op, const char* name, const Tensor& t, Device dev) {
  FTUNE_CHECK(t.defined(), "{}: {} is undefined", op, name);
  if (dev.is_cpu()) {
    FTUNE_CHECK(t.device().is_cpu(), "{}: {} is on {}, the CPU backend needs host tensors", op,
                name, t.device().str());
  } else {
    FTUNE_CHECK(t.device() == dev,
                "{}: {} is on {}, the CUDA backend of {} needs tensors on that device", op, name,
                t.device().str(), dev.str());
  }
  FTUNE_CHECK(t.is_contiguous() || std::string_view(op) == "gemm" ||
                  (std::string_view(op) == "gemm_fp8" && std::string_view(name) == "c"),
              "{}: {} is a strided view; only gemm (and gemm_fp8's c) accepts those", op, name);
}
}  // namespace

DType require_act(const char* op, const char* name, const Tensor& t, Device dev) {
  require_on(op, name, t, dev);
  const DType dt = t.dtype();
  if (dev.is_cpu()) {
    FTUNE_CHECK(dt == DType::F32, "{}: {} has dtype {}, the CPU backend computes in F32 only", op,
                name, dtype_name(dt));
  } else {
    FTUNE_CHECK(is_float_dtype(dt), "{}: {} has dtype {}, expected F32, BF16 or F16", op, name,
                dtype_name(dt));
  }
  return dt;
}

DType require_act_rank(const char* op, const char* name, const Tensor& t, int rank, Device dev) {
  const DType dt = require_act(op, name, t, dev);
  FTUNE_CHECK(t.ndim() == rank, "{}: {} is {}, expected a {}-D tensor", op, name,
              shape_str(t.shape()), rank);
  return dt;
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
  const DType ab = require_act_rank(op, "a", a, 2, dev);
  require_rank(op, "b", b, ab, 2, dev);
  const DType ct = require_act_rank(op, "c", c, 2, dev);
  FTUNE_CHECK(ct == DType::F32 || ct == ab, "gemm: c has dtype {}, expected F32 or {} (a's dtype)",
              dtype_name(ct), dtype_name(ab));
  const int64_t m = trans_a ? a.dim(1) : a.dim(0);
  const int64_t k = trans_a ? a.dim(0) : a.dim(1);
  const int64_t kb = trans_b ? b.dim(1) : b.dim(0);
  const int64_t n = trans_b ? b.dim(0) : b.dim(1);
  FTUNE_CHECK(k == kb, "gemm: op(a) is [{}, {}] but op(b) is [{}, {}] (a {}{}, b {}{})", m, k, kb,
              n, shape_str(a.shape()), trans_a ? "^T" : "", shape_str(b.shape()),
              trans_b ? "^T" : "");
  FTUNE_CHECK(c.dim(0) == m && c.dim(1) == n, "gemm: c is {} but op(a)*op(b) is [{}, {}]",
              shape_str(c.shape()), m, n);
  return GemmDims{m, n, k, ab, ct};
}

namespace {
// A [rows, cols] activation matrix and a [cols] vector (bias: the matrix's dtype; its
// gradient: F32).
MatrixDims check_matrix_and_row_vector(const char* op, const char* mat_name, const Tensor& mat,
                                       const char* vec_name, const Tensor& vec, bool vec_f32,
                                       Device dev) {
  const DType act = require_act_rank(op, mat_name, mat, 2, dev);
  require_rank(op, vec_name, vec, vec_f32 ? DType::F32 : act, 1, dev);
  FTUNE_CHECK(vec.dim(0) == mat.dim(1), "{}: {} is {} but {} is {}", op, mat_name,
              shape_str(mat.shape()), vec_name, shape_str(vec.shape()));
  return MatrixDims{mat.dim(0), mat.dim(1), act};
}
}  // namespace

MatrixDims check_add_bias(const Tensor& y, const Tensor& bias, Device dev) {
  return check_matrix_and_row_vector("add_bias", "y", y, "bias", bias, false, dev);
}

MatrixDims check_bias_backward(const Tensor& dy, const Tensor& dbias, Device dev) {
  return check_matrix_and_row_vector("bias_backward", "dy", dy, "dbias", dbias, true, dev);
}

void check_axpy(const Tensor& x, const Tensor& y, Device dev) {
  const DType act = require_act("axpy", "x", x, dev);
  require_tensor("axpy", "y", y, act, dev);
  FTUNE_CHECK(x.numel() == y.numel(), "axpy: x is {} but y is {}", shape_str(x.shape()),
              shape_str(y.shape()));
}

DType check_scale(const Tensor& x, Device dev) { return require_act("scale", "x", x, dev); }

void check_sum_squares(const Tensor& x, Device dev) {
  require_tensor("sum_squares", "x", x, DType::F32, dev);
}

void check_cast(const Tensor& src, const Tensor& dst, Device dev) {
  constexpr const char* op = "cast";
  require_on(op, "src", src, dev);
  require_on(op, "dst", dst, dev);
  FTUNE_CHECK(is_float_dtype(src.dtype()) && is_float_dtype(dst.dtype()),
              "cast: {} to {} is not supported (F32, BF16 and F16 only)", dtype_name(src.dtype()),
              dtype_name(dst.dtype()));
  FTUNE_CHECK(src.numel() == dst.numel(), "cast: src is {} but dst is {}",
              shape_str(src.shape()), shape_str(dst.shape()));
}

void check_dequantize_nf4(const Nf4Weight& w, const Tensor& out, Device dev) {
  constexpr const char* op = "dequantize_nf4";
  w.validate(op);
  for (const Tensor* t : {&w.packed, &w.code, &w.absmax, &w.nested_absmax, &w.nested_code})
    if (t->defined()) require_on(op, "w", *t, dev);
  require_act(op, "out", out, dev);
  FTUNE_CHECK(out.is_contiguous(), "dequantize_nf4: out must be contiguous");
  FTUNE_CHECK(out.numel() == w.numel(), "dequantize_nf4: out is {} but the weight is {}",
              shape_str(out.shape()), shape_str(w.shape));
}

int64_t check_quantize_fp8(const Tensor& x, const Tensor& q, const Tensor& scale, Device dev) {
  constexpr const char* op = "quantize_fp8";
  require_act(op, "x", x, dev);
  require_on(op, "q", q, dev);
  FTUNE_CHECK(is_fp8(q.dtype()), "quantize_fp8: q has dtype {}, expected F8_E4M3 or F8_E5M2",
              dtype_name(q.dtype()));
  FTUNE_CHECK(x.is_contiguous() && q.is_contiguous(), "quantize_fp8: x and q must be contiguous");
  FTUNE_CHECK(q.numel() == x.numel(), "quantize_fp8: q is {} but x is {}", shape_str(q.shape()),
              shape_str(x.shape()));
  require_tensor(op, "scale", scale, DType::F32, dev);
  FTUNE_CHECK(scale.numel() == 1, "quantize_fp8: scale is {}, expected one element",
              shape_str(scale.shape()));
  return x.numel();
}

GemmDims check_gemm_fp8(const Tensor& a, const Tensor& a_scale, const Tensor& b,
                        const Tensor& b_scale, const Tensor& c, Device dev) {
  constexpr const char* op = "gemm_fp8";
  for (const auto& [name, t] : {std::pair<const char*, const Tensor*>{"a", &a}, {"b", &b}}) {
    require_on(op, name, *t, dev);
    FTUNE_CHECK(is_fp8(t->dtype()), "gemm_fp8: {} has dtype {}, expected F8_E4M3 or F8_E5M2", name,
                dtype_name(t->dtype()));
    FTUNE_CHECK(t->ndim() == 2 && t->is_contiguous(), "gemm_fp8: {} is {}, expected a contiguous "
                "2-D matrix", name, shape_str(t->shape()));
  }
  FTUNE_CHECK(!(a.dtype() == DType::F8_E5M2 && b.dtype() == DType::F8_E5M2),
              "gemm_fp8: a and b are both F8_E5M2 (one must be F8_E4M3)");
  for (const auto& [name, t] :
       {std::pair<const char*, const Tensor*>{"a_scale", &a_scale}, {"b_scale", &b_scale}}) {
    require_tensor(op, name, *t, DType::F32, dev);
    FTUNE_CHECK(t->numel() == 1, "gemm_fp8: {} is {}, expected one element", name,
                shape_str(t->shape()));
  }
  const DType ct = require_act_rank(op, "c", c, 2, dev);
  FTUNE_CHECK(a.dim(1) == b.dim(1), "gemm_fp8: a is {} but b is {} (both [rows, K])",
              shape_str(a.shape()), shape_str(b.shape()));
  FTUNE_CHECK(c.dim(0) == a.dim(0) && c.dim(1) == b.dim(0),
              "gemm_fp8: c is {} but a b^T is [{}, {}]", shape_str(c.shape()), a.dim(0), b.dim(0));
  return GemmDims{a.dim(0), b.dim(0), a.dim(1), a.dtype(), ct};
}

void check_transpose(const Tensor& src, const Tensor& dst, Device dev) {
  constexpr const char* op = "transpose";
  require_on(op, "src", src, dev);
  require_tensor(op, "dst", dst, src.dtype(), dev);
  const size_t es = dtype_size(src.dtype());
  FTUNE_CHECK(es == 1 || es == 2 || es == 4, "transpose: dtype {} is not 1, 2 or 4 bytes wide",
              dtype_name(src.dtype()));
  FTUNE_CHECK(src.ndim() == 2 && dst.ndim() == 2 && src.is_contiguous() && dst.is_contiguous(),
              "transpose: src {} and dst {} must be contiguous 2-D matrices",
              shape_str(src.shape()), shape_str(dst.shape()));
  FTUNE_CHECK(dst.dim(0) == src.dim(1) && dst.dim(1) == src.dim(0),
              "transpose: dst is {} but src is {}", shape_str(dst.shape()), shape_str(src.shape()));
}

// ---- embedding ----

namespace {
// table (or dtable) [vocab, h], ids I32 [n], rows (out or dy) [n, h].
// Forward: any activation dtype (table and out alike); backward: F32 only.
EmbeddingDims check_embedding(const char* op, const char* table_name, const Tensor& table,
                              const Tensor& ids, const char* rows_name, const Tensor& rows,
                              bool f32_only, Device dev) {
  DType act = DType::F32;
  if (f32_only)
    require_rank(op, table_name, table, DType::F32, 2, dev);
  else
    act = require_act_rank(op, table_name, table, 2, dev);
  require_rank(op, "ids", ids, DType::I32, 1, dev);
  const EmbeddingDims d{ids.dim(0), table.dim(1), table.dim(0), act};
  require_shape(op, rows_name, rows, act, {d.n, d.h}, dev);
  return d;
}
}  // namespace

EmbeddingDims check_embedding_forward(const Tensor& table, const Tensor& ids, const Tensor& out,
                                      Device dev) {
  return check_embedding("embedding_forward", "table", table, ids, "out", out, false, dev);
}

EmbeddingDims check_embedding_backward(const Tensor& dy, const Tensor& ids, const Tensor& dtable,
                                       Device dev) {
  return check_embedding("embedding_backward", "dtable", dtable, ids, "dy", dy, true, dev);
}

// ---- RMSNorm ----

namespace {
MatrixDims check_norm_input(const char* op, const char* x_name, const Tensor& x, const Tensor& w,
                            Device dev) {
  const DType act = require_act_rank(op, x_name, x, 2, dev);
  require_tensor(op, "w", w, act, dev);
  FTUNE_CHECK(w.ndim() == 1 && w.dim(0) == x.dim(1), "{}: {} is {} but w is {}", op, x_name,
              shape_str(x.shape()), shape_str(w.shape()));
  return MatrixDims{x.dim(0), x.dim(1), act};
}
}  // namespace

MatrixDims check_rms_norm_forward(const Tensor& x, const Tensor& w, float eps, const Tensor& y,
                                  const Tensor& rstd, Device dev) {
  constexpr const char* op = "rms_norm_forward";
  const MatrixDims d = check_norm_input(op, "x", x, w, dev);
  require_shape(op, "y", y, d.act, {d.rows, d.cols}, dev);
  require_shape(op, "rstd", rstd, DType::F32, {d.rows}, dev);
  FTUNE_CHECK(eps >= 0.0f, "rms_norm_forward: eps = {} is negative", eps);
  return d;
}

MatrixDims check_rms_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& w,
                                   const Tensor& rstd, const Tensor& dx, const Tensor* dw,
                                   Device dev) {
  constexpr const char* op = "rms_norm_backward";
  const MatrixDims d = check_norm_input(op, "x", x, w, dev);
  require_shape(op, "dy", dy, d.act, {d.rows, d.cols}, dev);
  require_shape(op, "rstd", rstd, DType::F32, {d.rows}, dev);
  require_shape(op, "dx", dx, d.act, {d.rows, d.cols}, dev);
  if (dw != nullptr) require_shape(op, "dw", *dw, DType::F32, {d.cols}, dev);
  return d;
}

MatrixDims check_add_rms_norm_forward(const Tensor& a, const Tensor& b, const Tensor& w, float eps,
                                      const Tensor& sum, const Tensor& y, const Tensor& rstd,
                                      Device dev) {
  constexpr const char* op = "add_rms_norm_forward";
  const MatrixDims d = check_norm_input(op, "a", a, w, dev);
  require_shape(op, "b", b, d.act, {d.rows, d.cols}, dev);
  require_shape(op, "sum", sum, d.act, {d.rows, d.cols}, dev);
  require_shape(op, "y", y, d.act, {d.rows, d.cols}, dev);
  require_shape(op, "rstd", rstd, DType::F32, {d.rows}, dev);
  FTUNE_CHECK(eps >= 0.0f, "add_rms_norm_forward: eps = {} is negative", eps);
  return d;
}

// ---- RoPE ----

RopeDims check_rope(const char* op, const Tensor& x, const Tensor& positions, const Tensor& cos,
                    const Tensor& sin, Device dev) {
  const DType act = require_act_rank(op, "x", x, 3, dev);
  const int64_t n = x.dim(0), heads = x.dim(1), hd = x.dim(2);
  FTUNE_CHECK(hd % 2 == 0, "{}: head_dim {} of x {} is odd", op, hd, shape_str(x.shape()));
  const int64_t half = hd / 2;
  require_shape(op, "positions", positions, DType::I32, {n}, dev);
  require_rank(op, "cos", cos, DType::F32, 2, dev);
  require_rank(op, "sin", sin, DType::F32, 2, dev);
  FTUNE_CHECK(cos.dim(1) == half && sin.shape() == cos.shape(),
              "{}: x is {} but cos is {} and sin is {} (expected [P, {}])", op,
              shape_str(x.shape()), shape_str(cos.shape()), shape_str(sin.shape()), half);
  return RopeDims{n, heads, half, cos.dim(0), act};
}

QkvDims check_qkv_rope(const char* op, const char* fused_name, const Tensor& fused,
                       const Tensor& positions, const Tensor& cos, const Tensor& sin,
                       const char* q_name, const Tensor& q, const char* k_name, const Tensor& k,
                       const char* v_name, const Tensor& v, Device dev) {
  const DType act = require_act_rank(op, q_name, q, 3, dev);
  require_rank(op, k_name, k, act, 3, dev);
  QkvDims d{q.dim(0), q.dim(1), k.dim(1), q.dim(2), 0, act};
  FTUNE_CHECK(k.dim(0) == d.n && k.dim(2) == d.hd,
              "{}: {} is {} but {} is {} (tokens and head_dim must match)", op, q_name,
              shape_str(q.shape()), k_name, shape_str(k.shape()));
  require_shape(op, v_name, v, act, k.shape(), dev);
  FTUNE_CHECK(d.hd % 2 == 0, "{}: head_dim {} of {} {} is odd", op, d.hd, q_name,
              shape_str(q.shape()));
  require_shape(op, fused_name, fused, act, {d.n, (d.nh + 2 * d.nkv) * d.hd}, dev);
  require_shape(op, "positions", positions, DType::I32, {d.n}, dev);
  require_rank(op, "cos", cos, DType::F32, 2, dev);
  require_rank(op, "sin", sin, DType::F32, 2, dev);
  FTUNE_CHECK(cos.dim(1) == d.hd / 2 && sin.shape() == cos.shape(),
              "{}: {} is {} but cos is {} and sin is {} (expected [P, {}])", op, q_name,
              shape_str(q.shape()), shape_str(cos.shape()), shape_str(sin.shape()), d.hd / 2);
  d.table_len = cos.dim(0);
  return d;
}

// ---- attention ----

namespace {
AttentionDims check_qkv(const char* op, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& doc_start, Device dev) {
  const DType act = require_act_rank(op, "q", q, 3, dev);
  require_rank(op, "k", k, act, 3, dev);
  require_rank(op, "v", v, act, 3, dev);
  AttentionDims d{q.dim(0), q.dim(1), k.dim(1), q.dim(2), 0, act};
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
  require_shape(op, "o", o, d.act, q.shape(), dev);
  require_shape(op, "lse", lse, DType::F32, {d.n, d.nh}, dev);
  return d;
}

AttentionDims check_attention_backward(const Tensor& q, const Tensor& k, const Tensor& v,
                                       const Tensor& o, const Tensor& lse, const Tensor& d_o,
                                       const Tensor& doc_start, const Tensor& dq, const Tensor& dk,
                                       const Tensor& dv, Device dev) {
  constexpr const char* op = "attention_backward";
  const AttentionDims d = check_qkv(op, q, k, v, doc_start, dev);
  require_shape(op, "o", o, d.act, q.shape(), dev);
  require_shape(op, "d_o", d_o, d.act, q.shape(), dev);
  require_shape(op, "lse", lse, DType::F32, {d.n, d.nh}, dev);
  require_shape(op, "dq", dq, d.act, q.shape(), dev);
  require_shape(op, "dk", dk, d.act, k.shape(), dev);
  require_shape(op, "dv", dv, d.act, v.shape(), dev);
  return d;
}

AttentionDims check_attention_kv_cache(const Tensor& q, const Tensor& k_cache,
                                       const Tensor& v_cache, int64_t past, const Tensor& o,
                                       Device dev) {
  constexpr const char* op = "attention_kv_cache";
  const DType act = require_act_rank(op, "q", q, 3, dev);
  require_rank(op, "k_cache", k_cache, act, 3, dev);
  require_rank(op, "v_cache", v_cache, act, 3, dev);
  FTUNE_CHECK(k_cache.shape() == v_cache.shape(), "{}: k_cache is {} but v_cache is {}", op,
              shape_str(k_cache.shape()), shape_str(v_cache.shape()));
  AttentionDims d{q.dim(0), q.dim(1), k_cache.dim(1), q.dim(2), 0, act};
  FTUNE_CHECK(k_cache.dim(2) == d.hd, "{}: q is {} but k_cache is {} (head_dim must match)", op,
              shape_str(q.shape()), shape_str(k_cache.shape()));
  FTUNE_CHECK(d.nkv > 0 && d.nh % d.nkv == 0,
              "{}: {} query heads are not a multiple of {} kv heads (q {}, k_cache {})", op, d.nh,
              d.nkv, shape_str(q.shape()), shape_str(k_cache.shape()));
  d.group = d.nh / d.nkv;
  FTUNE_CHECK(past >= 0 && past + d.n <= k_cache.dim(0),
              "{}: {} cached + {} new tokens do not fit the cache of {} rows", op, past, d.n,
              k_cache.dim(0));
  require_shape(op, "o", o, act, q.shape(), dev);
  return d;
}

// ---- SwiGLU ----

namespace {
// t is on dev with gate's dtype and shape.
void require_like_gate(const char* op, const char* name, const Tensor& t, const Tensor& gate,
                       Device dev) {
  require_tensor(op, name, t, gate.dtype(), dev);
  FTUNE_CHECK(t.shape() == gate.shape(), "{}: gate is {} but {} is {}", op,
              shape_str(gate.shape()), name, shape_str(t.shape()));
}
}  // namespace

void check_swiglu_forward(const Tensor& gate, const Tensor& up, const Tensor& out, Device dev) {
  constexpr const char* op = "swiglu_forward";
  require_act(op, "gate", gate, dev);
  require_like_gate(op, "up", up, gate, dev);
  require_like_gate(op, "out", out, gate, dev);
}

void check_swiglu_backward(const Tensor& dout, const Tensor& gate, const Tensor& up,
                           const Tensor& dgate, const Tensor& dup, Device dev) {
  constexpr const char* op = "swiglu_backward";
  require_act(op, "gate", gate, dev);
  require_like_gate(op, "dout", dout, gate, dev);
  require_like_gate(op, "up", up, gate, dev);
  require_like_gate(op, "dgate", dgate, gate, dev);
  require_like_gate(op, "dup", dup, gate, dev);
}

namespace {
// gu [N, 2F] (gate = columns [0, F), up = [F, 2F)): {N, F, dtype}.
MatrixDims check_gate_up(const char* op, const char* name, const Tensor& gu, Device dev) {
  const DType act = require_act_rank(op, name, gu, 2, dev);
  FTUNE_CHECK(gu.dim(1) % 2 == 0, "{}: {} is {}, expected [N, 2F] (gate and up side by side)",
              op, name, shape_str(gu.shape()));
  return MatrixDims{gu.dim(0), gu.dim(1) / 2, act};
}
}  // namespace

MatrixDims check_swiglu_fused_forward(const Tensor& gu, const Tensor& out, Device dev) {
  constexpr const char* op = "swiglu_fused_forward";
  const MatrixDims d = check_gate_up(op, "gu", gu, dev);
  require_shape(op, "out", out, d.act, {d.rows, d.cols}, dev);
  return d;
}

MatrixDims check_swiglu_fused_backward(const Tensor& dout, const Tensor& gu, const Tensor& dgu,
                                       Device dev) {
  constexpr const char* op = "swiglu_fused_backward";
  const MatrixDims d = check_gate_up(op, "gu", gu, dev);
  require_shape(op, "dout", dout, d.act, {d.rows, d.cols}, dev);
  require_shape(op, "dgu", dgu, d.act, gu.shape(), dev);
  return d;
}

// ---- dropout ----

namespace {
// p in [0, 1); in (F32), out (F32, in's shape) and a U8 mask with in's element count.
void check_dropout(const char* op, float p, const char* in_name, const Tensor& in,
                   const char* out_name, const Tensor& out, const Tensor& mask, Device dev) {
  FTUNE_CHECK(p >= 0.0f && p < 1.0f, "{}: p = {} must be in [0, 1)", op, p);
  const DType act = require_act(op, in_name, in, dev);
  require_shape(op, out_name, out, act, in.shape(), dev);
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

void check_dropout_apply(const Tensor& x, float p, int64_t index_offset, const Tensor& out,
                         Device dev) {
  constexpr const char* op = "dropout_apply";
  FTUNE_CHECK(p >= 0.0f && p < 1.0f, "{}: p = {} must be in [0, 1)", op, p);
  FTUNE_CHECK(index_offset >= 0, "{}: index offset {} is negative", op, index_offset);
  const DType act = require_act(op, "x", x, dev);
  require_shape(op, "out", out, act, x.shape(), dev);
}

// ---- lm_head + cross-entropy ----

CrossEntropyDims check_lm_head_cross_entropy(const Tensor& x, const Tensor& w,
                                             const Tensor& targets, const Tensor& loss_sum,
                                             const Tensor* dx, const Tensor* logits,
                                             int64_t chunk_tokens, Device dev) {
  constexpr const char* op = "lm_head_cross_entropy";
  const DType act = require_act_rank(op, "x", x, 2, dev);
  require_rank(op, "w", w, act, 2, dev);
  const CrossEntropyDims d{x.dim(0), x.dim(1), w.dim(0), act};
  FTUNE_CHECK(w.dim(1) == d.h, "{}: x is {} but w is {} (hidden sizes differ)", op,
              shape_str(x.shape()), shape_str(w.shape()));
  FTUNE_CHECK(d.vocab > 0 && d.h > 0, "{}: w is {} (empty vocabulary or hidden size)", op,
              shape_str(w.shape()));
  require_shape(op, "targets", targets, DType::I32, {d.n}, dev);
  require_shape(op, "loss_sum", loss_sum, DType::F64, {1}, dev);
  if (dx != nullptr) require_shape(op, "dx", *dx, act, {d.n, d.h}, dev);
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
