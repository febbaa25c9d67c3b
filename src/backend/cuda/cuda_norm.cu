// RMSNorm forward and backward on the GPU, the same math and fp32/double choices as the CPU
// reference (src/backend/cpu/cpu_norm.cpp; HF LlamaRMSNorm in fp32):
//   rstd = 1/sqrt(mean(x^2) + eps);  y = w * (x * rstd)
//   dx = rstd * (w dy) - rstd^3 / H * x * sum(w dy x);   dw += sum over rows of dy * (x rstd)
// and the fused residual add: sum = a + b (rounded to the activation dtype and stored), then the
// forward on the stored sum. Elements are F32, BF16 or F16, widened to fp32 on load and rounded
// once on store. One block per row for the row reductions (sums in double, fixed shuffle order),
// moving 16 bytes per access when the row length and the pointers allow it; each pass of a row
// visits the same elements from the same thread, so outputs may alias inputs (y over x, sum over
// a or b, dx over dy without accumulate). dw gives each thread one column and sums the rows in
// order.
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/device/float_types.cuh"
#include "backend/cuda/device/reduce.cuh"
#include "backend/cuda/dispatch.cuh"

namespace ftune::cuda {

namespace {

using device::Chunk;
using device::from_f32;
using device::load_chunk;
using device::store_chunk;
using device::to_f32;

constexpr int kRowBlock = 256;
constexpr int kColBlock = 256;

// kAdd: x = round(a + b) is written to `sum` and normalized; else x = a (b, sum unused).
template <typename T, int W, bool kAdd>
__global__ void rms_norm_forward_kernel(int64_t h, float eps, const T* a, const T* b,
                                        const T* __restrict__ w, T* sum, T* y, float* rstd) {
  __shared__ double scratch[32];
  const int64_t r = blockIdx.x;
  const int64_t chunks = h / W;
  const int64_t base = r * h;
  const T* xr = kAdd ? sum + base : a + base;
  double ss = 0.0;
  for (int64_t c = threadIdx.x; c < chunks; c += blockDim.x) {
    Chunk<T, W> xv;
    if constexpr (kAdd) {
      const Chunk<T, W> av = load_chunk<T, W>(a + base + c * W);
      const Chunk<T, W> bv = load_chunk<T, W>(b + base + c * W);
#pragma unroll
      for (int e = 0; e < W; ++e) xv.v[e] = from_f32<T>(to_f32(av.v[e]) + to_f32(bv.v[e]));
      store_chunk<T, W>(sum + base + c * W, xv);
    } else {
      xv = load_chunk<T, W>(a + base + c * W);
    }
#pragma unroll
    for (int e = 0; e < W; ++e) {
      const float f = to_f32(xv.v[e]);
      ss += static_cast<double>(f) * f;
    }
  }
  ss = device::block_sum(ss, scratch);
  const float var = static_cast<float>(ss / static_cast<double>(h));
  const float rs = 1.0f / sqrtf(var + eps);
  if (threadIdx.x == 0) rstd[r] = rs;
  // Same chunks per thread as above: this thread reads back exactly what it stored in `sum`.
  for (int64_t c = threadIdx.x; c < chunks; c += blockDim.x) {
    const Chunk<T, W> xv = load_chunk<T, W>(xr + c * W);
    const Chunk<T, W> wv = load_chunk<T, W>(w + c * W);
    Chunk<T, W> yv;
#pragma unroll
    for (int e = 0; e < W; ++e) yv.v[e] = from_f32<T>(to_f32(wv.v[e]) * (to_f32(xv.v[e]) * rs));
    store_chunk<T, W>(y + base + c * W, yv);
  }
}

template <typename T, int W>
__global__ void rms_norm_backward_dx_kernel(int64_t h, const T* dy, const T* __restrict__ x,
                                            const T* __restrict__ w,
                                            const float* __restrict__ rstd, T* dx,
                                            bool accumulate) {
  __shared__ double scratch[32];
  const int64_t r = blockIdx.x;
  const int64_t chunks = h / W;
  const int64_t base = r * h;
  const float rs = rstd[r];
  double dot = 0.0;  // sum_j w_j dy_j x_j
  for (int64_t c = threadIdx.x; c < chunks; c += blockDim.x) {
    const Chunk<T, W> gv = load_chunk<T, W>(dy + base + c * W);
    const Chunk<T, W> xv = load_chunk<T, W>(x + base + c * W);
    const Chunk<T, W> wv = load_chunk<T, W>(w + c * W);
#pragma unroll
    for (int e = 0; e < W; ++e)
      dot += static_cast<double>(to_f32(wv.v[e])) * to_f32(gv.v[e]) * to_f32(xv.v[e]);
  }
  // block_sum ends with a barrier: every read of dy above is done before dx (maybe dy) is written.
  dot = device::block_sum(dot, scratch);
  const float cc = static_cast<float>(dot * rs * rs * rs / static_cast<double>(h));
  for (int64_t c = threadIdx.x; c < chunks; c += blockDim.x) {
    const Chunk<T, W> gv = load_chunk<T, W>(dy + base + c * W);
    const Chunk<T, W> xv = load_chunk<T, W>(x + base + c * W);
    const Chunk<T, W> wv = load_chunk<T, W>(w + c * W);
    Chunk<T, W> out;
    if (accumulate) out = load_chunk<T, W>(dx + base + c * W);
#pragma unroll
    for (int e = 0; e < W; ++e) {
      float v = rs * (to_f32(wv.v[e]) * to_f32(gv.v[e])) - cc * to_f32(xv.v[e]);
      if (accumulate) v += to_f32(out.v[e]);
      out.v[e] = from_f32<T>(v);
    }
    store_chunk<T, W>(dx + base + c * W, out);
  }
}

template <typename T>
__global__ void rms_norm_backward_dw_kernel(int64_t n, int64_t h, const T* __restrict__ dy,
                                            const T* __restrict__ x,
                                            const float* __restrict__ rstd, float* dw) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= h) return;
  double acc = 0.0;
  for (int64_t r = 0; r < n; ++r)
    acc += static_cast<double>(to_f32(dy[r * h + j])) * (to_f32(x[r * h + j]) * rstd[r]);
  dw[j] += static_cast<float>(acc);
}

