// PCRE2 wrapper with Oniguruma-compatible iteration (see tokenizer_regex.h).
#define PCRE2_CODE_UNIT_WIDTH 8
#include "io/tokenizer_regex.h"

#include <pcre2.h>

#include "core/error.h"
#include "io/tokenizer_json.h"
#include "io/tokenizer_regex_classes.h"
#include "io/tokenizer_unicode.h"

namespace ftune::tok {

namespace {

// Unicode White_Space, the set Oniguruma's \s matches (PCRE2's \s adds U+180E).
constexpr const char* kWhiteSpaceClassBody =
    R"(\t-\r\x{20}\x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";

std::string pcre2_message(int code) {
  PCRE2_UCHAR buf[256];
  pcre2_get_error_message(code, buf, sizeof buf);
  return reinterpret_cast<const char*>(buf);
}

}  // namespace

std::string translate_onig_pattern(const std::string& p) {
  std::string out;
  out.reserve(p.size() + 64);
  bool in_class = false;
  size_t class_start = 0;  // index in `p` just after '[' or '[^'
  for (size_t i = 0; i < p.size(); ++i) {
    const char c = p[i];
    if (c == '\\' && i + 1 < p.size()) {
      const char e = p[i + 1];
      ++i;
      if (e == 's') {
        out += in_class ? std::string(kWhiteSpaceClassBody)
                        : std::string("[") + kWhiteSpaceClassBody + "]";
      } else if (e == 'S' && !in_class) {
        out += std::string("[^") + kWhiteSpaceClassBody + "]";
      } else if (e == 'h') {  // Oniguruma: hex digit (PCRE2: horizontal space)
        out += in_class ? "0-9a-fA-F" : "[0-9a-fA-F]";
      } else if (e == 'H' && !in_class) {
        out += "[^0-9a-fA-F]";
      } else {
        // \S or \H inside a class keep PCRE2's meaning (differs only for U+180E / hex);
        // every other escape means the same in both engines.
        out += '\\';
        out += e;
      }
      continue;
    }
    if (!in_class && c == '[') {
      in_class = true;
      out += c;
      if (i + 1 < p.size() && p[i + 1] == '^') out += p[++i];
      class_start = i + 1;
      continue;
    }
    if (in_class && c == '[' && i + 1 < p.size() && p[i + 1] == ':') {  // POSIX [:name:]
      const size_t end = p.find(":]", i + 2);
      if (end != std::string::npos) {
        out.append(p, i, end + 2 - i);
        i = end + 1;
        continue;
      }
    }
    if (in_class && c == ']' && i != class_start) in_class = false;
    out += c;
  }
  return out;
}

struct Regex::Code {
  pcre2_code* code = nullptr;
  ~Code() {
    if (code) pcre2_code_free(code);
  }
};

Regex::Regex(const std::string& pattern, bool translate_onig)
    : pattern_(pattern), code_(std::make_unique<Code>()) {
  const std::string compiled =
      translate_onig ? upgrade_unicode_classes(translate_onig_pattern(pattern)) : pattern;
  int err = 0;
  PCRE2_SIZE err_off = 0;
  code_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(compiled.data()), compiled.size(),
                              PCRE2_UTF | PCRE2_UCP, &err, &err_off, nullptr);
  FTUNE_CHECK(code_->code != nullptr, "tokenizer regex '{}': {} at offset {}", pattern,
              pcre2_message(err), err_off);
  // JIT is an optimisation only; the interpreter gives the same matches when it is unavailable.
  (void)pcre2_jit_compile(code_->code, PCRE2_JIT_COMPLETE);
}

Regex::Regex(Regex&&) noexcept = default;
Regex& Regex::operator=(Regex&&) noexcept = default;
Regex::~Regex() = default;

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> out;
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_->code, nullptr);
  FTUNE_CHECK(md != nullptr, "tokenizer regex '{}': out of memory", pattern_);
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t last_end = 0;
  bool have_last = false;
  size_t last_match_end = 0;
  while (last_end <= text.size()) {
    const int rc = pcre2_match(code_->code, subject, text.size(), last_end, PCRE2_NO_UTF_CHECK, md,
                               nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      pcre2_match_data_free(md);
      fail("tokenizer regex '{}': match failed: {}", pattern_, pcre2_message(rc));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t beg = ov[0], end = ov[1];
    if (beg == end && have_last && last_match_end == end) {
      // Oniguruma (onig crate FindMatches): no empty match right after the previous one.
      last_end += last_end < text.size() ? utf8_seq_len(static_cast<unsigned char>(text[last_end]))
                                         : 1;
      continue;
    }
    out.emplace_back(beg, end);
    last_end = end;
    have_last = true;
    last_match_end = end;
  }
  pcre2_match_data_free(md);
  return out;
}

TextPattern TextPattern::from_json(const nlohmann::json& j, const std::string& where) {
  FTUNE_CHECK(j.is_object() && j.size() == 1,
              "{}: pattern must be {{\"String\": ...}} or {{\"Regex\": ...}}", where);
  TextPattern p;
  if (j.contains("String")) {
    p.literal_ = json_string(j, "String", where);
  } else if (j.contains("Regex")) {
    p.regex_.emplace(json_string(j, "Regex", where));
  } else {
    fail("{}: unsupported pattern kind '{}'", where, j.begin().key());
  }
  return p;
}

TextPattern TextPattern::literal(std::string s) {
  TextPattern p;
  p.literal_ = std::move(s);
  return p;
}

std::vector<std::pair<size_t, size_t>> TextPattern::find_all(std::string_view text) const {
  if (regex_) return regex_->find_all(text);
  std::vector<std::pair<size_t, size_t>> out;
  if (literal_.empty()) return out;
  for (size_t pos = text.find(literal_); pos != std::string_view::npos;
       pos = text.find(literal_, pos + literal_.size())) {
    out.emplace_back(pos, pos + literal_.size());
  }
  return out;
}

std::string TextPattern::replace_all(std::string_view text, std::string_view content) const {
  std::string out;
  out.reserve(text.size());
  size_t prev = 0;
  for (const auto& [b, e] : find_all(text)) {
    out.append(text.substr(prev, b - prev));
    out.append(content);
    prev = e;
  }
  out.append(text.substr(prev));
  return out;
}

}  // namespace ftune::tok
