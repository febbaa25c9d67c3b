// Jinja lexer: template text to a flat token stream, applying whitespace control the way
// jinja2's lexer does with transformers' settings (trim_blocks=True, lstrip_blocks=True,
// keep_trailing_newline=False): '{%-' / '-%}' strip all whitespace on that side, '{%+' / '+%}'
// keep it, a block or comment tag alone on its line loses its indentation, the newline right
// after a block or comment tag is dropped, \r\n becomes \n, and one trailing newline of the
// template is removed. Comments produce no tokens; {% raw %}...{% endraw %} becomes text.
#pragma once
#include <string>
#include <string_view>
#include <vector>

namespace ftune::jinja {

struct Token {
  enum class Type { text, var_begin, var_end, block_begin, block_end, name, string, integer,
                    floating, op, eof };
  Type type;
  std::string value;  // text, name, unescaped string literal, number spelling, operator
  int line = 1;
  int column = 1;
};

struct LexOptions {
  bool trim_blocks = true;
  bool lstrip_blocks = true;
};

// Throws ftune::Error "template syntax error at line L, column C: ..." on an unterminated tag,
// string or comment, or an unexpected character.
std::vector<Token> tokenize(std::string_view source, const LexOptions& opts = {});

// "template syntax error at line L, column C: what" (the format every syntax error uses).
[[noreturn]] void syntax_error(int line, int column, const std::string& what);

}  // namespace ftune::jinja
