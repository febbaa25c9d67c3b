// Whole-tensor vector helpers and bias terms on the GPU: y += alpha x, x *= alpha, the sum of
// squares behind gradient-norm clipping, dtype casts, the broadcast bias add and its column-sum
// backward. Elements are F32, BF16 or F16 (device/float_types.cuh): loaded to fp32, computed in
// fp32, rounded once on store. axpy, scale and cast move 16 bytes per access when the pointers
// allow it (dispatch.cuh). Reductions run in a fixed order (fixed grid for a given size, fixed
// shuffle trees), so they give the same value on every run; sums of squares and column sums
// accumulate in double like the CPU reference (src/backend/cpu/cpu_elementwise.cpp,
// cpu_gemm.cpp).
#include "backend/cuda/check.h"
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/device/float_types.cuh"
#include "backend/cuda/device/reduce.cuh"
#include "backend/cuda/dispatch.cuh"

namespace ftune::cuda {

namespace {

using device::Chunk;
using device::from_f32;
using device::to_f32;

constexpr int kBlock = 256;

// y[i] += alpha x[i] over n elements in chunks of W (n % W == 0, pointers W-aligned).
template <typename T, int W>
__global__ void axpy_kernel(int64_t chunks, float alpha, const T* x, T* y) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < chunks;
       c += int64_t(gridDim.x) * blockDim.x) {
    const Chunk<T, W> xv = device::load_chunk<T, W>(x + c * W);
    Chunk<T, W> yv = device::load_chunk<T, W>(y + c * W);
#pragma unroll
    for (int e = 0; e < W; ++e) yv.v[e] = from_f32<T>(to_f32(yv.v[e]) + alpha * to_f32(xv.v[e]));
    device::store_chunk<T, W>(y + c * W, yv);
  }
}

template <typename T, int W>
__global__ void scale_kernel(int64_t chunks, float alpha, T* x) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < chunks;
       c += int64_t(gridDim.x) * blockDim.x) {
    Chunk<T, W> xv = device::load_chunk<T, W>(x + c * W);
#pragma unroll
    for (int e = 0; e < W; ++e) xv.v[e] = from_f32<T>(to_f32(xv.v[e]) * alpha);
    device::store_chunk<T, W>(x + c * W, xv);
  }
}

// dst[i] = src[i] converted, W elements per thread step (n % W == 0, pointers aligned for W).
template <typename S, typename D, int W>
__global__ void cast_kernel(int64_t chunks, const S* __restrict__ src, D* __restrict__ dst) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < chunks;
       c += int64_t(gridDim.x) * blockDim.x) {
    const Chunk<S, W> sv = device::load_chunk<S, W>(src + c * W);
    Chunk<D, W> dv;
#pragma unroll
    for (int e = 0; e < W; ++e) dv.v[e] = from_f32<D>(to_f32(sv.v[e]));
    device::store_chunk<D, W>(dst + c * W, dv);
  }
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

template <typename T>
__global__ void add_bias_kernel(int64_t rows, int64_t cols, T* y, const T* __restrict__ bias) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    y[i] = from_f32<T>(to_f32(y[i]) + to_f32(bias[i % cols]));
}

// One thread per column sums its rows top to bottom (coalesced across the warp).
template <typename T>
__global__ void bias_backward_kernel(int64_t rows, int64_t cols, const T* __restrict__ dy,
                                     float* dbias) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= cols) return;
  double acc = 0.0;
  for (int64_t r = 0; r < rows; ++r) acc += to_f32(dy[r * cols + j]);
  dbias[j] += static_cast<float>(acc);
}

// Launches an elementwise kernel over n elements: 16-byte chunks when n and every pointer allow
// it, else one element per step. launch(W, chunks) must launch the kernel instantiated for W.
template <typename T, typename L>
void launch_chunked(int64_t n, std::initializer_list<const void*> ptrs, L&& launch) {
  constexpr int kW = device::kVecWidth<T>;
  if (n % kW == 0 && all_aligned(ptrs, 16))
    launch(std::integral_constant<int, kW>{}, n / kW);
  else
    launch(std::integral_constant<int, 1>{}, n);
}

}  // namespace

