// Pre-tokenizers (see tokenizer_pretokenizer.h). Each mirrors the HF implementation in
// tokenizers/src/pre_tokenizers/*.rs and NormalizedString::split (tokenizer/normalizer.rs).
#include "io/tokenizer_pretokenizer.h"

#include <algorithm>
#include <optional>

#include "core/error.h"
#include "io/tokenizer_regex.h"
#include "io/tokenizer_unicode.h"

namespace ftune::tok {

const char* const kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

SplitBehavior parse_split_behavior(const std::string& name, const std::string& where) {
  if (name == "Removed") return SplitBehavior::kRemoved;
  if (name == "Isolated") return SplitBehavior::kIsolated;
  if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
  if (name == "Contiguous") return SplitBehavior::kContiguous;
  fail("{}: unknown split behavior '{}'", where, name);
}

std::vector<std::pair<size_t, size_t>> split_ranges(
    size_t len, const std::vector<std::pair<size_t, size_t>>& matches, SplitBehavior behavior,
    bool invert) {
  using Range = std::pair<size_t, size_t>;
  struct Part {
    Range r;
    bool is_match;
  };
  // Pattern::find_matches: the matches and the gaps between them, covering the whole text.
  std::vector<Part> parts;
  if (len == 0) {
    parts.push_back({{0, 0}, false});
  } else {
    size_t prev = 0;
    for (const auto& [b, e] : matches) {
      if (prev != b) parts.push_back({{prev, b}, false});
      parts.push_back({{b, e}, true});
      prev = e;
    }
    if (prev != len) parts.push_back({{prev, len}, false});
  }
  if (invert) {
    for (auto& p : parts) p.is_match = !p.is_match;
  }
  std::vector<Range> out;
  switch (behavior) {
    case SplitBehavior::kIsolated:
      for (const auto& p : parts) out.push_back(p.r);
      break;
    case SplitBehavior::kRemoved:
      for (const auto& p : parts)
        if (!p.is_match) out.push_back(p.r);
      break;
    case SplitBehavior::kMergedWithPrevious: {
      bool previous_match = false;
      for (const auto& p : parts) {
        if (p.is_match && !previous_match && !out.empty()) {
          out.back().second = p.r.second;
        } else {
          out.push_back(p.r);
        }
        previous_match = p.is_match;
      }
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      bool previous_match = false;
      for (auto it = parts.rbegin(); it != parts.rend(); ++it) {
        if (it->is_match && !previous_match && !out.empty()) {
          out.back().first = it->r.first;
        } else {
          out.push_back(it->r);
        }
        previous_match = it->is_match;
      }
      std::reverse(out.begin(), out.end());
      break;
    }
    case SplitBehavior::kContiguous: {
      bool have_prev = false, previous_match = false;
      for (const auto& p : parts) {
        if (have_prev && p.is_match == previous_match) {
          out.back().second = p.r.second;
        } else {
          out.push_back(p.r);
        }
        have_prev = true;
        previous_match = p.is_match;
      }
      break;
    }
  }
  return out;
}

namespace {

// Splits every piece by `matches_of(text)` and `behavior`, dropping empty parts; the part that
// starts at byte 0 of a piece keeps its at_origin flag.
template <typename MatchFn>
void split_pieces(std::vector<Piece>& pieces, const MatchFn& matches_of, SplitBehavior behavior,
                  bool invert) {
  std::vector<Piece> out;
  out.reserve(pieces.size() * 2);
  for (auto& piece : pieces) {
    const auto ranges =
        split_ranges(piece.text.size(), matches_of(piece.text), behavior, invert);
    for (const auto& [b, e] : ranges) {
      if (b == e) continue;
      out.push_back({piece.text.substr(b, e - b), piece.at_origin && b == 0});
    }
  }
  pieces = std::move(out);
}

class SequencePreTokenizer final : public PreTokenizer {
 public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts)
      : parts_(std::move(parts)) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (const auto& p : parts_) p->pre_tokenize(pieces);
  }

 private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

class SplitPreTokenizer final : public PreTokenizer {
 public:
  SplitPreTokenizer(TextPattern pattern, SplitBehavior behavior, bool invert)
      : pattern_(std::move(pattern)), behavior_(behavior), invert_(invert) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_pieces(
        pieces, [&](const std::string& t) { return pattern_.find_all(t); }, behavior_, invert_);
  }

 private:
  TextPattern pattern_;
  SplitBehavior behavior_;
  bool invert_;
};