// Calls launch(std::integral_constant<int, W>) with W = 16 / sizeof(T) when rows of h elements
// can be read in 16-byte chunks from every pointer, else W = 1.
template <typename T, typename L>
void with_row_width(int64_t h, std::initializer_list<const void*> ptrs, L&& launch) {
  if (can_vectorize<T>(h, ptrs))
    launch(std::integral_constant<int, device::kVecWidth<T>>{});
  else
    launch(std::integral_constant<int, 1>{});
}

void check_rows(const char* op, int64_t n) {
  FTUNE_CHECK(n <= INT32_MAX, "{}: {} rows exceed the grid limit", op, n);
}

}  // namespace

void rms_norm_forward(const CudaContext& ctx, const Tensor& x, const Tensor& w, float eps,
                      Tensor& y, Tensor& rstd) {
  constexpr const char* op = "rms_norm_forward";
  const MatrixDims d = check_rms_norm_forward(x, w, eps, y, rstd, ctx.dev());
  const int64_t n = d.rows, h = d.cols;
  check_rows(op, n);
  if (n == 0) return;
  dispatch_float(d.act, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = x.data<T>();
    const T* wp = w.data<T>();
    T* yp = y.data<T>();
    with_row_width<T>(h, {xp, wp, yp}, [&](auto wc) {
      rms_norm_forward_kernel<T, decltype(wc)::value, false>
          <<<static_cast<unsigned>(n), kRowBlock, 0, ctx.stream>>>(h, eps, xp, nullptr, wp,
                                                                   nullptr, yp, rstd.f32());
    });
  });
  check_launch(ctx, op);
}

void add_rms_norm_forward(const CudaContext& ctx, const Tensor& a, const Tensor& b,
                          const Tensor& w, float eps, Tensor& sum, Tensor& y, Tensor& rstd) {
  constexpr const char* op = "add_rms_norm_forward";
  const MatrixDims d = check_add_rms_norm_forward(a, b, w, eps, sum, y, rstd, ctx.dev());
  const int64_t n = d.rows, h = d.cols;
  check_rows(op, n);
  if (n == 0) return;
  dispatch_float(d.act, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* ap = a.data<T>();
    const T* bp = b.data<T>();
    const T* wp = w.data<T>();
    T* sp = sum.data<T>();
    T* yp = y.data<T>();
    with_row_width<T>(h, {ap, bp, wp, sp, yp}, [&](auto wc) {
      rms_norm_forward_kernel<T, decltype(wc)::value, true>
          <<<static_cast<unsigned>(n), kRowBlock, 0, ctx.stream>>>(h, eps, ap, bp, wp, sp, yp,
                                                                   rstd.f32());
    });
  });
  check_launch(ctx, op);
}

void rms_norm_backward(const CudaContext& ctx, const Tensor& dy, const Tensor& x, const Tensor& w,
                       const Tensor& rstd, Tensor& dx, Tensor* dw, bool accumulate) {
  constexpr const char* op = "rms_norm_backward";
  const MatrixDims d = check_rms_norm_backward(dy, x, w, rstd, dx, dw, ctx.dev());
  const int64_t n = d.rows, h = d.cols;
  check_rows(op, n);
  if (n == 0 || h == 0) return;
  dispatch_float(d.act, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* gp = dy.data<T>();
    const T* xp = x.data<T>();
    const T* wp = w.data<T>();
    T* dxp = dx.data<T>();
    // dw first: dx may alias dy.
    if (dw != nullptr) {
      const int64_t blocks = (h + kColBlock - 1) / kColBlock;
      rms_norm_backward_dw_kernel<T><<<static_cast<unsigned>(blocks), kColBlock, 0, ctx.stream>>>(
          n, h, gp, xp, rstd.f32(), dw->f32());
      check_launch(ctx, op);
    }
    with_row_width<T>(h, {gp, xp, wp, dxp}, [&](auto wc) {
      rms_norm_backward_dx_kernel<T, decltype(wc)::value>
          <<<static_cast<unsigned>(n), kRowBlock, 0, ctx.stream>>>(h, gp, xp, wp, rstd.f32(),
                                                                   dxp, accumulate);
    });
  });
  check_launch(ctx, op);
}

}  // namespace ftune::cuda
