// Pre-tokenizers of tokenizer.json ("pre_tokenizer"): Sequence, Split (String/Regex pattern,
// every SplitDelimiterBehavior, invert), ByteLevel (add_prefix_space, use_regex with the GPT-2
// pattern), Metaspace (prepend_scheme always/first/never, split) and Digits
// (HF tokenizers/src/pre_tokenizers). They turn each piece of text into smaller pieces; the BPE
// model then encodes every piece on its own.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "io/tokenizer_json.h"

namespace ftune::tok {

// A piece of text on its way to the model. `at_origin` is true when the piece starts at offset 0
// of the original input (HF offsets_original().0 == 0), which Metaspace "first" tests.
struct Piece {
  std::string text;
  bool at_origin = false;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  // Replaces `pieces` by their pre-tokenized parts (empty parts dropped, as HF does).
  virtual void pre_tokenize(std::vector<Piece>& pieces) const = 0;
};

// nullptr for a null pre_tokenizer; throws naming the file for an unsupported type.
std::unique_ptr<PreTokenizer> parse_pre_tokenizer(const json& j, const std::string& where);

// The GPT-2 pre-tokenization pattern that ByteLevel(use_regex=true) applies.
extern const char* const kGpt2Pattern;

// HF SplitDelimiterBehavior: what happens to the matched delimiters of a split.
enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };
SplitBehavior parse_split_behavior(const std::string& name, const std::string& where);

// Ranges [start, end) of `len` bytes that a split keeps, given the delimiter matches in order
// (HF NormalizedString::split over Pattern::find_matches). Empty ranges may be returned.
std::vector<std::pair<size_t, size_t>> split_ranges(
    size_t len, const std::vector<std::pair<size_t, size_t>>& matches, SplitBehavior behavior,
    bool invert);

}  // namespace ftune::tok
