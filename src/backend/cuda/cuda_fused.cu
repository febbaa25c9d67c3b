// Fused ops of backend/ops.h on the GPU, for F32, BF16 and F16 activations (fp32 math, one
// rounding on store), as the CPU reference src/backend/cpu/cpu_fused.cpp: add + RMSNorm (one
// block per row), QKV split + RoPE and its backward, SwiGLU on a fused gate/up buffer. Index
// values (positions) are validated once when the batch is built, not here.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/device/reduce.cuh"

namespace ftune::cuda {

namespace {

constexpr int kBlock = 256;

template <typename T>
__device__ __forceinline__ float ld(const T* p) { return static_cast<float>(*p); }
template <typename T>
__device__ __forceinline__ void st(T* p, float v) { *p = static_cast<T>(v); }

template <typename T>
__global__ void add_rms_norm_kernel(int64_t rows, int64_t h, float eps, const T* __restrict__ a,
                                    const T* __restrict__ b, const T* __restrict__ w, T* sum, T* y,
                                    float* rstd) {
  __shared__ float red[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const T* ar = a + r * h;
    const T* br = b + r * h;
    T* sr = sum + r * h;
    float ss = 0.0f;
    for (int64_t j = threadIdx.x; j < h; j += blockDim.x) {
      // Round the sum to T first: the norm sees the stored residual, as the composite would.
      const T s = static_cast<T>(ld(ar + j) + ld(br + j));
      sr[j] = s;
      const float f = static_cast<float>(s);
      ss += f * f;
    }
    ss = device::block_sum(ss, red);
    const float rs = rsqrtf(ss / static_cast<float>(h) + eps);
    if (threadIdx.x == 0) rstd[r] = rs;
    T* yr = y + r * h;
    for (int64_t j = threadIdx.x; j < h; j += blockDim.x)
      st(yr + j, ld(w + j) * (static_cast<float>(sr[j]) * rs));
    __syncthreads();
  }
}

// One thread per (token, column pair) of q or k, and per column of v.
template <typename T>
__global__ void qkv_split_kernel(int64_t n, int nh, int nkv, int hd, const T* __restrict__ qkv,
                                 const int32_t* __restrict__ pos, const float* __restrict__ cos,
                                 const float* __restrict__ sin, T* q, T* k, T* v, float sign,
                                 bool merge) {
  // merge == false: read qkv, write q/k/v (rotated by +theta).
  // merge == true:  read q/k/v (gradients), write qkv (rotated by -theta): q, k, v are inputs and
  // qkv the output, so the const-ness is cast away on the side that is written.
  const int half = hd / 2;
  const int64_t cols = static_cast<int64_t>(nh + 2 * nkv) * hd;
  const int64_t rot_pairs = static_cast<int64_t>(nh + nkv) * half;  // q and k rotate
  const int64_t v_cols = static_cast<int64_t>(nkv) * hd;
  const int64_t per_tok = rot_pairs + v_cols;
  const int64_t total = n * per_tok;
  for (int64_t w = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; w < total;
       w += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = w / per_tok;
    const int64_t e = w % per_tok;
    T* fused = const_cast<T*>(qkv) + t * cols;
    if (e < rot_pairs) {
      const int64_t head = e / half;  // 0..nh+nkv-1
      const int i = static_cast<int>(e % half);
      T* sep = head < nh ? q + (t * nh + head) * hd : k + (t * nkv + (head - nh)) * hd;
      T* f = fused + head * hd;  // q heads then k heads are adjacent in qkv
      const int64_t p = pos[t];
      const float c = cos[p * half + i], s = sign * sin[p * half + i];
      const T* src = merge ? sep : f;
      T* dst = merge ? f : sep;
      const float a = ld(src + i), b = ld(src + i + half);
      st(dst + i, a * c - b * s);
      st(dst + i + half, b * c + a * s);
    } else {
      const int64_t j = e - rot_pairs;
      T* f = fused + static_cast<int64_t>(nh + nkv) * hd + j;
      T* sep = v + t * v_cols + j;
      if (merge)
        *f = *sep;
      else
        *sep = *f;
    }
  }
}

template <typename T>
__global__ void swiglu_fused_kernel(int64_t n, int64_t f, const T* __restrict__ gu,
                                    const T* __restrict__ dout, T* out, T* dgu) {
  const int64_t total = n * f;
  for (int64_t w = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; w < total;
       w += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = w / f, j = w % f;
    const float g = ld(gu + r * 2 * f + j), u = ld(gu + r * 2 * f + f + j);
    const float s = 1.0f / (1.0f + __expf(-g));
    if (dout == nullptr) {
      st(out + w, g * s * u);
    } else {
      const float dy = ld(dout + w);
      st(dgu + r * 2 * f + j, dy * u * (s * (1.0f + g * (1.0f - s))));
      st(dgu + r * 2 * f + f + j, dy * (g * s));
    }
  }
}

bool is_act(DType d) { return d == DType::F32 || d == DType::BF16 || d == DType::F16; }

void require_act(const CudaContext& ctx, const char* op, const char* name, const Tensor& t,
                 DType dt) {
  require_tensor(op, name, t, dt, ctx.dev());
}

template <typename F>
void dispatch(DType dt, F&& f) {
  switch (dt) {
    case DType::F32: f(float{}); break;
    case DType::BF16: f(__nv_bfloat16{}); break;
    default: f(__half{}); break;
  }
}

struct QkvShape {
  int64_t n;
  int nh, nkv, hd;
};

QkvShape check_qkv(const CudaContext& ctx, const char* op, const Tensor& qkv, const Tensor& q,
                   const Tensor& k, const Tensor& v, const Tensor& positions, const Tensor& cos,
                   const Tensor& sin) {
  const DType dt = qkv.dtype();
  FTUNE_CHECK(is_act(dt), "{}: qkv has dtype {}, expected F32, BF16 or F16", op, dtype_name(dt));
  require_rank(op, "qkv", qkv, dt, 2, ctx.dev());
  require_rank(op, "q", q, dt, 3, ctx.dev());
  require_rank(op, "k", k, dt, 3, ctx.dev());
  require_rank(op, "v", v, dt, 3, ctx.dev());
  const int64_t n = qkv.dim(0);
  FTUNE_CHECK(q.dim(0) == n && k.dim(0) == n && v.shape() == k.shape() && k.dim(2) == q.dim(2) &&
                  q.dim(2) % 2 == 0 && qkv.dim(1) == (q.dim(1) + 2 * k.dim(1)) * q.dim(2),
              "{}: qkv {} does not split into q {}, k {}, v {}", op, shape_str(qkv.shape()),
              shape_str(q.shape()), shape_str(k.shape()), shape_str(v.shape()));
  require_shape(op, "positions", positions, DType::I32, {n}, ctx.dev());
  require_rank(op, "cos", cos, DType::F32, 2, ctx.dev());
  require_shape(op, "sin", sin, DType::F32, cos.shape(), ctx.dev());
  FTUNE_CHECK(cos.dim(1) == q.dim(2) / 2, "{}: cos is {}, expected [P, {}]", op,
              shape_str(cos.shape()), q.dim(2) / 2);
  return {n, static_cast<int>(q.dim(1)), static_cast<int>(k.dim(1)), static_cast<int>(q.dim(2))};
}

void qkv_launch(const CudaContext& ctx, const char* op, const Tensor& qkv, const Tensor& q,
                const Tensor& k, const Tensor& v, const Tensor& positions, const Tensor& cos,
                const Tensor& sin, bool merge) {
  const QkvShape s = check_qkv(ctx, op, qkv, q, k, v, positions, cos, sin);
  const int64_t total = s.n * (static_cast<int64_t>(s.nh + s.nkv) * (s.hd / 2) +
                               static_cast<int64_t>(s.nkv) * s.hd);
  if (total == 0) return;
  dispatch(qkv.dtype(), [&](auto zero) {
    using T = decltype(zero);
    qkv_split_kernel<T><<<grid_for(total, kBlock), kBlock, 0, ctx.stream>>>(
        s.n, s.nh, s.nkv, s.hd, qkv.data<T>(), positions.i32(), cos.f32(), sin.f32(),
        q.data<T>(), k.data<T>(), v.data<T>(), merge ? -1.0f : 1.0f, merge);
  });
  check_launch(ctx, op);
}

}  // namespace

void add_rms_norm_forward(const CudaContext& ctx, const Tensor& a, const Tensor& b,
                          const Tensor& w, float eps, Tensor& sum, Tensor& y, Tensor& rstd) {
  constexpr const char* op = "add_rms_norm_forward";
  const DType dt = a.dtype();
  FTUNE_CHECK(is_act(dt), "{}: a has dtype {}, expected F32, BF16 or F16", op, dtype_name(dt));
  require_rank(op, "a", a, dt, 2, ctx.dev());
  const int64_t rows = a.dim(0), h = a.dim(1);
  require_shape(op, "b", b, dt, a.shape(), ctx.dev());
  require_shape(op, "sum", sum, dt, a.shape(), ctx.dev());
  require_shape(op, "y", y, dt, a.shape(), ctx.dev());
  require_shape(op, "w", w, dt, {h}, ctx.dev());
  require_shape(op, "rstd", rstd, DType::F32, {rows}, ctx.dev());
  FTUNE_CHECK(eps >= 0, "{}: eps must be >= 0, got {}", op, eps);
  if (rows == 0) return;
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(rows, 65535));
  dispatch(dt, [&](auto zero) {
    using T = decltype(zero);
    add_rms_norm_kernel<T><<<grid, kBlock, 0, ctx.stream>>>(rows, h, eps, a.data<T>(), b.data<T>(),
                                                           w.data<T>(), sum.data<T>(),
                                                           y.data<T>(), rstd.f32());
  });
  check_launch(ctx, op);
}

