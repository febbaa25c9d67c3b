// A packed micro-batch as the model consumes it: rows of a [rows, seq_len] batch flattened to
// N = rows*seq_len tokens. Several documents may share a row (packing); padding tokens form
// their own one-token documents with label -100.
//
// labels are HF-style, unshifted: labels[i] is the token to learn at position i (usually
// input_ids[i]) or -100. The model predicts labels[i+1] from position i; a prediction never
// crosses a document boundary (see next_token_targets), exactly as HF does on unpacked data.
#pragma once
#include <cstdint>
#include <vector>

namespace ftune {

constexpr int32_t kIgnoreIndex = -100;

struct Batch {
  int64_t rows = 0;
  int64_t seq_len = 0;
  std::vector<int32_t> input_ids;     // [N]
  std::vector<int32_t> labels;        // [N], -100 = not trained
  std::vector<int32_t> position_ids;  // [N], restart at 0 for each document
  std::vector<int32_t> doc_start;     // [N], flat index of the first token of i's document
  // The LoRA dropout key, set by the training loop: the optimizer step (0-based) this
  // micro-batch trains in, and its index in the epoch's global micro-batch list (the same list
  // on every rank and for every number of processes). Masks depend on these only, never on the
  // rank or on how many forward passes (evaluation included) came before.
  int64_t step = 0;
  int64_t global_index = 0;

  int64_t tokens() const { return static_cast<int64_t>(input_ids.size()); }
  // Throws ftune::Error when sizes disagree or doc_start/position_ids are inconsistent.
  void validate() const;
};

// targets[i] = labels[i+1] when token i+1 is in the same document as i, else -100.
std::vector<int32_t> next_token_targets(const Batch& b);
// Number of targets that are not -100 (the tokens a loss is normalized by).
int64_t count_trained_tokens(const Batch& b);

// Builds a batch from separate documents laid out one per row (padding each row to seq_len
// with pad_id and label -100) — handy for tests and evaluation.
Batch batch_from_documents(const std::vector<std::vector<int32_t>>& ids,
                           const std::vector<std::vector<int32_t>>& labels, int64_t seq_len,
                           int32_t pad_id);

}  // namespace ftune
