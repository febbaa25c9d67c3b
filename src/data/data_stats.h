// Counts reported after a dataset is read and tokenized (shown by the CLI before training).
#pragma once
#include <cstdint>

namespace ftune {

struct DataStats {
  int64_t records = 0;            // records read from the file
  int64_t examples = 0;           // examples kept
  int64_t dropped = 0;            // dropped_too_long + dropped_untrained
  int64_t dropped_too_long = 0;   // longer than max_seq_length with truncation "drop"
  int64_t dropped_untrained = 0;  // no trained token (no assistant reply, or truncated away)
  int64_t truncated = 0;          // kept examples cut to max_seq_length
  int64_t tokens = 0;             // tokens in kept examples
  int64_t trained_tokens = 0;     // prediction targets in kept examples (labels != -100)

  bool operator==(const DataStats&) const = default;
};

}  // namespace ftune
