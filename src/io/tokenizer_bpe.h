// BPE model of tokenizer.json ("model": {"type": "BPE", ...}), as HF tokenizers/src/models/bpe:
// vocab, merges ("a b" strings or ["a", "b"] pairs; rank = position), ignore_merges, byte_fallback
// (<0xNN> tokens), unk_token with fuse_unk, continuing_subword_prefix, end_of_word_suffix.
// Results are cached per pre-token word (thread-safe), since the same words recur constantly.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/tokenizer_json.h"

namespace ftune::tok {

class BpeModel {
 public:
  // Throws naming `where` for a malformed model, a merge whose parts or result are not in the
  // vocab, or options ftune does not implement (dropout > 0).
  static std::unique_ptr<BpeModel> from_json(const json& j, const std::string& where);

  // Ids of one pre-token (HF BPE::tokenize); empty for an empty word.
  std::vector<int32_t> tokenize(const std::string& word) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  // nullptr when the id has no token in the vocab.
  const std::string* id_to_token(int32_t id) const;
  // Largest id + 1 (0 for an empty vocab).
  int64_t id_bound() const { return static_cast<int64_t>(vocab_r_.size()); }

 private:
  BpeModel() = default;
  std::vector<int32_t> merge_word(const std::string& word) const;

  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::string where_;  // file and component, for errors at encode time
  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> vocab_;
  std::vector<std::string> vocab_r_;
  std::vector<bool> has_id_;
  struct MergeInfo {
    int32_t rank;
    int32_t new_id;
  };
  // Key: (left id << 32) | right id.
  std::unordered_map<uint64_t, MergeInfo> merges_;
  std::optional<std::string> unk_token_;
  std::optional<std::string> continuing_subword_prefix_, end_of_word_suffix_;
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  std::vector<int32_t> byte_ids_;  // id of <0xNN> per byte, -1 when absent

  static constexpr size_t kMaxCachedWordBytes = 256;  // as HF's BPE cache (MAX_LENGTH)
  static constexpr size_t kMaxCacheEntries = 1 << 18;
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

}  // namespace ftune::tok
