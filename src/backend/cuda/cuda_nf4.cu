// NF4 dequantization on the GPU (backend/ops.h dequantize_nf4): the frozen QLoRA weight is
// expanded into the compute dtype just before its GEMM, one matrix at a time, into a workspace
// the model reuses. Bit for bit the CPU reference (core/nf4.cpp dequantize_nf4_cpu) and
// bitsandbytes' kDequantizeBlockwise: every product and sum is one correctly rounded fp32
// operation (__fmul_rn / __fadd_rn: nvcc would otherwise fuse the nested scale's multiply and
// add into one FMA, which rounds once where bnb rounds twice).
#include "backend/cuda/check.h"
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/device/float_types.cuh"
#include "backend/cuda/dispatch.cuh"

namespace ftune::cuda {

namespace {

using device::from_f32;

constexpr int kBlock = 256;

// One thread per packed byte k: elements 2k (high nibble) and 2k+1 (low nibble), both in block
// 2k / blocksize (blocksize is even). nested: absmax holds U8 codes of nested_code.
template <typename T, bool kNested>
__global__ void dequantize_nf4_kernel(int64_t n, int64_t blocksize, const uint8_t* __restrict__ packed,
                                      const float* __restrict__ code, const void* __restrict__ absmax,
                                      const float* __restrict__ nested_absmax,
                                      const float* __restrict__ nested_code,
                                      int64_t nested_blocksize, float offset, T* __restrict__ out) {
  __shared__ float s_code[16];
  if (threadIdx.x < 16) s_code[threadIdx.x] = code[threadIdx.x];
  __syncthreads();
  const int64_t bytes = (n + 1) / 2;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < bytes;
       k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = (2 * k) / blocksize;
    float amax;
    if (kNested) {
      const uint8_t q = static_cast<const uint8_t*>(absmax)[b];
      amax = __fadd_rn(__fmul_rn(nested_code[q], nested_absmax[b / nested_blocksize]), offset);
    } else {
      amax = static_cast<const float*>(absmax)[b];
    }
    const uint8_t byte = packed[k];
    out[2 * k] = from_f32<T>(__fmul_rn(s_code[byte >> 4], amax));
    if (2 * k + 1 < n) out[2 * k + 1] = from_f32<T>(__fmul_rn(s_code[byte & 0x0f], amax));
  }
}

}  // namespace

void dequantize_nf4(const CudaContext& ctx, const Nf4Weight& w, Tensor& out) {
  constexpr const char* op = "dequantize_nf4";
  check_dequantize_nf4(w, out, ctx.dev());
  const int64_t n = w.numel();
  if (n == 0) return;
  dispatch_float(out.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const unsigned grid = grid_for((n + 1) / 2, kBlock);
    if (w.nested())
      dequantize_nf4_kernel<T, true><<<grid, kBlock, 0, ctx.stream>>>(
          n, w.blocksize, w.packed.data<uint8_t>(), w.code.data<float>(), w.absmax.raw(),
          w.nested_absmax.data<float>(), w.nested_code.data<float>(), w.nested_blocksize,
          w.nested_offset, out.data<T>());
    else
      dequantize_nf4_kernel<T, false><<<grid, kBlock, 0, ctx.stream>>>(
          n, w.blocksize, w.packed.data<uint8_t>(), w.code.data<float>(), w.absmax.raw(), nullptr,
          nullptr, 1, 0.0f, out.data<T>());
  });
  check_launch(ctx, op);
}

}  // namespace ftune::cuda
