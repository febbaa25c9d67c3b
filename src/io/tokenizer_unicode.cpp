// UTF-8 helpers and the GPT-2 byte-level alphabet (see tokenizer_unicode.h).
#include "io/tokenizer_unicode.h"

#include "io/tokenizer_regex.h"

namespace ftune::tok {

uint32_t next_code_point(std::string_view s, size_t& i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  const size_t n = utf8_seq_len(b0);
  if (n == 1 || i + n > s.size()) {
    ++i;
    return b0;
  }
  uint32_t cp = b0 & (0x7F >> n);
  for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  i += n;
  return cp;
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

namespace {

// Length of the valid UTF-8 sequence at i, or 0 when invalid; `consumed` receives how many bytes
// belong to the maximal invalid subpart (Rust core::str::lossy / Unicode "maximal subpart").
size_t valid_seq_at(std::string_view s, size_t i, size_t& consumed) {
  auto at = [&](size_t k) -> unsigned { return k < s.size() ? static_cast<unsigned char>(s[k]) : 0u; };
  const unsigned b = at(i);
  consumed = 1;
  if (b < 0x80) return 1;
  auto cont = [](unsigned c) { return (c & 0xC0) == 0x80; };
  if (b >= 0xC2 && b <= 0xDF) return cont(at(i + 1)) ? 2 : 0;
  if (b >= 0xE0 && b <= 0xEF) {
    const unsigned c1 = at(i + 1);
    const bool ok1 = (b == 0xE0) ? (c1 >= 0xA0 && c1 <= 0xBF)
                     : (b == 0xED) ? (c1 >= 0x80 && c1 <= 0x9F)
                                   : cont(c1);
    if (!ok1) return 0;
    consumed = 2;
    return cont(at(i + 2)) ? 3 : 0;
  }
  if (b >= 0xF0 && b <= 0xF4) {
    const unsigned c1 = at(i + 1);
    const bool ok1 = (b == 0xF0) ? (c1 >= 0x90 && c1 <= 0xBF)
                     : (b == 0xF4) ? (c1 >= 0x80 && c1 <= 0x8F)
                                   : cont(c1);
    if (!ok1) return 0;
    consumed = 2;
    if (!cont(at(i + 2))) return 0;
    consumed = 3;
    return cont(at(i + 3)) ? 4 : 0;
  }
  return 0;
}

}  // namespace

std::optional<size_t> first_invalid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    size_t consumed = 0;
    const size_t n = valid_seq_at(s, i, consumed);
    if (n == 0) return i;
    i += n;
  }
  return std::nullopt;
}

std::string utf8_lossy(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    size_t consumed = 0;
    const size_t n = valid_seq_at(s, i, consumed);
    if (n == 0) {
      out += "\xEF\xBF\xBD";  // U+FFFD
      i += consumed;
    } else {
      out.append(s.substr(i, n));
      i += n;
    }
  }
  return out;
}

bool is_white_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

bool is_word_character(uint32_t cp) {
  if (cp < 0x80) {
    return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') ||
           cp == '_';
  }
  // Unicode \w per UTS #18 (what regex-syntax implements); PCRE2 supplies the tables.
  // regex-syntax in tokenizers 0.23 knows Unicode 16.0: \p{L} and \p{Nl} (inside Alphabetic)
  // are spelled out so that the general-category upgrade (tokenizer_regex_classes.h) adds the
  // letters PCRE2 does not know yet; the marks, digits and connectors get it from \p{M} etc.
  static const Regex word(
      R"(^[\p{Alphabetic}\p{L}\p{Nl}\p{M}\p{Nd}\p{Pc}\x{200C}\x{200D}]$)");
  std::string ch;
  append_utf8(ch, cp);
  return !word.find_all(ch).empty();
}

const ByteLevelAlphabet& byte_level_alphabet() {
  static const ByteLevelAlphabet table = [] {
    ByteLevelAlphabet t{};
    t.cp_to_byte.fill(-1);
    uint32_t next_extra = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      const uint32_t cp = printable ? static_cast<uint32_t>(b) : 0x100 + next_extra++;
      t.byte_to_cp[b] = cp;
      append_utf8(t.byte_to_utf8[b], cp);
      t.cp_to_byte[cp] = static_cast<int16_t>(b);
    }
    return t;
  }();
  return table;
}

}  // namespace ftune::tok
