// Deterministic, portable shuffling: std::mt19937_64 (its output sequence is fixed by the C++
// standard) with our own Fisher-Yates and rejection sampling, instead of std::shuffle /
// std::uniform_int_distribution, whose results differ between standard libraries. The same
// seed gives the same order on every machine and in every worker process.
#pragma once
#include <cstdint>
#include <vector>

namespace ftune {

// A seed for stream `stream` (an epoch, a purpose) derived from `seed` by splitmix64, so that
// nearby seeds and streams give unrelated orders.
uint64_t mix_seed(uint64_t seed, uint64_t stream);

// A uniformly random permutation of 0..n-1 from `seed`.
std::vector<int64_t> shuffled_indices(int64_t n, uint64_t seed);

}  // namespace ftune
