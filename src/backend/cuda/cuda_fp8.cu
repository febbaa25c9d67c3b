// FP8 on the GPU (backend/ops.h, "FP8"): per-tensor scaled quantization (an amax reduction, then
// the codes, both reading the amax on the device: no host synchronisation) and a tiled
// transpose. Codes are bit for bit the CPU's (core/fp8.h): x * inv in one fp32 multiply, then
// __nv_cvt_float_to_fp8 with __NV_SATFINITE (round to nearest even, saturating). The product
// of two code matrices runs through cuBLASLt (cuda_gemm.cpp, gemm_fp8).
#include <cuda_fp8.h>

#include "backend/cuda/check.h"
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/device/float_types.cuh"
#include "backend/cuda/device/reduce.cuh"
#include "backend/cuda/dispatch.cuh"
#include "core/fp8.h"

namespace ftune::cuda {

namespace {

using device::to_f32;

constexpr int kBlock = 256;
constexpr int kVec = 8;  // elements per thread per step of the vectorised loops

// Eight consecutive elements (16-byte aligned: two float4 or one uint4 of 16-bit values).
template <typename T>
__device__ __forceinline__ void load8(const T* p, float (&v)[kVec]) {
  if constexpr (sizeof(T) == 4) {
    const float4 a = reinterpret_cast<const float4*>(p)[0], b = reinterpret_cast<const float4*>(p)[1];
    v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
  } else {
    const uint4 u = *reinterpret_cast<const uint4*>(p);
    const T* t = reinterpret_cast<const T*>(&u);
#pragma unroll
    for (int i = 0; i < kVec; ++i) v[i] = to_f32(t[i]);
  }
}

// Stage 1: amax = max |x| over all elements, as float bits (non-negative floats order as
// unsigned integers, so atomicMax on the bits is the float maximum; NaNs are skipped as the CPU's
// std::max skips them).
template <typename T, bool kVectorised>
__global__ void amax_kernel(int64_t n, const T* __restrict__ x, unsigned* amax_bits) {
  __shared__ float scratch[32];
  float m = 0.0f;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (kVectorised) {
    for (int64_t c = tid; c < n / kVec; c += stride) {
      float v[kVec];
      load8(x + c * kVec, v);
#pragma unroll
      for (int i = 0; i < kVec; ++i) m = fmaxf(m, fabsf(v[i]));
    }
  } else {
    for (int64_t i = tid; i < n; i += stride) m = fmaxf(m, fabsf(to_f32(x[i])));
  }
  m = device::block_max(m, scratch, 0.0f);
  if (threadIdx.x == 0 && m > 0.0f) atomicMax(amax_bits, __float_as_uint(m));
}

template <__nv_fp8_interpretation_t kFmt>
__device__ __forceinline__ uint8_t encode(float v, float inv) {
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(__fmul_rn(v, inv), __NV_SATFINITE, kFmt));
}

// Stage 2: the codes, and the scale (one thread) from the same amax.
template <typename T, __nv_fp8_interpretation_t kFmt, bool kVectorised>
__global__ void quantize_kernel(int64_t n, const T* __restrict__ x, const unsigned* amax_bits,
                                float max_finite, uint8_t* __restrict__ q, float* scale) {
  // fp8_scale_for (core/fp8.h), in the same fp32 operations.
  const float amax = __uint_as_float(*amax_bits);
  float inv = __fdiv_rn(max_finite, amax);
  const bool unit = amax == 0.0f || inv > 3.4028234e38f;
  if (unit) inv = 1.0f;
  if (blockIdx.x == 0 && threadIdx.x == 0) *scale = unit ? 1.0f : __fdiv_rn(amax, max_finite);
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (kVectorised) {
    for (int64_t c = tid; c < n / kVec; c += stride) {
      float v[kVec];
      load8(x + c * kVec, v);
      uint2 out;
      uint8_t* o = reinterpret_cast<uint8_t*>(&out);
#pragma unroll
      for (int i = 0; i < kVec; ++i) o[i] = encode<kFmt>(v[i], inv);
      reinterpret_cast<uint2*>(q)[c] = out;
    }
  } else {
    for (int64_t i = tid; i < n; i += stride) q[i] = encode<kFmt>(to_f32(x[i]), inv);
  }
}

// 32 x 32 tiles through shared memory (+1 column against bank conflicts); blocks of 32 x 8.
template <typename E>
__global__ void transpose_kernel(int64_t rows, int64_t cols, const E* __restrict__ src,
                                 E* __restrict__ dst) {
  __shared__ E tile[32][33];
  const int64_t r0 = int64_t(blockIdx.y) * 32, c0 = int64_t(blockIdx.x) * 32;
  for (int j = threadIdx.y; j < 32; j += 8) {
    const int64_t r = r0 + j, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[j][threadIdx.x] = src[r * cols + c];
  }
  __syncthreads();
  for (int j = threadIdx.y; j < 32; j += 8) {
    const int64_t c = c0 + j, r = r0 + threadIdx.x;  // dst row c, column r
    if (c < cols && r < rows) dst[c * rows + r] = tile[threadIdx.x][j];
  }
}

// Bytes with both sides multiples of 4 (FP8 weights: every Llama dimension): 64 x 64 tiles moved
// as 32-bit words, 16 x 16 threads. A word of src is 4 bytes of one row; a word of dst gathers
// the bytes of 4 consecutive src rows in one column (4x fewer, 4x wider accesses than above).
__global__ void transpose_u8x4_kernel(int64_t rows, int64_t cols, const uint8_t* __restrict__ src,
                                      uint8_t* __restrict__ dst) {
  __shared__ uint8_t tile[64][68];  // +4 bytes a row against bank conflicts, words stay aligned
  const int64_t r0 = int64_t(blockIdx.y) * 64, c0 = int64_t(blockIdx.x) * 64;
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (int r = ty; r < 64; r += 16) {
    const int64_t gr = r0 + r, gc = c0 + 4 * tx;
    if (gr < rows && gc < cols)
      *reinterpret_cast<uint32_t*>(&tile[r][4 * tx]) =
          *reinterpret_cast<const uint32_t*>(src + gr * cols + gc);
  }
  __syncthreads();
  for (int c = ty; c < 64; c += 16) {
    const int64_t oc = c0 + c, orc = r0 + 4 * tx;  // dst row oc (a src column), columns orc..+3
    if (oc < cols && orc < rows) {
      const uint32_t w = uint32_t(tile[4 * tx][c]) | (uint32_t(tile[4 * tx + 1][c]) << 8) |
                         (uint32_t(tile[4 * tx + 2][c]) << 16) | (uint32_t(tile[4 * tx + 3][c]) << 24);
      *reinterpret_cast<uint32_t*>(dst + oc * rows + orc) = w;
    }
  }
}

// c = alpha * sa * sb * acc + beta * c (gemm_fp8's fallback epilogue; acc F32 contiguous).
template <typename T>
__global__ void fp8_epilogue_kernel(int64_t m, int64_t n, const float* __restrict__ acc,
                                    const float* sa, const float* sb, float alpha, float beta,
                                    T* c, int64_t ldc) {
  const float s = alpha * *sa * *sb;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < m * n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / n, j = i % n;
    T& out = c[r * ldc + j];
    const float v = s * acc[i];
    out = device::from_f32<T>(beta == 0.0f ? v : v + beta * to_f32(out));
  }
}

