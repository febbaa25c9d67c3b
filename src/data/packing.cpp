// Packing, sharding and micro-batch assembly (the rules are in packing.h).
#include "data/packing.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"
#include "data/shuffle.h"

namespace ftune {

namespace {

// First-fit over rows in O(log R) per example: a max segment tree over the room left in each
// row. Rows that are not opened yet have full room and sit to the right of every open row, so
// "leftmost row with enough room" is first-fit among open rows, else the next new row.
class FirstFitRows {
 public:
  FirstFitRows(size_t max_rows, int64_t capacity) {
    size_ = 1;
    while (size_ < std::max<size_t>(max_rows, 1)) size_ *= 2;
    tree_.assign(2 * size_, 0);
    for (size_t i = 0; i < max_rows; ++i) tree_[size_ + i] = capacity;
    for (size_t i = size_ - 1; i >= 1; --i) tree_[i] = std::max(tree_[2 * i], tree_[2 * i + 1]);
  }
  // Index of the row that takes `len` tokens; its room shrinks by len.
  size_t place(int64_t len) {
    size_t node = 1;
    while (node < size_) node = tree_[2 * node] >= len ? 2 * node : 2 * node + 1;
    const size_t row = node - size_;
    tree_[node] -= len;
    for (node /= 2; node >= 1; node /= 2) {
      tree_[node] = std::max(tree_[2 * node], tree_[2 * node + 1]);
    }
    return row;
  }

