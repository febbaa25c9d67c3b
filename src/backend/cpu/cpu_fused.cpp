// Fused ops of backend/ops.h on the host, defined by the primitive reference ops they replace
// (so the CPU backend computes exactly the composite): add + RMSNorm, QKV split + RoPE and its
// backward, SwiGLU on a fused gate/up buffer.
#include <cmath>

#include "backend/cpu/cpu_kernels.h"

namespace ftune::cpu {

namespace {

// Copies columns [c0, c0 + width) of src [n, src_cols] into dst [n, width] (or back when
// to_src), both F32 host tensors.
void copy_cols(const Tensor& src_t, int64_t c0, Tensor& dst_t, bool to_src) {
  const int64_t n = dst_t.dim(0), width = dst_t.numel() / std::max<int64_t>(n, 1);
  const int64_t src_cols = src_t.numel() / std::max<int64_t>(n, 1);
  float* s = src_t.f32();
  float* d = dst_t.f32();
#pragma omp parallel for schedule(static) if (n * width > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < width; ++j) {
      if (to_src)
        s[i * src_cols + c0 + j] = d[i * width + j];
      else
        d[i * width + j] = s[i * src_cols + c0 + j];
    }
  }
}

struct QkvDims {
  int64_t n, q_cols, k_cols;
};

QkvDims check_qkv(const char* op, const Tensor& qkv, const Tensor& q, const Tensor& k,
                  const Tensor& v) {
  require_rank(op, "qkv", qkv, DType::F32, 2, Device::cpu());
  require_rank(op, "q", q, DType::F32, 3, Device::cpu());
  require_rank(op, "k", k, DType::F32, 3, Device::cpu());
  require_rank(op, "v", v, DType::F32, 3, Device::cpu());
  const int64_t n = qkv.dim(0);
  const int64_t qc = q.dim(1) * q.dim(2), kc = k.dim(1) * k.dim(2);
  FTUNE_CHECK(q.dim(0) == n && k.dim(0) == n && v.shape() == k.shape() &&
                  k.dim(2) == q.dim(2) && qkv.dim(1) == qc + 2 * kc,
              "{}: qkv {} does not split into q {}, k {}, v {}", op, shape_str(qkv.shape()),
              shape_str(q.shape()), shape_str(k.shape()), shape_str(v.shape()));
  return {n, qc, kc};
}

}  // namespace

void add_rms_norm_forward(const Tensor& a, const Tensor& b, const Tensor& w, float eps,
                          Tensor& sum, Tensor& y, Tensor& rstd) {
  check_axpy(a, b, Device::cpu());
  check_axpy(a, sum, Device::cpu());
  const int64_t n = a.numel();
  const float* ap = a.f32();
  const float* bp = b.f32();
  float* sp = sum.f32();
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) sp[i] = ap[i] + bp[i];
  rms_norm_forward(sum, w, eps, y, rstd);
}

void qkv_rope_split_forward(const Tensor& qkv, const Tensor& positions, const Tensor& cos,
                            const Tensor& sin, Tensor& q, Tensor& k, Tensor& v) {
  const QkvDims d = check_qkv("qkv_rope_split_forward", qkv, q, k, v);
  copy_cols(qkv, 0, q, false);
  copy_cols(qkv, d.q_cols, k, false);
  copy_cols(qkv, d.q_cols + d.k_cols, v, false);
  rope_forward(q, positions, cos, sin);
  rope_forward(k, positions, cos, sin);
}

void qkv_rope_merge_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                             const Tensor& positions, const Tensor& cos, const Tensor& sin,
                             Tensor& dqkv) {
  const QkvDims d = check_qkv("qkv_rope_merge_backward", dqkv, dq, dk, dv);
  Tensor q = dq.clone(), k = dk.clone();
  rope_backward(q, positions, cos, sin);
  rope_backward(k, positions, cos, sin);
  Tensor v = dv;
  copy_cols(dqkv, 0, q, true);
  copy_cols(dqkv, d.q_cols, k, true);
  copy_cols(dqkv, d.q_cols + d.k_cols, v, true);
}

void swiglu_fused_forward(const Tensor& gu, Tensor& out) {
  constexpr const char* op = "swiglu_fused_forward";
  require_rank(op, "gu", gu, DType::F32, 2, Device::cpu());
  require_rank(op, "out", out, DType::F32, 2, Device::cpu());
  FTUNE_CHECK(out.dim(0) == gu.dim(0) && gu.dim(1) == 2 * out.dim(1),
              "{}: gu is {} but out is {} (gu must be [N, 2F] for out [N, F])", op,
              shape_str(gu.shape()), shape_str(out.shape()));
  Tensor g = out.clone(), u = out.clone();
  copy_cols(gu, 0, g, false);
  copy_cols(gu, out.dim(1), u, false);
  swiglu_forward(g, u, out);
}

void swiglu_fused_backward(const Tensor& dout, const Tensor& gu, Tensor& dgu) {
  constexpr const char* op = "swiglu_fused_backward";
  require_rank(op, "dout", dout, DType::F32, 2, Device::cpu());
  require_shape(op, "gu", gu, DType::F32, {dout.dim(0), 2 * dout.dim(1)}, Device::cpu());
  require_shape(op, "dgu", dgu, DType::F32, gu.shape(), Device::cpu());
  Tensor g = dout.clone(), u = dout.clone();
  copy_cols(gu, 0, g, false);
  copy_cols(gu, dout.dim(1), u, false);
  Tensor dg = dout.clone(), du = dout.clone();
  swiglu_backward(dout, g, u, dg, du);
  copy_cols(dgu, 0, dg, true);
  copy_cols(dgu, dout.dim(1), du, true);
}

}  // namespace ftune::cpu
