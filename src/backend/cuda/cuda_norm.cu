// RMSNorm forward and backward on the GPU, the same math and fp32/double choices as the CPU
// reference (src/backend/cpu/cpu_norm.cpp; HF LlamaRMSNorm in fp32):
//   rstd = 1/sqrt(mean(x^2) + eps);  y = w * (x * rstd)
//   dx = rstd * (w dy) - rstd^3 / H * x * sum(w dy x);   dw += sum over rows of dy * (x rstd)
// One block per row for the row reductions (sums in double, fixed shuffle order); dw gives
// each thread one column and sums the rows in order.
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/device/reduce.cuh"

namespace ftune::cuda {

namespace {

constexpr int kRowBlock = 256;
constexpr int kColBlock = 256;

__global__ void rms_norm_forward_kernel(int64_t h, float eps, const float* __restrict__ x,
                                        const float* __restrict__ w, float* y, float* rstd) {
  __shared__ double scratch[32];
  const int64_t r = blockIdx.x;
  const float* xr = x + r * h;
  double ss = 0.0;
  for (int64_t j = threadIdx.x; j < h; j += blockDim.x) ss += static_cast<double>(xr[j]) * xr[j];
  ss = device::block_sum(ss, scratch);
  const float var = static_cast<float>(ss / static_cast<double>(h));
  const float rs = 1.0f / sqrtf(var + eps);
  if (threadIdx.x == 0) rstd[r] = rs;
  float* yr = y + r * h;
  for (int64_t j = threadIdx.x; j < h; j += blockDim.x) yr[j] = w[j] * (xr[j] * rs);
}

__global__ void rms_norm_backward_dx_kernel(int64_t h, const float* __restrict__ dy,
                                            const float* __restrict__ x,
                                            const float* __restrict__ w,
                                            const float* __restrict__ rstd, float* dx) {
  __shared__ double scratch[32];
  const int64_t r = blockIdx.x;
  const float* gr = dy + r * h;
  const float* xr = x + r * h;
  const float rs = rstd[r];
  double dot = 0.0;  // sum_j w_j dy_j x_j
  for (int64_t j = threadIdx.x; j < h; j += blockDim.x)
    dot += static_cast<double>(w[j]) * gr[j] * xr[j];
  dot = device::block_sum(dot, scratch);
  const float c = static_cast<float>(dot * rs * rs * rs / static_cast<double>(h));
  float* dr = dx + r * h;
  for (int64_t j = threadIdx.x; j < h; j += blockDim.x) dr[j] = rs * (w[j] * gr[j]) - c * xr[j];
}

__global__ void rms_norm_backward_dw_kernel(int64_t n, int64_t h, const float* __restrict__ dy,
                                            const float* __restrict__ x,
                                            const float* __restrict__ rstd, float* dw) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= h) return;
  double acc = 0.0;
  for (int64_t r = 0; r < n; ++r)
    acc += static_cast<double>(dy[r * h + j]) * (x[r * h + j] * rstd[r]);
  dw[j] += static_cast<float>(acc);
}

}  // namespace

void rms_norm_forward(const CudaContext& ctx, const Tensor& x, const Tensor& w, float eps,
                      Tensor& y, Tensor& rstd) {
  constexpr const char* op = "rms_norm_forward";
  const MatrixDims d = check_rms_norm_forward(x, w, eps, y, rstd, ctx.dev());
  const int64_t n = d.rows, h = d.cols;
  FTUNE_CHECK(n <= INT32_MAX, "rms_norm_forward: {} rows exceed the grid limit", n);
  if (n == 0) return;
  rms_norm_forward_kernel<<<static_cast<unsigned>(n), kRowBlock, 0, ctx.stream>>>(
      h, eps, x.f32(), w.f32(), y.f32(), rstd.f32());
  check_launch(ctx, op);
}

void rms_norm_backward(const CudaContext& ctx, const Tensor& dy, const Tensor& x, const Tensor& w,
                       const Tensor& rstd, Tensor& dx, Tensor* dw) {
  constexpr const char* op = "rms_norm_backward";
  const MatrixDims d = check_rms_norm_backward(dy, x, w, rstd, dx, dw, ctx.dev());
  const int64_t n = d.rows, h = d.cols;
  FTUNE_CHECK(n <= INT32_MAX, "rms_norm_backward: {} rows exceed the grid limit", n);
  if (n == 0 || h == 0) return;
  rms_norm_backward_dx_kernel<<<static_cast<unsigned>(n), kRowBlock, 0, ctx.stream>>>(
      h, dy.f32(), x.f32(), w.f32(), rstd.f32(), dx.f32());
  check_launch(ctx, op);
  if (dw == nullptr) return;
  const int64_t blocks = (h + kColBlock - 1) / kColBlock;
  rms_norm_backward_dw_kernel<<<static_cast<unsigned>(blocks), kColBlock, 0, ctx.stream>>>(
      n, h, dy.f32(), x.f32(), rstd.f32(), dw->f32());
  check_launch(ctx, op);
}

}  // namespace ftune::cuda
