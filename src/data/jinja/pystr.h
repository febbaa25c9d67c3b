// Python str semantics on UTF-8 text, for the Jinja interpreter: strings index, slice and count
// by code point; strip/split without arguments use str.isspace(); lower/upper/title/capitalize
// map ASCII, Latin-1, Greek and Cyrillic letters (other scripts pass through unchanged).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ftune::jinja {

std::u32string utf8_decode(std::string_view s);  // invalid bytes decode as U+FFFD
std::string utf8_encode(std::u32string_view s);
void utf8_append(std::string& out, char32_t cp);
bool is_python_space(char32_t c);

// str.strip/lstrip/rstrip(chars): chars = nullopt strips whitespace.
std::string py_strip(std::string_view s, const std::optional<std::string>& chars, bool left,
                     bool right);
// str.split(sep, maxsplit) / rsplit: sep = nullopt splits on runs of whitespace.
std::vector<std::string> py_split(std::string_view s, const std::optional<std::string>& sep,
                                  int64_t maxsplit, bool from_right = false);
std::string py_lower(std::string_view s);
std::string py_upper(std::string_view s);
std::string py_title(std::string_view s);
std::string py_capitalize(std::string_view s);
std::string py_replace(std::string_view s, std::string_view old, std::string_view with,
                       int64_t count);
std::string py_repr_string(std::string_view s);  // repr() of a str, with its quotes

}  // namespace ftune::jinja
