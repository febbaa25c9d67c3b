// From tokenized examples to the packed micro-batches (core/batch.h) one worker consumes.
//
// Per epoch, on every rank identically:
//   1. order: the examples shuffled by mix_seed(seed, epoch) (shuffle.h), or kept in file
//      order when shuffle is off;
//   2. rows: packing on = greedy first-fit in that order (each example goes into the first row
//      that still has room, else a new row; examples never cross rows); packing off = one
//      example per row;
//   3. sharding: rows are sorted by token count (descending, ties by row index) and dealt to
//      ranks in snake order 0,1,..,w-1,w-1,..,0,0,1,..; each rank keeps its rows in row order.
//      So every row goes to exactly one rank, ranks get floor or ceil of R/w rows, and their
//      token totals differ by at most one row's tokens;
//   4. micro-batches: each rank groups its rows `rows` at a time. Every rank gets the same
//      number of micro-batches, M = ceil(ceil(R/w) / rows), so all ranks step in lockstep; a
//      micro-batch short of rows is filled with padding rows (a rank left with no rows gets
//      all-padding micro-batches: they hold no trained tokens and add nothing to the loss).
// Data-parallel training does not use step 3's row sharding: every rank plans the epoch's
// GLOBAL list (rank 0 of 1), and data/shard.h splits each step's window of micro-batches
// between the ranks, so the micro-batches (and their dropout masks) are the same for any
// number of processes. Row sharding stays for callers that want per-rank row shards.
// In a row, examples sit back to back from position 0; each token's position_ids restart at 0
// per example and doc_start is the flat index of its example's first token; the rest of the
// row is padding: pad_id, label -100, each padding token its own one-token document.
#pragma once
#include <cstdint>
#include <vector>

#include "core/batch.h"
#include "data/tokenize_example.h"

namespace ftune {

struct BatchOptions {
  int64_t seq_len = 2048;  // tokens per row (data.max_seq_length)
  int64_t rows = 1;        // rows per micro-batch (train.micro_batch_size)
  bool packing = true;     // data.packing
  bool shuffle = true;     // data.shuffle
  uint64_t seed = 42;      // data.seed
  int64_t epoch = 0;       // a new order every epoch
  int rank = 0;
  int world = 1;
  int32_t pad_id = 0;      // PreparedData::pad_id
};

// Rows as lists of example indices (steps 1-2). Throws when an example is longer than seq_len.
std::vector<std::vector<int64_t>> pack_rows(const std::vector<int64_t>& lengths,
                                            const std::vector<int64_t>& order, int64_t seq_len,
                                            bool packing);

// Steps 3-4: for rank `rank`, its micro-batches as lists of row indices (each exactly `rows`
// long; -1 = a padding row). `row_tokens` = tokens in each row.
std::vector<std::vector<int64_t>> shard_rows(const std::vector<int64_t>& row_tokens,
                                             int64_t rows, int rank, int world);

// All of the above: rank `opt.rank`'s micro-batches for epoch `opt.epoch`; each Batch has
// opt.rows rows of W tokens, W = the longest row of the epoch (at most opt.seq_len; the same
// on every rank), and passes Batch::validate().
std::vector<Batch> make_batches(const std::vector<TokenizedExample>& examples,
                                const BatchOptions& opt);

// The same in two parts, so that a caller builds only the micro-batches it needs (a
// data-parallel rank builds its share of the epoch's global list, not the whole list):
// the plan (steps 1-4 as indices), then micro-batch `index` of it.
struct BatchPlan {
  BatchOptions options;
  std::vector<std::vector<int64_t>> row_examples;  // per row: example indices
  std::vector<std::vector<int64_t>> micro_batches; // per micro-batch: row indices (-1 = padding)
  int64_t width = 0;  // tokens per row: the epoch's longest row, at most options.seq_len
  int64_t size() const { return static_cast<int64_t>(micro_batches.size()); }
};
BatchPlan plan_batches(const std::vector<TokenizedExample>& examples, const BatchOptions& opt);
Batch build_batch(const std::vector<TokenizedExample>& examples, const BatchPlan& plan,
                  int64_t index);

}  // namespace ftune