 private:
  size_t size_ = 1;
  std::vector<int64_t> tree_;
};

}  // namespace

std::vector<std::vector<int64_t>> pack_rows(const std::vector<int64_t>& lengths,
                                            const std::vector<int64_t>& order, int64_t seq_len,
                                            bool packing) {
  FTUNE_CHECK(seq_len > 0, "packing: seq_len must be positive, got {}", seq_len);
  for (int64_t e : order) {
    FTUNE_CHECK(e >= 0 && static_cast<size_t>(e) < lengths.size(),
                "packing: example index {} out of range", e);
    FTUNE_CHECK(lengths[e] > 0 && lengths[e] <= seq_len,
                "packing: example {} has {} tokens, rows hold {} (seq_len)", e, lengths[e],
                seq_len);
  }
  std::vector<std::vector<int64_t>> rows;
  if (!packing) {
    for (int64_t e : order) rows.push_back({e});
    return rows;
  }
  FirstFitRows fit(order.size(), seq_len);
  for (int64_t e : order) {
    const size_t r = fit.place(lengths[e]);
    if (r == rows.size()) rows.emplace_back();
    rows[r].push_back(e);
  }
  return rows;
}

std::vector<std::vector<int64_t>> shard_rows(const std::vector<int64_t>& row_tokens,
                                             int64_t rows, int rank, int world) {
  FTUNE_CHECK(world >= 1 && rank >= 0 && rank < world, "sharding: rank {} of world {}", rank,
              world);
  FTUNE_CHECK(rows >= 1, "sharding: rows per micro-batch must be >= 1, got {}", rows);
  const auto n = static_cast<int64_t>(row_tokens.size());
  std::vector<int64_t> by_size(static_cast<size_t>(n));
  std::iota(by_size.begin(), by_size.end(), 0);
  std::stable_sort(by_size.begin(), by_size.end(),
                   [&](int64_t a, int64_t b) { return row_tokens[a] > row_tokens[b]; });
  std::vector<int64_t> mine;
  for (int64_t k = 0; k < n; ++k) {
    const int64_t round = k / world, pos = k % world;
    const int64_t owner = (round % 2 == 0) ? pos : world - 1 - pos;  // snake order
    if (owner == rank) mine.push_back(by_size[k]);
  }
  std::sort(mine.begin(), mine.end());

  const int64_t max_rows_per_rank = (n + world - 1) / world;
  const int64_t micro_batches = (max_rows_per_rank + rows - 1) / rows;
  std::vector<std::vector<int64_t>> out(static_cast<size_t>(micro_batches));
  for (int64_t b = 0; b < micro_batches; ++b) {
    for (int64_t j = 0; j < rows; ++j) {
      const int64_t k = b * rows + j;
      out[b].push_back(k < static_cast<int64_t>(mine.size()) ? mine[k] : -1);
    }
  }
  return out;
}

BatchPlan plan_batches(const std::vector<TokenizedExample>& examples, const BatchOptions& opt) {
  std::vector<int64_t> lengths;
  lengths.reserve(examples.size());
  for (const auto& e : examples) lengths.push_back(e.size());
  const auto n = static_cast<int64_t>(examples.size());
  std::vector<int64_t> order;
  if (opt.shuffle) {
    order = shuffled_indices(n, mix_seed(opt.seed, static_cast<uint64_t>(opt.epoch)));
  } else {
    order.resize(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
  }
  BatchPlan plan;
  plan.options = opt;
  plan.row_examples = pack_rows(lengths, order, opt.seq_len, opt.packing);
  std::vector<int64_t> row_tokens;
  for (const auto& r : plan.row_examples) {
    int64_t t = 0;
    for (int64_t e : r) t += lengths[e];
    row_tokens.push_back(t);
  }
  plan.micro_batches = shard_rows(row_tokens, opt.rows, opt.rank, opt.world);
  // Rows are as wide as the longest row of the epoch (the same on every rank: the plan covers
  // the epoch's rows), not as max_seq_length: memory follows the data, so a generous
  // max_seq_length costs nothing.
  int64_t width = 1;
  for (int64_t t : row_tokens) width = std::max(width, t);
  plan.width = std::min(width, opt.seq_len);
  return plan;
}

Batch build_batch(const std::vector<TokenizedExample>& examples, const BatchPlan& plan,
                  int64_t index) {
  FTUNE_CHECK(index >= 0 && index < plan.size(), "build_batch: micro-batch {} of {}", index,
              plan.size());
  const BatchOptions& opt = plan.options;
  const auto& rows = plan.micro_batches[static_cast<size_t>(index)];
  Batch b;
  b.rows = opt.rows;
  b.seq_len = plan.width;
  const size_t total = static_cast<size_t>(opt.rows * plan.width);
  b.input_ids.reserve(total);
  b.labels.reserve(total);
  b.position_ids.reserve(total);
  b.doc_start.reserve(total);
  const auto seq = static_cast<int32_t>(plan.width);
  for (size_t r = 0; r < rows.size(); ++r) {
    const int32_t row0 = static_cast<int32_t>(r) * seq;
    int32_t used = 0;
    if (rows[r] >= 0) {
      for (int64_t e : plan.row_examples[static_cast<size_t>(rows[r])]) {
        const TokenizedExample& ex = examples[e];
        const int32_t start = row0 + used;
        for (size_t t = 0; t < ex.ids.size(); ++t) {
          b.input_ids.push_back(ex.ids[t]);
          b.labels.push_back(ex.labels[t]);
          b.position_ids.push_back(static_cast<int32_t>(t));
          b.doc_start.push_back(start);
        }
        used += static_cast<int32_t>(ex.ids.size());
      }
    }
    for (; used < seq; ++used) {  // padding: one-token documents, never trained
      b.input_ids.push_back(opt.pad_id);
      b.labels.push_back(kIgnoreIndex);
      b.position_ids.push_back(0);
      b.doc_start.push_back(row0 + used);
    }
  }
  return b;
}

std::vector<Batch> make_batches(const std::vector<TokenizedExample>& examples,
                                const BatchOptions& opt) {
  const BatchPlan plan = plan_batches(examples, opt);
  std::vector<Batch> batches;
  batches.reserve(static_cast<size_t>(plan.size()));
  for (int64_t i = 0; i < plan.size(); ++i) batches.push_back(build_batch(examples, plan, i));
  return batches;
}

}  // namespace ftune
