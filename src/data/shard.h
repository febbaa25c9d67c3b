// Data-parallel sharding of the epoch's global micro-batch list (packing.h with rank 0 of 1
// builds that list: the same on every rank and for every number of processes, deterministic
// from data.seed and the epoch).
//
// Training consumes the list in consecutive global windows of gradient_accumulation_steps x
// world micro-batches (the last window of an epoch may be shorter). A window is cut into
// contiguous per-rank pieces in rank order, sized by the shard weights (largest remainder), so
// every micro-batch of every window goes to exactly one rank: no example is dropped or
// repeated, and a rank may get none (its gradients are then zero). With equal weights the
// pieces differ by at most one micro-batch.
#pragma once
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace ftune {

// Micro-batches per rank for a window of `count`: sizes proportional to weights (empty =
// equal), summing to count; the remainder goes to the largest fractional parts, ties to the
// lower rank. Throws when a weight is not positive.
std::vector<int64_t> split_by_weights(int64_t count, std::span<const double> weights, int world);

// Rank `rank`'s micro-batches [first, second) of the window [begin, end).
std::pair<int64_t, int64_t> window_share(int64_t begin, int64_t end,
                                         std::span<const double> weights, int rank, int world);

// The largest share of the window [begin, end) any rank gets (a sharded base runs that many
// passes on every rank).
int64_t most_share(int64_t begin, int64_t end, std::span<const double> weights, int world);

}  // namespace ftune
