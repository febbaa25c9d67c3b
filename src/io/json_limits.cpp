// Nesting-depth check of untrusted JSON text (see json_limits.h).
#include "io/json_limits.h"

#include "core/error.h"

namespace ftune {

size_t json_nesting_overflow(std::string_view text, int max_depth) {
  int depth = 0;
  bool in_string = false, escaped = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) return i;
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return std::string_view::npos;
}

void check_json_nesting(std::string_view text, const std::string& origin, int max_depth) {
  const size_t at = json_nesting_overflow(text, max_depth);
  if (at == std::string_view::npos) return;
  size_t line = 1, col = 1;
  for (size_t i = 0; i < at; ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  fail("{}: line {}, column {}: JSON nested deeper than {} levels (refused: no real file nests "
       "this deep)",
       origin, line, col, max_depth);
}

}  // namespace ftune
