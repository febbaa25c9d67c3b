// The activation element types on the device (float, __nv_bfloat16, __half): loads widen to
// fp32, stores round once to nearest even (__float2bfloat16_rn / __float2half_rn, the rounding
// of core/dtype.h), and Chunk<T, W>, W consecutive elements moved as one aligned access
// (W = 16 / sizeof(T) gives 16-byte loads and stores; W = 1 is the scalar fallback).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace ftune::device {

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }

template <typename T>
__device__ __forceinline__ T from_f32(float v);
template <>
__device__ __forceinline__ float from_f32<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <>
__device__ __forceinline__ __half from_f32<__half>(float v) {
  return __float2half_rn(v);
}

// W elements of T as one naturally aligned unit (sizeof(T) * W must be a power of two <= 16).
template <typename T, int W>
struct alignas(sizeof(T) * W) Chunk {
  T v[W];
};

// Elements per 16-byte access.
template <typename T>
constexpr int kVecWidth = static_cast<int>(16 / sizeof(T));

template <typename T, int W>
__device__ __forceinline__ Chunk<T, W> load_chunk(const T* p) {
  return *reinterpret_cast<const Chunk<T, W>*>(p);
}
template <typename T, int W>
__device__ __forceinline__ void store_chunk(T* p, const Chunk<T, W>& c) {
  *reinterpret_cast<Chunk<T, W>*>(p) = c;
}

}  // namespace ftune::device
