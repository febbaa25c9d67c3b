// Packing, shuffling and sharding: every example appears exactly once, positions restart per
// example, doc_start is right, no example crosses a row, padding is masked, orders are
// deterministic, and ranks cover all rows exactly once with balanced tokens.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <set>

#include "core/batch.h"
#include "core/error.h"
#include "data/packing.h"
#include "data/shuffle.h"

namespace ftune {
namespace {

constexpr int32_t kPad = 7;

// Example i has length len[i]; its ids encode (i, position) so each token is traceable:
// id = 1000 * (i + 1) + position. Even positions are trained, odd masked.
std::vector<TokenizedExample> make_examples(const std::vector<int>& lens) {
  std::vector<TokenizedExample> out;
  for (size_t i = 0; i < lens.size(); ++i) {
    TokenizedExample e;
    for (int p = 0; p < lens[i]; ++p) {
      const int32_t id = 1000 * static_cast<int32_t>(i + 1) + p;
      e.ids.push_back(id);
      e.labels.push_back(p % 2 == 0 ? id : kIgnoreIndex);
    }
    out.push_back(e);
  }
  return out;
}

std::vector<int> random_lengths(int n, int max_len, uint64_t seed) {
  std::vector<int> lens;
  uint64_t x = seed;
  for (int i = 0; i < n; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    lens.push_back(1 + static_cast<int>((x >> 33) % static_cast<uint64_t>(max_len)));
  }
  return lens;
}

// Checks one batch's layout and returns the examples it holds (by index), in order.
std::vector<int> check_batch(const Batch& b, const std::vector<TokenizedExample>& ex,
                             const BatchOptions& opt) {
  b.validate();
  EXPECT_EQ(b.rows, opt.rows);
  EXPECT_LE(b.seq_len, opt.seq_len);  // exact width: MakeBatchesRowsAsWideAsTheLongestRow
  std::vector<int> found;
  const int64_t n = b.tokens();
  int64_t i = 0;
  while (i < n) {
    const int32_t id = b.input_ids[i];
    if (id == kPad && b.labels[i] == kIgnoreIndex && b.doc_start[i] == i) {
      EXPECT_EQ(b.position_ids[i], 0);  // padding: own one-token document, position 0
      ++i;
      continue;
    }
    const int e = id / 1000 - 1;
    EXPECT_GE(e, 0);
    if (e < 0) return found;
    const auto& want = ex[e];
    const int64_t start = i;
    EXPECT_EQ(b.input_ids[i] % 1000, 0) << "an example starts at its first token";
    for (size_t p = 0; p < want.ids.size(); ++p, ++i) {
      EXPECT_LT(i, n);
      EXPECT_EQ(b.input_ids[i], want.ids[p]);
      EXPECT_EQ(b.labels[i], want.labels[p]);
      EXPECT_EQ(b.position_ids[i], static_cast<int32_t>(p));
      EXPECT_EQ(b.doc_start[i], start);
      EXPECT_EQ(start / b.seq_len, i / b.seq_len) << "example crosses a row";
    }
    found.push_back(e);
  }
  return found;
}

TEST(Shuffle, DeterministicAndEqualToAnIndependentFisherYates) {
  const auto a = shuffled_indices(10, 123);
  EXPECT_EQ(a, shuffled_indices(10, 123));
  std::vector<int64_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> iota(10);
  std::iota(iota.begin(), iota.end(), 0);
  EXPECT_EQ(sorted, iota);
  EXPECT_NE(a, shuffled_indices(10, 124));
  EXPECT_NE(mix_seed(1, 0), mix_seed(1, 1));
  EXPECT_NE(mix_seed(1, 0), mix_seed(2, 0));
  // Independent reference: Fisher-Yates from the standard-fixed mt19937_64 stream, with the
  // rejection threshold 2^64 mod (i+1), written out again here.
  std::mt19937_64 rng(123);
  std::vector<int64_t> ref = iota;
  for (int64_t i = 9; i > 0; --i) {
    const uint64_t bound = static_cast<uint64_t>(i) + 1;
    const uint64_t threshold = (~uint64_t{0} - bound + 1) % bound;
    uint64_t r;
    do r = rng(); while (r < threshold);
    std::swap(ref[i], ref[r % bound]);
  }
  EXPECT_EQ(a, ref);
  // Every position is reachable: over many seeds each index lands in slot 0.
  std::set<int64_t> first;
  for (uint64_t s = 0; s < 200; ++s) first.insert(shuffled_indices(10, s)[0]);
  EXPECT_EQ(first.size(), 10u);
}

TEST(Packing, FirstFitFillsRowsAndKeepsEveryExampleOnce) {
  // lengths 5,4,3,3,2,1 into rows of 8, in this order: [5,3] [4,3,1] [2]
  const std::vector<int64_t> lens = {5, 4, 3, 3, 2, 1};
  const std::vector<int64_t> order = {0, 1, 2, 3, 4, 5};
  const auto rows = pack_rows(lens, order, 8, true);
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0], (std::vector<int64_t>{0, 2}));
  EXPECT_EQ(rows[1], (std::vector<int64_t>{1, 3, 5}));
  EXPECT_EQ(rows[2], (std::vector<int64_t>{4}));
  const auto unpacked = pack_rows(lens, order, 8, false);
  EXPECT_EQ(unpacked.size(), 6u);
  EXPECT_THROW(pack_rows({9}, {0}, 8, true), Error);
}

