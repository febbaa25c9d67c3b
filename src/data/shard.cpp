// Splitting windows of the global micro-batch list between ranks (rules in shard.h).
#include "data/shard.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace ftune {

std::vector<int64_t> split_by_weights(int64_t count, std::span<const double> weights, int world) {
  FTUNE_CHECK(world >= 1, "sharding: world size must be >= 1, got {}", world);
  FTUNE_CHECK(count >= 0, "sharding: negative count {}", count);
  FTUNE_CHECK(weights.empty() || static_cast<int>(weights.size()) == world,
              "distributed.shard_weights has {} entries for {} ranks", weights.size(), world);
  std::vector<double> w(static_cast<size_t>(world), 1.0);
  for (size_t r = 0; r < weights.size(); ++r) {
    FTUNE_CHECK(weights[r] > 0 && std::isfinite(weights[r]),
                "distributed.shard_weights: weight of rank {} must be positive, got {}", r,
                weights[r]);
    w[r] = weights[r];
  }
  const double total = std::accumulate(w.begin(), w.end(), 0.0);
  std::vector<int64_t> n(static_cast<size_t>(world));
  std::vector<std::pair<double, int>> frac;
  int64_t given = 0;
  for (int r = 0; r < world; ++r) {
    const double exact = static_cast<double>(count) * w[r] / total;
    n[r] = static_cast<int64_t>(std::floor(exact));
    given += n[r];
    frac.emplace_back(exact - static_cast<double>(n[r]), r);
  }
  std::stable_sort(frac.begin(), frac.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first + 1e-12; });
  for (size_t i = 0; given < count; ++i, ++given) ++n[static_cast<size_t>(frac[i % frac.size()].second)];
  return n;
}

std::pair<int64_t, int64_t> window_share(int64_t begin, int64_t end,
                                         std::span<const double> weights, int rank, int world) {
  FTUNE_CHECK(rank >= 0 && rank < world, "sharding: rank {} of world {}", rank, world);
  FTUNE_CHECK(end >= begin, "sharding: window [{}, {}) is empty backwards", begin, end);
  const std::vector<int64_t> n = split_by_weights(end - begin, weights, world);
  int64_t first = begin;
  for (int r = 0; r < rank; ++r) first += n[static_cast<size_t>(r)];
  return {first, first + n[static_cast<size_t>(rank)]};
}

int64_t most_share(int64_t begin, int64_t end, std::span<const double> weights, int world) {
  int64_t most = 0;
  for (int64_t n : split_by_weights(end - begin, weights, world)) most = std::max(most, n);
  return most;
}

}  // namespace ftune
