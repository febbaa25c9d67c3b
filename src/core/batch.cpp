#include "core/batch.h"

#include "core/error.h"

namespace ftune {

void Batch::validate() const {
  const size_t n = input_ids.size();
  FTUNE_CHECK(labels.size() == n && position_ids.size() == n && doc_start.size() == n,
              "batch: input_ids ({}), labels ({}), position_ids ({}), doc_start ({}) differ in size",
              n, labels.size(), position_ids.size(), doc_start.size());
  FTUNE_CHECK(static_cast<int64_t>(n) == rows * seq_len, "batch: {} tokens for {} rows of {}", n,
              rows, seq_len);
  for (size_t i = 0; i < n; ++i) {
    const int32_t s = doc_start[i];
    FTUNE_CHECK(s >= 0 && static_cast<size_t>(s) <= i, "batch: doc_start[{}] = {} is invalid", i, s);
    if (seq_len > 0) {
      FTUNE_CHECK(static_cast<int64_t>(s) / seq_len == static_cast<int64_t>(i) / seq_len,
                  "batch: document of token {} crosses a row boundary", i);
    }
    FTUNE_CHECK(position_ids[i] >= 0, "batch: negative position id at {}", i);
  }
}

std::vector<int32_t> next_token_targets(const Batch& b) {
  const size_t n = b.input_ids.size();
  std::vector<int32_t> t(n, kIgnoreIndex);
  for (size_t i = 0; i + 1 < n; ++i) {
    if (b.doc_start[i + 1] == b.doc_start[i]) t[i] = b.labels[i + 1];
  }
  return t;
}

int64_t count_trained_tokens(const Batch& b) {
  int64_t c = 0;
  for (int32_t t : next_token_targets(b)) c += (t != kIgnoreIndex);
  return c;
}

Batch batch_from_documents(const std::vector<std::vector<int32_t>>& ids,
                           const std::vector<std::vector<int32_t>>& labels, int64_t seq_len,
                           int32_t pad_id) {
  FTUNE_CHECK(ids.size() == labels.size(), "batch_from_documents: {} id lists, {} label lists",
              ids.size(), labels.size());
  Batch b;
  b.rows = static_cast<int64_t>(ids.size());
  b.seq_len = seq_len;
  for (size_t r = 0; r < ids.size(); ++r) {
    FTUNE_CHECK(ids[r].size() == labels[r].size() && static_cast<int64_t>(ids[r].size()) <= seq_len,
                "batch_from_documents: row {} has {} ids, {} labels, seq_len {}", r, ids[r].size(),
                labels[r].size(), seq_len);
    const int32_t row0 = static_cast<int32_t>(r * seq_len);
    for (int64_t j = 0; j < seq_len; ++j) {
      const int32_t flat = row0 + static_cast<int32_t>(j);
      if (j < static_cast<int64_t>(ids[r].size())) {
        b.input_ids.push_back(ids[r][j]);
        b.labels.push_back(labels[r][j]);
        b.position_ids.push_back(static_cast<int32_t>(j));
        b.doc_start.push_back(row0);
      } else {  // padding: its own document, never trained
        b.input_ids.push_back(pad_id);
        b.labels.push_back(kIgnoreIndex);
        b.position_ids.push_back(0);
        b.doc_start.push_back(flat);
      }
    }
  }
  return b;
}

}  // namespace ftune