void qkv_rope_split_forward(const CudaContext& ctx, const Tensor& qkv, const Tensor& positions,
                            const Tensor& cos, const Tensor& sin, Tensor& q, Tensor& k,
                            Tensor& v) {
  qkv_launch(ctx, "qkv_rope_split_forward", qkv, q, k, v, positions, cos, sin, false);
}

void qkv_rope_merge_backward(const CudaContext& ctx, const Tensor& dq, const Tensor& dk,
                             const Tensor& dv, const Tensor& positions, const Tensor& cos,
                             const Tensor& sin, Tensor& dqkv) {
  qkv_launch(ctx, "qkv_rope_merge_backward", dqkv, dq, dk, dv, positions, cos, sin, true);
}

void swiglu_fused_forward(const CudaContext& ctx, const Tensor& gu, Tensor& out) {
  constexpr const char* op = "swiglu_fused_forward";
  const DType dt = gu.dtype();
  FTUNE_CHECK(is_act(dt), "{}: gu has dtype {}, expected F32, BF16 or F16", op, dtype_name(dt));
  require_rank(op, "gu", gu, dt, 2, ctx.dev());
  require_rank(op, "out", out, dt, 2, ctx.dev());
  FTUNE_CHECK(out.dim(0) == gu.dim(0) && gu.dim(1) == 2 * out.dim(1),
              "{}: gu is {} but out is {} (gu must be [N, 2F] for out [N, F])", op,
              shape_str(gu.shape()), shape_str(out.shape()));
  const int64_t n = out.dim(0), f = out.dim(1);
  if (n * f == 0) return;
  dispatch(dt, [&](auto zero) {
    using T = decltype(zero);
    swiglu_fused_kernel<T><<<grid_for(n * f, kBlock), kBlock, 0, ctx.stream>>>(
        n, f, gu.data<T>(), nullptr, out.data<T>(), nullptr);
  });
  check_launch(ctx, op);
}

void swiglu_fused_backward(const CudaContext& ctx, const Tensor& dout, const Tensor& gu,
                           Tensor& dgu) {
  constexpr const char* op = "swiglu_fused_backward";
  const DType dt = dout.dtype();
  FTUNE_CHECK(is_act(dt), "{}: dout has dtype {}, expected F32, BF16 or F16", op, dtype_name(dt));
  require_rank(op, "dout", dout, dt, 2, ctx.dev());
  require_shape(op, "gu", gu, dt, {dout.dim(0), 2 * dout.dim(1)}, ctx.dev());
  require_shape(op, "dgu", dgu, dt, gu.shape(), ctx.dev());
  const int64_t n = dout.dim(0), f = dout.dim(1);
  if (n * f == 0) return;
  dispatch(dt, [&](auto zero) {
    using T = decltype(zero);
    swiglu_fused_kernel<T><<<grid_for(n * f, kBlock), kBlock, 0, ctx.stream>>>(
        n, f, gu.data<T>(), dout.data<T>(), nullptr, dgu.data<T>());
  });
  check_launch(ctx, op);
}

}  // namespace ftune::cuda
