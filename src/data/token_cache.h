// Token cache: the tokenized examples of one dataset file, saved once in a cache directory and
// loaded by later runs (and by every worker process) instead of re-tokenizing.
//
// A cache file is named by a 64-bit FNV-1a key over everything that decides its content:
// the dataset bytes, the tokenizer's bytes, format, chat template (name, bos/eos, default
// system), max_seq_length, truncation, train_on_responses_only, BOS/EOS ids, and
// kTokenCacheVersion (bump it whenever tokenization or this layout changes).
//
// Layout (little-endian):
//   header, 48 bytes: "FTUNETOK" | u32 version | u32 header size (48) | u64 key |
//                     u64 payload size | u64 FNV-1a of the payload | u64 example count
//   payload: DataStats as 8 x i64, then per example: u32 n | u8 truncated | i32 ids[n] |
//            u8 trained[n] (labels[i] = trained ? ids[i] : -100)
// Files are written atomically (temporary + rename). A file with a wrong magic, version, key,
// size or checksum is reported (load() says why; the pipeline logs a warning) and rebuilt.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "data/data_stats.h"
#include "data/tokenize_example.h"

namespace ftune {

// Bumped whenever the same dataset bytes tokenize differently: 3 = message keys besides role
// and content (tool_calls, reasoning_content, ...) and the record's tools reach the template.
constexpr uint32_t kTokenCacheVersion = 3;

// 64-bit FNV-1a, fed field by field (each field length-prefixed so fields cannot run together).
class Fnv1a64 {
 public:
  Fnv1a64& bytes(std::string_view data);  // raw bytes, no length prefix
  Fnv1a64& field(std::string_view data);  // length, then bytes
  Fnv1a64& u64(uint64_t v);
  uint64_t value() const { return h_; }

 private:
  uint64_t h_ = 0xCBF29CE484222325ull;
};

struct TokenizedDataset {
  std::vector<TokenizedExample> examples;
  DataStats stats;
};

struct CacheLoad {
  std::optional<TokenizedDataset> data;  // set on a hit
  std::string problem;                   // why an existing file was rejected ("" = none)
};

class TokenCache {
 public:
  explicit TokenCache(std::string dir);  // created on first store
  std::string path_for(uint64_t key) const;
  // Miss: no file (problem empty) or a rejected file (problem says why).
  CacheLoad load(uint64_t key) const;
  // Throws when labels are not ids-or--100 or the file cannot be written.
  void store(uint64_t key, const TokenizedDataset& data) const;

 private:
  std::string dir_;
};

// Serialization, exposed for tests.
std::string encode_token_cache(uint64_t key, const TokenizedDataset& data);
// Throws ftune::Error saying what is wrong.
TokenizedDataset decode_token_cache(std::string_view bytes, uint64_t expected_key);

}  // namespace ftune
