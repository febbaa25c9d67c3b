// The dropout keep-decision of src/backend/dropout_hash.cpp, ported as a __host__ __device__
// function so CUDA masks equal the CPU backend's bit for bit (ops.h: dropout_forward):
//   key = mix(seed ^ G);  h = mix(key + i * G);  u = float(h >> 40) * 2^-24;  keep iff u >= p
// with G = 0x9E3779B97F4A7C15 and mix the splitmix64 finalizer. All uint64 arithmetic wraps;
// h >> 40 has 24 bits, so u is exact in fp32 on host and device alike.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace ftune::device {

constexpr uint64_t kDropoutGolden = 0x9E3779B97F4A7C15ull;

__host__ __device__ inline uint64_t splitmix64_mix(uint64_t z) {
  z ^= z >> 30;
  z *= 0xBF58476D1CE4E5B9ull;
  z ^= z >> 27;
  z *= 0x94D049BB133111EBull;
  z ^= z >> 31;
  return z;
}

// The per-seed key; hoisted out of per-element loops (it does not depend on the index).
__host__ __device__ inline uint64_t dropout_key(uint64_t seed) {
  return splitmix64_mix(seed ^ kDropoutGolden);
}

__host__ __device__ inline bool dropout_keep_from_key(uint64_t key, uint64_t index, float p) {
  const uint64_t h = splitmix64_mix(key + index * kDropoutGolden);
  const float u = static_cast<float>(h >> 40) * 0x1p-24f;
  return u >= p;
}

__host__ __device__ inline bool dropout_keep(uint64_t seed, uint64_t index, float p) {
  return dropout_keep_from_key(dropout_key(seed), index, p);
}

}  // namespace ftune::device
