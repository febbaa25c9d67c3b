// Added tokens of tokenizer.json ("added_tokens": special and not) and how they are cut out of
// the input before normalization and pre-tokenization, as HF AddedVocabulary
// (tokenizers/src/tokenizer/added_vocabulary.rs): tokens with normalized=false are matched on
// the raw text, the others on the normalized pieces; leftmost-longest matching; single_word,
// lstrip and rstrip honoured.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/tokenizer_json.h"
#include "io/tokenizer_pretokenizer.h"

namespace ftune::tok {

class Normalizer;

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false;
  bool lstrip = false;
  bool rstrip = false;
  bool single_word = false;
  bool normalized = true;
  // What id → token gives (and decode uses): HF 0.23 reports a normalized token's content as
  // the normalizer rewrites it (e.g. "foo bar" → "▁foo▁bar" under Prepend+Replace).
  std::string surface;
};

// One piece of the input after added-token extraction: an added token's id, or normalized
// text still to be pre-tokenized and encoded by the model.
struct Segment {
  std::optional<int32_t> id;
  Piece text;
};

// Leftmost-longest multi-pattern matcher over bytes (the aho-corasick MatchKind::LeftmostLongest
// result HF uses), as a trie walked from each candidate start.
class TokenTrie {
 public:
  void add(std::string_view pattern, int32_t value);  // the first value for a pattern is kept
  struct Match {
    size_t start, end;
    int32_t value;
  };
  // The leftmost match at or after `from`, longest among those starting there.
  std::optional<Match> find(std::string_view text, size_t from) const;
  bool empty() const { return nodes_.size() <= 1; }

 private:
  struct Node {
    std::vector<std::pair<unsigned char, int32_t>> children;  // sorted by byte
    int32_t value = -1;
  };
  std::vector<Node> nodes_{Node{}};
  bool first_byte_[256] = {};
};

class AddedVocabulary {
 public:
  AddedVocabulary() = default;
  // `normalizer` (may be null) normalizes the patterns of tokens with normalized=true.
  AddedVocabulary(std::vector<AddedToken> tokens, const Normalizer* normalizer);
  static std::vector<AddedToken> parse(const json& added_tokens, const std::string& where);

  // HF AddedVocabulary::extract_and_normalize: split on raw-matched tokens, normalize the rest,
  // split again on normalized-matched tokens. Empty text pieces are dropped.
  std::vector<Segment> extract_and_normalize(std::string_view text,
                                             const Normalizer* normalizer) const;

  const AddedToken* by_id(int32_t id) const;
  const AddedToken* by_content(std::string_view content) const;
  const std::vector<AddedToken>& tokens() const { return tokens_; }

 private:
  // HF find_matches: (token index or -1, [start, end)) covering `text`.
  struct Split {
    int32_t token;  // index into tokens_, -1 for text
    size_t start, end;
  };
  std::vector<Split> find_matches(std::string_view text, const TokenTrie& trie) const;

  std::vector<AddedToken> tokens_;
  std::unordered_map<int32_t, size_t> by_id_;
  std::unordered_map<std::string, size_t> by_content_;
  TokenTrie raw_trie_, normalized_trie_;
};

}  // namespace ftune::tok
