// Pieces shared by the flash-attention kernels (flash_forward.cuh, flash_backward.cuh): the
// padded shared-memory tiles they stage Q, K, V and dO in, and the log2 constants of the
// exp2-based softmax.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "backend/cuda/device/mma.cuh"

namespace ftune::device {

constexpr float kFlashLog2e = 1.4426950408889634f;
constexpr float kFlashLn2 = 0.6931471805599453f;

// Copies rows [r0, r0 + ROWS) of a [*, row_stride] matrix (columns [0, HD) from `base`) into a
// shared tile with rows of HD + 8 elements (the 16-byte pad makes the 8 row addresses of an
// ldmatrix fall in distinct bank groups); rows at or past `rend` are zero-filled.
template <int HD, int ROWS, int THREADS, typename T>
__device__ inline void flash_load_tile(T* tile, const T* base, int64_t row_stride, int r0,
                                       int rend) {
  constexpr int kChunks = HD / 8;  // 16-byte chunks per row
  constexpr int kLd = HD + 8;
  for (int idx = threadIdx.x; idx < ROWS * kChunks; idx += THREADS) {
    const int r = idx / kChunks, c = idx % kChunks;
    const int row = r0 + r;
    const bool valid = row < rend;
    const T* src = base + (valid ? static_cast<int64_t>(row) * row_stride : 0) + c * 8;
    cp_async_16(tile + r * kLd + c * 8, src, valid);
  }
}

}  // namespace ftune::device
