// Host-side dispatch from a tensor's DType to the device element type of its kernels, and the
// alignment test behind the 16-byte vectorised paths. Only .cu files include it.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <initializer_list>

#include "core/dtype.h"
#include "core/error.h"

namespace ftune::cuda {

template <typename T>
struct TypeTag {
  using type = T;
};

// Calls f(TypeTag<T>{}) with T = float, __nv_bfloat16 or __half for F32, BF16, F16.
template <typename F>
void dispatch_float(DType dt, const char* op, F&& f) {
  switch (dt) {
    case DType::F32: f(TypeTag<float>{}); return;
    case DType::BF16: f(TypeTag<__nv_bfloat16>{}); return;
    case DType::F16: f(TypeTag<__half>{}); return;
    default: fail("{}: dtype {} is not supported by the CUDA kernels", op, dtype_name(dt));
  }
}

// True when every pointer is aligned to `bytes`.
inline bool all_aligned(std::initializer_list<const void*> ptrs, uintptr_t bytes) {
  for (const void* p : ptrs)
    if (reinterpret_cast<uintptr_t>(p) % bytes != 0) return false;
  return true;
}

// A row-wise kernel over rows of `cols` elements may use 16-byte chunks when the row length is a
// multiple of the chunk and every base pointer is 16-byte aligned (so every row start is too).
template <typename T>
bool can_vectorize(int64_t cols, std::initializer_list<const void*> ptrs) {
  constexpr int64_t w = static_cast<int64_t>(16 / sizeof(T));
  return cols % w == 0 && all_aligned(ptrs, 16);
}

}  // namespace ftune::cuda
