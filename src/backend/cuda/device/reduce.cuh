// Warp and block reductions (sum, max) by register shuffles. The combination order is fixed
// by the block size, so a kernel's result does not change from run to run. Block versions need
// blockDim.x to be a multiple of 32 (at most 1024) and a __shared__ scratch of 32 elements;
// every thread of the block must call them and gets the result.
#pragma once
#include <cuda_runtime.h>

namespace ftune::device {

template <typename T>
__device__ inline T warp_sum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T>
__device__ inline T warp_max(T v) {
  for (int o = 16; o > 0; o >>= 1) {
    const T other = __shfl_xor_sync(0xffffffffu, v, o);
    v = other > v ? other : v;
  }
  return v;
}

// Combines one value per warp (lane 0 of warp w wrote scratch[w]) in warp 0.
template <typename T, typename Op>
__device__ inline T block_combine(T v, T* scratch, T identity, Op warp_op) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = static_cast<int>(blockDim.x) >> 5;
  v = warp_op(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < warps ? scratch[lane] : identity;
    v = warp_op(v);
    if (lane == 0) scratch[0] = v;
  }
  __syncthreads();
  return scratch[0];
}

template <typename T>
__device__ inline T block_sum(T v, T* scratch) {
  return block_combine(v, scratch, T(0), [](T x) { return warp_sum(x); });
}

template <typename T>
__device__ inline T block_max(T v, T* scratch, T lowest) {
  return block_combine(v, scratch, lowest, [](T x) { return warp_max(x); });
}

}  // namespace ftune::device
