// The data layer's entry point for the trainer and the CLI.
//
//   DataOptions opts = ...;                       // from the config (keys below)
//   PreparedData data = prepare_data(opts, tok);  // read, render, tokenize, mask, cache
//   for epoch: batches = make_batches(data.train, batch_options(opts, data, epoch, 0, 1));
//
// prepare_data does all checking before any training: every error is one ftune::Error line
// (file:line for records). Run it once in the launcher before the workers start: it fills the
// token cache, and each worker's own prepare_data then loads the cache and calls
// plan_batches / build_batch for the epoch's global list (packing.h describes the batch and
// shuffle rules; data/shard.h how ranks share it).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "data/chat_template.h"
#include "data/data_stats.h"
#include "data/dataset_format.h"
#include "data/packing.h"
#include "data/tokenize_example.h"

namespace ftune {

class Tokenizer;

enum class Truncation { truncate, drop };
// "truncate" | "drop"; throws for anything else.
Truncation parse_truncation(std::string_view name);

struct DataOptions {
  std::string train;                  // data.train: JSON/JSONL file; "" = built-in debug dataset
  std::string validation;             // data.validation: file; "" = none
  double validation_split = 0.0;      // data.validation_split: fraction of train held out
  std::string format = "auto";        // data.format: auto|alpaca|sharegpt|messages|text|prompt_completion
  std::string chat_template = "auto"; // model.chat_template: auto|llama-3|llama-2|mistral|chatml|alpaca
  std::string tokenizer_dir;          // model.tokenizer: folder with tokenizer_config.json
                                      // (chat_template, bos/eos/pad tokens) and tokenizer.json
                                      // (its bytes key the cache); "" = none
  int64_t max_seq_length = 2048;      // data.max_seq_length
  Truncation truncation = Truncation::truncate;  // data.truncation
  bool train_on_responses_only = true;  // data.train_on_responses_only (text trains everything)
  bool packing = true;                // data.packing
  bool shuffle = true;                // data.shuffle
  uint64_t seed = 42;                 // data.seed: shuffle and validation split
  std::string cache_dir;              // data.cache_dir: "" = no cache
  int64_t micro_batch_rows = 1;       // train.micro_batch_size
};

struct PreparedData {
  std::vector<TokenizedExample> train;
  std::vector<TokenizedExample> validation;
  // File-level counts (records, dropped, ...) plus examples/tokens/trained_tokens/truncated of
  // the part that ended up in `train` / `validation` (for a split, validation_stats.records is
  // the number of held-out examples and its drop counts are 0).
  DataStats train_stats;
  DataStats validation_stats;
  DatasetFormat train_format = DatasetFormat::messages;
  std::string chat_template;  // preset name or file of the template used; "" when none was needed
  int32_t pad_id = 0;         // pad_token, else the EOS id, else 0 (labels of padding are -100)
  bool train_from_cache = false;
  bool validation_from_cache = false;
};

// Reads, renders, tokenizes and masks opts.train (and the validation data), through the token
// cache when opts.cache_dir is set.
PreparedData prepare_data(const DataOptions& opts, const TextEncoder& enc);
// Same with ftune's tokenizer; the cache key uses <tokenizer_dir>/tokenizer.json's bytes when
// present, else every token string of the vocabulary. (Defined in tokenizer_encoder.cpp.)
PreparedData prepare_data(const DataOptions& opts, const Tokenizer& tok);

// Batch options for an epoch from the data options (seq_len = max_seq_length).
BatchOptions batch_options(const DataOptions& opts, const PreparedData& data, int64_t epoch,
                           int rank, int world);

// Deterministic validation split: round(fraction * n) examples (at least 1 and at most n - 1
// when fraction > 0) chosen by shuffled_indices(n, mix_seed(seed, "validation" stream)); both
// parts keep file order. Throws when fraction is outside [0, 1) or n < 2 with fraction > 0.
void split_validation(std::vector<TokenizedExample>& train,
                      std::vector<TokenizedExample>& validation, double fraction, uint64_t seed);

// examples, tokens, trained_tokens and truncated of a set of examples.
DataStats summarize(const std::vector<TokenizedExample>& examples);

}  // namespace ftune
