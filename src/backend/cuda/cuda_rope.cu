// Rotary position embedding, half-split layout (HF apply_rotary_pos_emb with rotate_half), as in
// src/backend/cpu/cpu_rope.cpp: for i < hd/2,
//   x'[i] = x[i] cos - x[i+hd/2] sin;  x'[i+hd/2] = x[i+hd/2] cos + x[i] sin.
// The backward is the same rotation with -sin. One thread per (token, head, i) pair, fp32 math on
// activations of any float dtype, cos/sin F32.
//   rope_forward/backward: in place on x [N, heads, hd]; positions range-checked on a host copy
//   (unless CudaContext::check_values is off: then out-of-table positions give NaN).
//   qkv_rope_split_forward / qkv_rope_merge_backward: between a fused QKV row
//   [(nh + 2 nkv) hd] (q heads, k heads, v heads) and q/k/v [N, heads, hd]; v is copied. These
//   do not copy positions to the host (no synchronisation inside a step): a position outside the
//   table writes NaN to that token's outputs instead of reading out of bounds.
#include <cmath>

#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/device/float_types.cuh"
#include "backend/cuda/dispatch.cuh"

namespace ftune::cuda {

namespace {

using device::from_f32;
using device::to_f32;

constexpr int kBlock = 256;

template <typename T>
__global__ void rope_kernel(int64_t n, int64_t heads, int64_t half, int64_t table_len,
                            float sign, T* x,
                            const int32_t* __restrict__ pos, const float* __restrict__ cos,
                            const float* __restrict__ sin) {
  const int64_t total = n * heads * half;
  for (int64_t w = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; w < total;
       w += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = w % half;
    const int64_t th = w / half;  // token * heads + head
    const int64_t t = th / heads;
    const int64_t p = pos[t];
    float c = NAN, si = NAN;  // out-of-table positions (unchecked: ctx.check_values off) -> NaN
    if (p >= 0 && p < table_len) {
      c = cos[p * half + i];
      si = sign * sin[p * half + i];
    }
    T* row = x + th * 2 * half;
    const float a = to_f32(row[i]), b = to_f32(row[i + half]);
    row[i] = from_f32<T>(a * c - b * si);
    row[i + half] = from_f32<T>(b * c + a * si);
  }
}

struct QkvShape {
  int64_t n, nh, nkv, hd, table_len;
};

// to_heads: fused -> q/k/v with rotation +theta; else q/k/v -> fused with -theta.
template <typename T, bool kToHeads>
__global__ void qkv_rope_kernel(QkvShape s, T* fused, T* q, T* k, T* v,
                                const int32_t* __restrict__ pos, const float* __restrict__ cos,
                                const float* __restrict__ sin) {
  const int64_t half = s.hd / 2, heads = s.nh + 2 * s.nkv, width = heads * s.hd;
  const int64_t total = s.n * heads * half;
  for (int64_t w = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; w < total;
       w += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = w % half;
    const int64_t th = w / half;
    const int64_t h = th % heads, t = th / heads;
    T* part = fused + t * width + h * s.hd;
    T* head = h < s.nh             ? q + (t * s.nh + h) * s.hd
              : h < s.nh + s.nkv ? k + (t * s.nkv + (h - s.nh)) * s.hd
                                  : v + (t * s.nkv + (h - s.nh - s.nkv)) * s.hd;
    const T* src = kToHeads ? part : head;
    T* dst = kToHeads ? head : part;
    const float a = to_f32(src[i]), b = to_f32(src[i + half]);
    if (h >= s.nh + s.nkv) {  // v: a copy
      dst[i] = src[i];
      dst[i + half] = src[i + half];
      continue;
    }
    const int64_t p = pos[t];
    float c = NAN, si = NAN;  // out-of-table positions poison the token (no host check here)
    if (p >= 0 && p < s.table_len) {
      c = cos[p * half + i];
      si = (kToHeads ? 1.0f : -1.0f) * sin[p * half + i];
    }
    dst[i] = from_f32<T>(a * c - b * si);
    dst[i + half] = from_f32<T>(b * c + a * si);
  }
}

void rope_apply(const CudaContext& ctx, const char* op, Tensor& x, const Tensor& positions,
                const Tensor& cos, const Tensor& sin, float sign) {
  const RopeDims d = check_rope(op, x, positions, cos, sin, ctx.dev());
  const int64_t n = d.n, heads = d.heads, half = d.half;
  require_indices(ctx, op, "positions", positions, d.table_len, "the rope table");
  const int64_t total = n * heads * half;
  if (total == 0) return;
  dispatch_float(d.act, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    rope_kernel<T><<<grid_for(total, kBlock), kBlock, 0, ctx.stream>>>(
        n, heads, half, d.table_len, sign, x.data<T>(), positions.i32(), cos.f32(), sin.f32());
  });
  check_launch(ctx, op);
}

template <bool kToHeads>
void qkv_rope_launch(const CudaContext& ctx, const char* op, const QkvDims& d, Tensor& fused,
                     Tensor& q, Tensor& k, Tensor& v, const Tensor& positions, const Tensor& cos,
                     const Tensor& sin) {
  const int64_t total = d.n * (d.nh + 2 * d.nkv) * (d.hd / 2);
  if (total == 0) return;
  const QkvShape s{d.n, d.nh, d.nkv, d.hd, d.table_len};
  dispatch_float(d.act, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    qkv_rope_kernel<T, kToHeads><<<grid_for(total, kBlock), kBlock, 0, ctx.stream>>>(
        s, fused.data<T>(), q.data<T>(), k.data<T>(), v.data<T>(), positions.i32(), cos.f32(),
        sin.f32());
  });
  check_launch(ctx, op);
}

}  // namespace

void rope_forward(const CudaContext& ctx, Tensor& x, const Tensor& positions, const Tensor& cos,
                  const Tensor& sin) {
  rope_apply(ctx, "rope_forward", x, positions, cos, sin, 1.0f);
}

void rope_backward(const CudaContext& ctx, Tensor& dx, const Tensor& positions, const Tensor& cos,
                   const Tensor& sin) {
  rope_apply(ctx, "rope_backward", dx, positions, cos, sin, -1.0f);
}

void qkv_rope_split_forward(const CudaContext& ctx, const Tensor& qkv, const Tensor& positions,
                            const Tensor& cos, const Tensor& sin, Tensor& q, Tensor& k,
                            Tensor& v) {
  constexpr const char* op = "qkv_rope_split_forward";
  const QkvDims d =
      check_qkv_rope(op, "qkv", qkv, positions, cos, sin, "q", q, "k", k, "v", v, ctx.dev());
  Tensor fused = qkv;  // read only: the kernel's kToHeads = true never writes it
  qkv_rope_launch<true>(ctx, op, d, fused, q, k, v, positions, cos, sin);
}

void qkv_rope_merge_backward(const CudaContext& ctx, const Tensor& dq, const Tensor& dk,
                             const Tensor& dv, const Tensor& positions, const Tensor& cos,
                             const Tensor& sin, Tensor& dqkv) {
  constexpr const char* op = "qkv_rope_merge_backward";
  const QkvDims d = check_qkv_rope(op, "dqkv", dqkv, positions, cos, sin, "dq", dq, "dk", dk,
                                   "dv", dv, ctx.dev());
  Tensor q = dq, k = dk, v = dv;  // read only: kToHeads = false never writes them
  qkv_rope_launch<false>(ctx, op, d, dqkv, q, k, v, positions, cos, sin);
}

}  // namespace ftune::cuda