TEST(Packing, BatchesHoldEveryExampleOnceWithCorrectLayout) {
  const auto lens = random_lengths(137, 40, 5);
  const auto ex = make_examples(lens);
  for (bool packing : {true, false}) {
    for (int64_t rows : {1, 3}) {
      BatchOptions opt;
      opt.seq_len = 48;
      opt.rows = rows;
      opt.packing = packing;
      opt.seed = 9;
      opt.pad_id = kPad;
      const auto batches = make_batches(ex, opt);
      std::vector<int> count(ex.size(), 0);
      int64_t tokens = 0, padding = 0;
      for (const auto& b : batches) {
        for (int e : check_batch(b, ex, opt)) ++count[e];
        for (int64_t i = 0; i < b.tokens(); ++i) padding += (b.input_ids[i] == kPad);
        tokens += b.tokens();
      }
      for (size_t e = 0; e < ex.size(); ++e) EXPECT_EQ(count[e], 1) << "example " << e;
      const int64_t total = std::accumulate(lens.begin(), lens.end(), int64_t{0});
      EXPECT_EQ(tokens - padding, total);
      if (packing) {
        // Packed rows are well filled: fewer rows than examples, little padding.
        EXPECT_LT(static_cast<double>(padding) / tokens, 0.25) << rows;
      } else {
        EXPECT_EQ(static_cast<int64_t>(batches.size()), (137 + rows - 1) / rows);
      }
    }
  }
}

// Memory follows the data: rows are as wide as the longest row, not as max_seq_length (issue 8:
// max_seq_length 1,048,576 used to allocate rows of a million tokens for 1,122 tokens of data).
TEST(Packing, MakeBatchesRowsAsWideAsTheLongestRow) {
  const auto ex = make_examples({5, 9, 3, 7});
  BatchOptions opt;
  opt.seq_len = 1048576;
  opt.rows = 2;
  opt.packing = false;
  opt.shuffle = false;
  opt.pad_id = kPad;
  auto batches = make_batches(ex, opt);
  ASSERT_EQ(batches.size(), 2u);
  for (const auto& b : batches) {
    check_batch(b, ex, opt);
    EXPECT_EQ(b.seq_len, 9);
    EXPECT_EQ(b.tokens(), 18);
  }
  // Packed: 5+9+3+7 = 24 tokens fit one row of 1M; the row is 24 wide.
  opt.packing = true;
  batches = make_batches(ex, opt);
  ASSERT_EQ(batches.size(), 1u);
  EXPECT_EQ(batches[0].seq_len, 24);
  EXPECT_EQ(batches[0].tokens(), 48);  // the second row is all padding
  // seq_len 10: first fit gives rows {5,3} {9} {7}, so rows are 9 wide.
  opt.seq_len = 10;
  batches = make_batches(ex, opt);
  ASSERT_EQ(batches.size(), 2u);
  for (const auto& b : batches) EXPECT_EQ(b.seq_len, 9);
}

