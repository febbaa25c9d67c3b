// UTF-8 and Unicode helpers for the tokenizer: code point decoding/encoding, validation,
// Rust-compatible lossy decoding (String::from_utf8_lossy), the GPT-2 byte-level alphabet
// (bytes_to_unicode, FORMATS.md §5) and the character classes HF `tokenizers` uses outside its
// regexes (Rust char::is_whitespace; regex-syntax's Unicode word characters).
#pragma once
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ftune::tok {

// Byte length of the UTF-8 sequence that starts with `lead` (1 for a stray continuation byte,
// so callers always advance). Input is assumed valid (see first_invalid_utf8).
inline size_t utf8_seq_len(unsigned char lead) {
  if (lead < 0x80) return 1;
  if ((lead >> 5) == 0x6) return 2;
  if ((lead >> 4) == 0xE) return 3;
  if ((lead >> 3) == 0x1E) return 4;
  return 1;
}

// Code point at byte offset i of valid UTF-8; advances i past it.
uint32_t next_code_point(std::string_view s, size_t& i);
void append_utf8(std::string& out, uint32_t cp);
// Byte offset of the first invalid UTF-8 sequence (overlong, surrogate, > U+10FFFF, truncated),
// or nullopt when `s` is valid.
std::optional<size_t> first_invalid_utf8(std::string_view s);
// Rust String::from_utf8_lossy: every maximal invalid subpart becomes one U+FFFD.
std::string utf8_lossy(std::string_view bytes);

// Rust char::is_whitespace (Unicode White_Space), used by lstrip/rstrip of added tokens.
bool is_white_space(uint32_t cp);
// regex-syntax is_word_character (Unicode \w: Alphabetic, M, Nd, Pc, Join_Control), used by
// single_word added tokens. Backed by PCRE2's Unicode tables, brought to Unicode 16.0 for the
// general categories (tokenizer_regex_classes.h).
bool is_word_character(uint32_t cp);

// GPT-2 bytes_to_unicode: bytes 33–126, 161–172, 174–255 map to themselves, the other 68 bytes
// to U+0100+n in increasing byte order (space → Ġ U+0120, \n → Ċ U+010A).
struct ByteLevelAlphabet {
  std::array<uint32_t, 256> byte_to_cp;
  std::array<std::string, 256> byte_to_utf8;  // byte_to_cp as UTF-8
  // Inverse over U+0000..U+0143 (the image of the map); -1 where no byte maps there.
  std::array<int16_t, 0x144> cp_to_byte;
  int cp_byte(uint32_t cp) const { return cp < cp_to_byte.size() ? cp_to_byte[cp] : -1; }
};
const ByteLevelAlphabet& byte_level_alphabet();

}  // namespace ftune::tok