void axpy(const CudaContext& ctx, float alpha, const Tensor& x, Tensor& y) {
  constexpr const char* op = "axpy";
  check_axpy(x, y, ctx.dev());
  const int64_t n = x.numel();
  if (n == 0) return;
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = x.data<T>();
    T* yp = y.data<T>();
    launch_chunked<T>(n, {xp, yp}, [&](auto wc, int64_t chunks) {
      axpy_kernel<T, decltype(wc)::value>
          <<<grid_for(chunks, kBlock), kBlock, 0, ctx.stream>>>(chunks, alpha, xp, yp);
    });
  });
  check_launch(ctx, op);
}

void scale(const CudaContext& ctx, Tensor& x, float alpha) {
  constexpr const char* op = "scale";
  const DType dt = check_scale(x, ctx.dev());
  const int64_t n = x.numel();
  if (n == 0) return;
  dispatch_float(dt, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* xp = x.data<T>();
    launch_chunked<T>(n, {xp}, [&](auto wc, int64_t chunks) {
      scale_kernel<T, decltype(wc)::value>
          <<<grid_for(chunks, kBlock), kBlock, 0, ctx.stream>>>(chunks, alpha, xp);
    });
  });
  check_launch(ctx, op);
}

void cast(const CudaContext& ctx, const Tensor& src, Tensor& dst) {
  constexpr const char* op = "cast";
  check_cast(src, dst, ctx.dev());
  const int64_t n = src.numel();
  if (n == 0) return;
  dispatch_float(src.dtype(), op, [&](auto stag) {
    using S = typename decltype(stag)::type;
    dispatch_float(dst.dtype(), op, [&](auto dtag) {
      using D = typename decltype(dtag)::type;
      const S* sp = src.data<S>();
      D* dp = dst.data<D>();
      // 4 elements per step: at most 16 bytes of F32, 8 of BF16/F16 (aligned to 16 and 8).
      constexpr int kW = 4;
      if (n % kW == 0 && all_aligned({sp}, sizeof(S) * kW) && all_aligned({dp}, sizeof(D) * kW))
        cast_kernel<S, D, kW><<<grid_for(n / kW, kBlock), kBlock, 0, ctx.stream>>>(n / kW, sp, dp);
      else
        cast_kernel<S, D, 1><<<grid_for(n, kBlock), kBlock, 0, ctx.stream>>>(n, sp, dp);
    });
  });
  check_launch(ctx, op);
}

double sum_squares(const CudaContext& ctx, const Tensor& x) {
  constexpr const char* op = "sum_squares";
  check_sum_squares(x, ctx.dev());
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
  dispatch_float(d.act, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    add_bias_kernel<T><<<grid_for(rows * cols, kBlock), kBlock, 0, ctx.stream>>>(
        rows, cols, y.data<T>(), bias.data<T>());
  });
  check_launch(ctx, op);
}

void bias_backward(const CudaContext& ctx, const Tensor& dy, Tensor& dbias) {
  constexpr const char* op = "bias_backward";
  const MatrixDims d = check_bias_backward(dy, dbias, ctx.dev());
  const int64_t rows = d.rows, cols = d.cols;
  if (cols == 0) return;
  const int64_t blocks = (cols + kBlock - 1) / kBlock;
  FTUNE_CHECK(blocks <= INT32_MAX, "bias_backward: {} columns are too many", cols);
  dispatch_float(d.act, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    bias_backward_kernel<T><<<static_cast<unsigned>(blocks), kBlock, 0, ctx.stream>>>(
        rows, cols, dy.data<T>(), dbias.f32());
  });
  check_launch(ctx, op);
}

}  // namespace ftune::cuda