TEST(Packing, ShuffleIsDeterministicPerSeedAndEpoch) {
  const auto ex = make_examples(random_lengths(60, 20, 11));
  BatchOptions opt;
  opt.seq_len = 32;
  opt.rows = 2;
  opt.pad_id = kPad;
  auto ids = [&](const BatchOptions& o) {
    std::vector<int32_t> all;
    for (const auto& b : make_batches(ex, o)) all.insert(all.end(), b.input_ids.begin(), b.input_ids.end());
    return all;
  };
  const auto a = ids(opt);
  EXPECT_EQ(a, ids(opt));
  BatchOptions other_epoch = opt;
  other_epoch.epoch = 1;
  EXPECT_NE(a, ids(other_epoch));
  BatchOptions other_seed = opt;
  other_seed.seed = 43;
  EXPECT_NE(a, ids(other_seed));
  // shuffle off: file order, rows filled first-fit in that order.
  BatchOptions ordered = opt;
  ordered.shuffle = false;
  ordered.packing = false;
  const auto b = make_batches(ex, ordered);
  for (size_t e = 0; e < ex.size(); ++e) {
    EXPECT_EQ(b[e / 2].input_ids[(e % 2) * b[e / 2].seq_len], ex[e].ids[0]);
  }
}

TEST(Sharding, RanksCoverEveryRowOnceInLockstepWithBalancedTokens) {
  const auto lens = random_lengths(101, 64, 3);
  const auto ex = make_examples(lens);
  for (int world : {1, 2, 3, 4, 8}) {
    for (int64_t rows : {1, 2, 5}) {
      BatchOptions opt;
      opt.seq_len = 64;
      opt.rows = rows;
      opt.seed = 1;
      opt.pad_id = kPad;
      opt.world = world;
      // Rows of world 1 = the reference: each must appear on exactly one rank.
      opt.rank = 0;
      BatchOptions one = opt;
      one.world = 1;
      std::multiset<std::vector<int32_t>> reference_rows;
      for (const auto& b : make_batches(ex, one)) {
        for (int64_t r = 0; r < b.rows; ++r) {
          std::vector<int32_t> row(b.input_ids.begin() + r * 64, b.input_ids.begin() + (r + 1) * 64);
          if (row != std::vector<int32_t>(64, kPad)) reference_rows.insert(row);
        }
      }
      std::multiset<std::vector<int32_t>> seen;
      std::vector<int64_t> rank_tokens;
      size_t batches_per_rank = 0;
      int max_row_tokens = 0;
      for (int rank = 0; rank < world; ++rank) {
        opt.rank = rank;
        const auto batches = make_batches(ex, opt);
        if (rank == 0) batches_per_rank = batches.size();
        EXPECT_EQ(batches.size(), batches_per_rank) << "ranks must step in lockstep";
        int64_t t = 0;
        for (const auto& b : batches) {
          check_batch(b, ex, opt);
          for (int64_t r = 0; r < b.rows; ++r) {
            std::vector<int32_t> row(b.input_ids.begin() + r * 64, b.input_ids.begin() + (r + 1) * 64);
            const int used = static_cast<int>(64 - std::count(row.begin(), row.end(), kPad));
            max_row_tokens = std::max(max_row_tokens, used);
            t += used;
            if (used > 0) seen.insert(row);
          }
        }
        rank_tokens.push_back(t);
      }
      EXPECT_EQ(seen, reference_rows) << "world " << world << " rows " << rows;
      const auto [lo, hi] = std::minmax_element(rank_tokens.begin(), rank_tokens.end());
      EXPECT_LE(*hi - *lo, max_row_tokens) << "world " << world;
    }
  }
}

TEST(Sharding, ShardRowsRuleOnAKnownCase) {
  // 5 rows with tokens 10,50,30,40,20 over 2 ranks: by size 1(50),3(40),2(30),4(20),0(10);
  // snake: r0,r1,r1,r0,r0 -> rank0 {0,1,4}, rank1 {2,3}; rows per micro-batch 2 -> 2 each.
  const std::vector<int64_t> tokens = {10, 50, 30, 40, 20};
  EXPECT_EQ(shard_rows(tokens, 2, 0, 2), (std::vector<std::vector<int64_t>>{{0, 1}, {4, -1}}));
  EXPECT_EQ(shard_rows(tokens, 2, 1, 2), (std::vector<std::vector<int64_t>>{{2, 3}, {-1, -1}}));
  // More ranks than rows: everyone gets one micro-batch; the rank without rows gets padding.
  EXPECT_EQ(shard_rows({5, 6}, 1, 2, 3), (std::vector<std::vector<int64_t>>{{-1}}));
  EXPECT_THROW(shard_rows(tokens, 1, 2, 2), Error);
}

}  // namespace
}  // namespace ftune
