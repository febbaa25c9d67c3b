// Inverted dropout (torch.nn.Dropout semantics) with the counter-based mask of
// src/backend/dropout_hash.cpp, ported in device/dropout_hash.cuh: mask[i] = keep(seed, i), so
// CUDA and CPU masks are identical bit for bit. Kept values are scaled by 1/(1-p) computed in
// fp32 on the host exactly as the CPU backend does (cpu_dropout.cpp).
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/device/dropout_hash.cuh"
#include "backend/cuda/device/float_types.cuh"
#include "backend/cuda/dispatch.cuh"

namespace ftune::cuda {

namespace {

constexpr int kBlock = 256;

using device::from_f32;
using device::to_f32;

template <typename T>
__global__ void dropout_forward_kernel(int64_t n, uint64_t key, float p, float keep_scale,
                                       const T* x, T* out, uint8_t* mask) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const bool keep = device::dropout_keep_from_key(key, static_cast<uint64_t>(i), p);
    mask[i] = keep ? 1 : 0;
    out[i] = from_f32<T>(keep ? to_f32(x[i]) * keep_scale : 0.0f);
  }
}

// dy and dx may be the same tensor (the LoRA backward applies it in place).
template <typename T>
__global__ void dropout_backward_kernel(int64_t n, float keep_scale, const T* dy,
                                        const uint8_t* __restrict__ mask, T* dx) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    dx[i] = from_f32<T>(mask[i] ? to_f32(dy[i]) * keep_scale : 0.0f);
}
// x and out may be the same tensor.
template <typename T>
__global__ void dropout_apply_kernel(int64_t n, uint64_t key, uint64_t offset, float p,
                                     float keep_scale, const T* x, T* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const bool keep = device::dropout_keep_from_key(key, offset + static_cast<uint64_t>(i), p);
    out[i] = from_f32<T>(keep ? to_f32(x[i]) * keep_scale : 0.0f);
  }
}
}  // namespace

void dropout_apply(const CudaContext& ctx, const Tensor& x, float p, uint64_t seed,
                   int64_t index_offset, Tensor& out) {
  constexpr const char* op = "dropout_apply";
  check_dropout_apply(x, p, index_offset, out, ctx.dev());
  const int64_t n = x.numel();
  if (n == 0) return;
  const float keep_scale = 1.0f / (1.0f - p);
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dropout_apply_kernel<T><<<grid_for(n, kBlock), kBlock, 0, ctx.stream>>>(
        n, device::dropout_key(seed), static_cast<uint64_t>(index_offset), p, keep_scale,
        x.data<T>(), out.data<T>());
  });
  check_launch(ctx, op);
}

void dropout_forward(const CudaContext& ctx, const Tensor& x, float p, uint64_t seed, Tensor& out,
                     Tensor& mask) {
  constexpr const char* op = "dropout_forward";
  check_dropout_forward(x, p, out, mask, ctx.dev());
  const int64_t n = x.numel();
  if (n == 0) return;
  const float keep_scale = 1.0f / (1.0f - p);
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dropout_forward_kernel<T><<<grid_for(n, kBlock), kBlock, 0, ctx.stream>>>(
        n, device::dropout_key(seed), p, keep_scale, x.data<T>(), out.data<T>(),
        mask.data<uint8_t>());
  });
  check_launch(ctx, op);
}

void dropout_backward(const CudaContext& ctx, const Tensor& dy, const Tensor& mask, float p,
                      Tensor& dx) {
  constexpr const char* op = "dropout_backward";
  check_dropout_backward(dy, mask, p, dx, ctx.dev());
  const int64_t n = dy.numel();
  if (n == 0) return;
  const float keep_scale = 1.0f / (1.0f - p);
  dispatch_float(dy.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dropout_backward_kernel<T><<<grid_for(n, kBlock), kBlock, 0, ctx.stream>>>(
        n, keep_scale, dy.data<T>(), mask.data<uint8_t>(), dx.data<T>());
  });
  check_launch(ctx, op);
}

}  // namespace ftune::cuda
