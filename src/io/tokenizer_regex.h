// PCRE2 (UTF + UCP, JIT when available) regex used by the tokenizer's Split pre-tokenizer,
// ByteLevel(use_regex) and Replace normalizer/decoder. HF `tokenizers` compiles these patterns
// with Oniguruma; `translate_onig` rewrites the one class whose meaning differs in PCRE2
// (Oniguruma's \s is exactly Unicode White_Space, PCRE2's also has U+180E), then brings the
// general categories (\p{L}, \p{N}, \d, ...) to Oniguruma's Unicode 16.0 where the system PCRE2
// knows an older version (tokenizer_regex_classes.h; Debian 12's PCRE2 10.42: Unicode 14.0).
#pragma once
#include <nlohmann/json_fwd.hpp>

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ftune::tok {

class Regex {
 public:
  // Throws ftune::Error with the PCRE2 message and offset when the pattern does not compile.
  // translate_onig=false compiles `pattern` for PCRE2 as it is.
  explicit Regex(const std::string& pattern, bool translate_onig = true);
  Regex(Regex&&) noexcept;
  Regex& operator=(Regex&&) noexcept;
  ~Regex();

  // Non-overlapping matches [start, end) in byte offsets, left to right, as Oniguruma's
  // find_iter: after an empty match the search resumes one character further, and an empty
  // match right where the previous match ended is skipped. `text` must be valid UTF-8.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;

  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  struct Code;
  std::unique_ptr<Code> code_;
};

// Oniguruma → PCRE2 pattern rewrite (see the file comment); exposed for tests.
std::string translate_onig_pattern(const std::string& pattern);

// A pattern of tokenizer.json: {"String": s} (literal, non-overlapping occurrences) or
// {"Regex": r}, as used by Split, Replace and the Replace decoder.
class TextPattern {
 public:
  static TextPattern from_json(const nlohmann::json& j, const std::string& where);
  static TextPattern literal(std::string s);
  // Non-overlapping matches [start, end) left to right. An empty literal matches nothing.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;
  // Every match replaced by `content` (HF NormalizedString::replace).
  std::string replace_all(std::string_view text, std::string_view content) const;

 private:
  std::string literal_;
  std::optional<Regex> regex_;
};

}  // namespace ftune::tok