// Codes to their (unscaled) values, exact in F32.
template <__nv_fp8_interpretation_t kFmt>
__global__ void fp8_decode_kernel(int64_t n, const uint8_t* __restrict__ q, float* __restrict__ out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = __half2float(__half(__nv_cvt_fp8_to_halfraw(q[i], kFmt)));
}

}  // namespace

void quantize_fp8(const CudaContext& ctx, const Tensor& x, Tensor& q, Tensor& scale) {
  constexpr const char* op = "quantize_fp8";
  const int64_t n = check_quantize_fp8(x, q, scale, ctx.dev());
  FTUNE_CHECK(ctx.ws != nullptr, "quantize_fp8: no workspaces");
  Tensor amax = workspace_view(ctx.ws->fp8_amax, {1}, DType::U32, ctx.device);
  FTUNE_CUDA_CHECK(cudaMemsetAsync(amax.raw(), 0, sizeof(unsigned), ctx.stream));
  const Fp8Format f = fp8_format(q.dtype());
  const float max_finite = fp8_max(f);
  dispatch_float(x.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* xp = x.data<T>();
    auto* qp = q.data<uint8_t>();
    const bool vec = n % kVec == 0 && all_aligned({xp}, 16) && all_aligned({qp}, 8);
    const unsigned grid = grid_for(vec ? n / kVec : n, kBlock);
    auto* bits = amax.data<unsigned>();
    if (n > 0) {
      if (vec)
        amax_kernel<T, true><<<grid, kBlock, 0, ctx.stream>>>(n, xp, bits);
      else
        amax_kernel<T, false><<<grid, kBlock, 0, ctx.stream>>>(n, xp, bits);
      check_launch(ctx, op);
    }
    auto launch = [&](auto fmt_tag) {
      constexpr __nv_fp8_interpretation_t kFmt = decltype(fmt_tag)::value;
      if (vec)
        quantize_kernel<T, kFmt, true><<<grid, kBlock, 0, ctx.stream>>>(n, xp, bits, max_finite, qp,
                                                                         scale.f32());
      else
        quantize_kernel<T, kFmt, false><<<grid, kBlock, 0, ctx.stream>>>(n, xp, bits, max_finite,
                                                                          qp, scale.f32());
    };
    if (f == Fp8Format::E4M3)
      launch(std::integral_constant<__nv_fp8_interpretation_t, __NV_E4M3>{});
    else
      launch(std::integral_constant<__nv_fp8_interpretation_t, __NV_E5M2>{});
    check_launch(ctx, op);
  });
}