// HF pre_tokenizers/byte_level.rs: optional leading space, optional GPT-2 split, then every byte
// becomes its bytes_to_unicode character.
class ByteLevelPreTokenizer final : public PreTokenizer {
 public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space) {
    if (use_regex) regex_.emplace(kGpt2Pattern);
  }
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    if (add_prefix_space_) {
      for (auto& p : pieces)
        if (p.text.empty() || p.text[0] != ' ') p.text = " " + p.text;
    }
    if (regex_) {
      split_pieces(
          pieces, [&](const std::string& t) { return regex_->find_all(t); },
          SplitBehavior::kIsolated, false);
    }
    const auto& alpha = byte_level_alphabet();
    for (auto& p : pieces) {
      std::string mapped;
      mapped.reserve(p.text.size() * 2);
      for (unsigned char b : p.text) mapped += alpha.byte_to_utf8[b];
      p.text = std::move(mapped);
    }
  }

 private:
  bool add_prefix_space_;
  std::optional<Regex> regex_;
};

enum class PrependScheme { kAlways, kFirst, kNever };

// HF pre_tokenizers/metaspace.rs: spaces become the replacement character, which is prepended
// per prepend_scheme unless the piece already starts with it; split=true cuts before each one.
class MetaspacePreTokenizer final : public PreTokenizer {
 public:
  MetaspacePreTokenizer(std::string replacement, PrependScheme scheme, bool split)
      : replacement_(std::move(replacement)),
        scheme_(scheme),
        split_(split),
        space_(TextPattern::literal(" ")),
        marker_(TextPattern::literal(replacement_)) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    for (auto& p : pieces) {
      p.text = space_.replace_all(p.text, replacement_);
      const bool starts = p.text.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts && (scheme_ == PrependScheme::kAlways ||
                      (scheme_ == PrependScheme::kFirst && p.at_origin))) {
        p.text.insert(0, replacement_);
      }
    }
    if (split_) {
      split_pieces(
          pieces, [&](const std::string& t) { return marker_.find_all(t); },
          SplitBehavior::kMergedWithNext, false);
    }
  }

 private:
  std::string replacement_;
  PrependScheme scheme_;
  bool split_;
  TextPattern space_, marker_;
};

// HF pre_tokenizers/digits.rs: numeric characters isolated one by one or as runs.
class DigitsPreTokenizer final : public PreTokenizer {
 public:
  explicit DigitsPreTokenizer(bool individual)
      : regex_(R"(\p{N})"),
        behavior_(individual ? SplitBehavior::kIsolated : SplitBehavior::kContiguous) {}
  void pre_tokenize(std::vector<Piece>& pieces) const override {
    split_pieces(
        pieces, [&](const std::string& t) { return regex_.find_all(t); }, behavior_, false);
  }

 private:
  Regex regex_;
  SplitBehavior behavior_;
};

PrependScheme parse_prepend_scheme(const json& j, const std::string& where) {
  const auto it = j.find("prepend_scheme");
  if (it == j.end() || it->is_null()) {
    // Files written before tokenizers 0.14 carry add_prefix_space instead.
    return json_bool(j, "add_prefix_space", true, where) ? PrependScheme::kAlways
                                                         : PrependScheme::kNever;
  }
  const std::string s = json_string(j, "prepend_scheme", where);
  if (s == "always") return PrependScheme::kAlways;
  if (s == "first") return PrependScheme::kFirst;
  if (s == "never") return PrependScheme::kNever;
  fail("{}: unknown Metaspace prepend_scheme '{}'", where, s);
}

}  // namespace

std::unique_ptr<PreTokenizer> parse_pre_tokenizer(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  const std::string type = json_type(j, where);
  if (type == "Sequence") {
    const json& list = json_at(j, "pretokenizers", where);
    FTUNE_CHECK(list.is_array(), "{}: 'pretokenizers' must be an array", where);
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (size_t i = 0; i < list.size(); ++i) {
      auto p = parse_pre_tokenizer(list[i], where + ".pretokenizers[" + std::to_string(i) + "]");
      if (p) parts.push_back(std::move(p));
    }
    return std::make_unique<SequencePreTokenizer>(std::move(parts));
  }
  if (type == "Split") {
    return std::make_unique<SplitPreTokenizer>(
        TextPattern::from_json(json_at(j, "pattern", where), where + ".pattern"),
        parse_split_behavior(json_string(j, "behavior", where), where),
        json_bool(j, "invert", false, where));
  }
  if (type == "ByteLevel") {
    return std::make_unique<ByteLevelPreTokenizer>(json_bool(j, "add_prefix_space", true, where),
                                                   json_bool(j, "use_regex", true, where));
  }
  if (type == "Metaspace") {
    const std::string replacement = json_string(j, "replacement", where);
    size_t i = 0;
    FTUNE_CHECK(!replacement.empty() && (next_code_point(replacement, i), i == replacement.size()),
                "{}: Metaspace replacement must be one character, got '{}'", where, replacement);
    return std::make_unique<MetaspacePreTokenizer>(replacement, parse_prepend_scheme(j, where),
                                                   json_bool(j, "split", true, where));
  }
  if (type == "Digits") {
    return std::make_unique<DigitsPreTokenizer>(json_bool(j, "individual_digits", false, where));
  }
  unsupported_component("pre_tokenizer", type, where);
}

}  // namespace ftune::tok
