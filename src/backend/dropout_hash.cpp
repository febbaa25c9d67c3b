// The dropout mask hash shared by every backend (the CUDA kernel must compute the same bits).
// keep(seed, i) for drop probability p:
//   key = mix(seed ^ 0x9E3779B97F4A7C15)
//   h   = mix(key + i * 0x9E3779B97F4A7C15)          (uint64 arithmetic, wrapping)
//   u   = float(h >> 40) * 2^-24                      (24 bits: exact in fp32, u in [0, 1))
//   keep iff u >= p
// where mix is the splitmix64 finalizer (Steele, Lea, Flood 2014; the constants of
// Java's SplittableRandom): z ^= z>>30; z *= 0xBF58476D1CE4E5B9; z ^= z>>27;
// z *= 0x94D049BB133111EB; z ^= z>>31. Hashing the seed first keeps masks of nearby seeds
// unrelated; the element index is the flat index into the tensor.
#include "backend/ops.h"

namespace ftune {

namespace {
constexpr uint64_t kGolden = 0x9E3779B97F4A7C15ull;

uint64_t splitmix64_mix(uint64_t z) {
  z ^= z >> 30;
  z *= 0xBF58476D1CE4E5B9ull;
  z ^= z >> 27;
  z *= 0x94D049BB133111EBull;
  z ^= z >> 31;
  return z;
}
}  // namespace

bool dropout_keep(uint64_t seed, uint64_t index, float p) {
  const uint64_t key = splitmix64_mix(seed ^ kGolden);
  const uint64_t h = splitmix64_mix(key + index * kGolden);
  const float u = static_cast<float>(h >> 40) * 0x1p-24f;
  return u >= p;
}

}  // namespace ftune