void transpose(const CudaContext& ctx, const Tensor& src, Tensor& dst) {
  constexpr const char* op = "transpose";
  check_transpose(src, dst, ctx.dev());
  const int64_t rows = src.dim(0), cols = src.dim(1);
  if (rows == 0 || cols == 0) return;
  FTUNE_CHECK((cols + 31) / 32 <= INT32_MAX && (rows + 31) / 32 <= 65535,
              "transpose: [{}, {}] exceeds the grid limits", rows, cols);
  const dim3 grid(static_cast<unsigned>((cols + 31) / 32), static_cast<unsigned>((rows + 31) / 32));
  const dim3 block(32, 8);
  const bool words = dtype_size(src.dtype()) == 1 && rows % 4 == 0 && cols % 4 == 0 &&
                     all_aligned({src.raw(), dst.raw()}, 4);
  if (words) {
    FTUNE_CHECK((rows + 63) / 64 <= 65535, "transpose: [{}, {}] exceeds the grid limits", rows, cols);
    const dim3 grid64(static_cast<unsigned>((cols + 63) / 64), static_cast<unsigned>((rows + 63) / 64));
    transpose_u8x4_kernel<<<grid64, dim3(16, 16), 0, ctx.stream>>>(rows, cols, src.data<uint8_t>(),
                                                                   dst.data<uint8_t>());
    check_launch(ctx, op);
    return;
  }
  switch (dtype_size(src.dtype())) {
    case 1:
      transpose_kernel<uint8_t><<<grid, block, 0, ctx.stream>>>(rows, cols, src.data<uint8_t>(),
                                                                dst.data<uint8_t>());
      break;
    case 2:
      transpose_kernel<uint16_t><<<grid, block, 0, ctx.stream>>>(rows, cols, src.data<uint16_t>(),
                                                                 dst.data<uint16_t>());
      break;
    default:
      transpose_kernel<uint32_t><<<grid, block, 0, ctx.stream>>>(rows, cols, src.data<uint32_t>(),
                                                                 dst.data<uint32_t>());
  }
  check_launch(ctx, op);
}

Tensor fp8_decode(const CudaContext& ctx, const Tensor& q) {
  Tensor out = Tensor::empty(q.shape(), DType::F32, ctx.dev());
  const int64_t n = q.numel();
  if (n == 0) return out;
  const unsigned grid = grid_for(n, kBlock);
  if (q.dtype() == DType::F8_E4M3)
    fp8_decode_kernel<__NV_E4M3><<<grid, kBlock, 0, ctx.stream>>>(n, q.data<uint8_t>(), out.f32());
  else
    fp8_decode_kernel<__NV_E5M2><<<grid, kBlock, 0, ctx.stream>>>(n, q.data<uint8_t>(), out.f32());
  check_launch(ctx, "gemm_fp8");
  return out;
}

void fp8_epilogue(const CudaContext& ctx, const Tensor& acc, const Tensor& a_scale,
                  const Tensor& b_scale, float alpha, float beta, Tensor& c) {
  const int64_t m = c.dim(0), n = c.dim(1);
  if (m == 0 || n == 0) return;
  dispatch_float(c.dtype(), "gemm_fp8", [&](auto tag) {
    using T = typename decltype(tag)::type;
    fp8_epilogue_kernel<T><<<grid_for(m * n, kBlock), kBlock, 0, ctx.stream>>>(
        m, n, acc.f32(), a_scale.f32(), b_scale.f32(), alpha, beta, c.data<T>(), c.row_stride());
  });
  check_launch(ctx, "gemm_fp8");
}

}  // namespace ftune::cuda
