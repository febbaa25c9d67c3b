// Whole-tensor vector helpers and bias terms on the GPU: y += alpha x, x *= alpha, the sum of
// squares behind gradient-norm clipping, the broadcast bias add and its column-sum backward.
// Reductions run in a fixed order (fixed grid for a given size, fixed shuffle trees), so they
// give the same value on every run; sums of squares and column sums accumulate in double like
// the CPU reference (src/backend/cpu/cpu_elementwise.cpp, cpu_gemm.cpp).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "backend/cuda/check.h"
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/device/reduce.cuh"

namespace ftune::cuda {

namespace {

constexpr int kBlock = 256;

__global__ void axpy_kernel(int64_t n, float alpha, const float* __restrict__ x, float* y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] += alpha * x[i];
}

__global__ void scale_kernel(int64_t n, float alpha, float* x) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    x[i] *= alpha;
}

// Stage 1: one double partial per block (grid-stride over x).
__global__ void sum_squares_partial_kernel(int64_t n, const float* __restrict__ x,
                                           double* partial) {
  __shared__ double scratch[32];
  double s = 0.0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    s += static_cast<double>(x[i]) * x[i];
  s = device::block_sum(s, scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// Stage 2: one block adds the partials.
__global__ void sum_partials_kernel(int64_t n, const double* __restrict__ partial, double* out) {
  __shared__ double scratch[32];
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += partial[i];
  s = device::block_sum(s, scratch);
  if (threadIdx.x == 0) *out = s;
}

__global__ void add_bias_kernel(int64_t rows, int64_t cols, float* y,
                                const float* __restrict__ bias) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] += bias[i % cols];
}

// One thread per column sums its rows top to bottom (coalesced across the warp).
__global__ void bias_backward_kernel(int64_t rows, int64_t cols, const float* __restrict__ dy,
                                     float* dbias) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= cols) return;
  double acc = 0.0;
  for (int64_t r = 0; r < rows; ++r) acc += dy[r * cols + j];
  dbias[j] += static_cast<float>(acc);
}

template <typename From, typename To>
__global__ void cast_kernel(int64_t n, const From* __restrict__ x, To* y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = static_cast<To>(static_cast<float>(x[i]));
}

template <typename From>
void cast_from(const CudaContext& ctx, int64_t n, const From* x, Tensor& dst) {
  switch (dst.dtype()) {
    case DType::F32: cast_kernel<<<grid_for(n, kBlock), kBlock, 0, ctx.stream>>>(n, x, dst.data<float>()); break;
    case DType::BF16: cast_kernel<<<grid_for(n, kBlock), kBlock, 0, ctx.stream>>>(n, x, dst.data<__nv_bfloat16>()); break;
    case DType::F16: cast_kernel<<<grid_for(n, kBlock), kBlock, 0, ctx.stream>>>(n, x, dst.data<__half>()); break;
    default: break;
  }
}

}  // namespace

void cast(const CudaContext& ctx, const Tensor& src, Tensor& dst) {
  constexpr const char* op = "cast";
  auto is_float = [](DType d) { return d == DType::F32 || d == DType::BF16 || d == DType::F16; };
  FTUNE_CHECK(src.defined() && dst.defined() && src.device() == ctx.dev() && dst.device() == ctx.dev(),
              "{}: src and dst must be defined tensors on {}", op, ctx.dev().str());
  FTUNE_CHECK(is_float(src.dtype()) && is_float(dst.dtype()),
              "{}: {} -> {} is not a conversion between F32, BF16 and F16", op,
              dtype_name(src.dtype()), dtype_name(dst.dtype()));
  FTUNE_CHECK(src.numel() == dst.numel() && src.is_contiguous() && dst.is_contiguous(),
              "{}: src {} and dst {} differ in size or are strided", op, shape_str(src.shape()),
              shape_str(dst.shape()));
  const int64_t n = src.numel();
  if (n == 0) return;
  switch (src.dtype()) {
    case DType::F32: cast_from(ctx, n, src.data<float>(), dst); break;
    case DType::BF16: cast_from(ctx, n, src.data<__nv_bfloat16>(), dst); break;
    default: cast_from(ctx, n, src.data<__half>(), dst); break;
  }
  check_launch(ctx, op);
}

void axpy(const CudaContext& ctx, float alpha, const Tensor& x, Tensor& y) {
  constexpr const char* op = "axpy";
  check_axpy(x, y, ctx.dev());
  const int64_t n = x.numel();
  if (n == 0) return;
  axpy_kernel<<<grid_for(n, kBlock), kBlock, 0, ctx.stream>>>(n, alpha, x.f32(), y.f32());
  check_launch(ctx, op);
}

void scale(const CudaContext& ctx, Tensor& x, float alpha) {
  constexpr const char* op = "scale";
  require_tensor(op, "x", x, DType::F32, ctx.dev());
  const int64_t n = x.numel();
  if (n == 0) return;
  scale_kernel<<<grid_for(n, kBlock), kBlock, 0, ctx.stream>>>(n, alpha, x.f32());
  check_launch(ctx, op);
}

double sum_squares(const CudaContext& ctx, const Tensor& x) {
  constexpr const char* op = "sum_squares";
  require_tensor(op, "x", x, DType::F32, ctx.dev());
  const int64_t n = x.numel();
  if (n == 0) return 0.0;
  const unsigned blocks = grid_for(n, kBlock);
  Tensor partial =
      Tensor::empty({static_cast<int64_t>(blocks) + 1}, DType::F64, Device::cuda(ctx.device));
  double* pp = partial.data<double>();
  sum_squares_partial_kernel<<<blocks, kBlock, 0, ctx.stream>>>(n, x.f32(), pp);
  check_launch(ctx, op);
  sum_partials_kernel<<<1, kBlock, 0, ctx.stream>>>(blocks, pp, pp + blocks);
  check_launch(ctx, op);
  double total = 0.0;
  FTUNE_CUDA_CHECK(
      cudaMemcpyAsync(&total, pp + blocks, sizeof(double), cudaMemcpyDeviceToHost, ctx.stream));
  FTUNE_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  return total;
}

void add_bias(const CudaContext& ctx, Tensor& y, const Tensor& bias) {
  constexpr const char* op = "add_bias";
  const MatrixDims d = check_add_bias(y, bias, ctx.dev());
  const int64_t rows = d.rows, cols = d.cols;
  if (rows * cols == 0) return;
  add_bias_kernel<<<grid_for(rows * cols, kBlock), kBlock, 0, ctx.stream>>>(rows, cols, y.f32(),
                                                                            bias.f32());
  check_launch(ctx, op);
}

void bias_backward(const CudaContext& ctx, const Tensor& dy, Tensor& dbias) {
  constexpr const char* op = "bias_backward";
  const MatrixDims d = check_bias_backward(dy, dbias, ctx.dev());
  const int64_t rows = d.rows, cols = d.cols;
  if (cols == 0) return;
  const int64_t blocks = (cols + kBlock - 1) / kBlock;
  FTUNE_CHECK(blocks <= INT32_MAX, "bias_backward: {} columns are too many", cols);
  bias_backward_kernel<<<static_cast<unsigned>(blocks), kBlock, 0, ctx.stream>>>(
      rows, cols, dy.f32(), dbias.f32());
  check_launch(ctx, op);
}

}  // namespace ftune::cuda
