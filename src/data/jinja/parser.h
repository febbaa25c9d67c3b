// Jinja parser: tokens (lexer.h) to a syntax tree (ast.h), following jinja2's grammar and
// operator precedence (jinja2/parser.py): ternary < or < and < not < comparisons/in < + - <
// ~ < * / // % < ** < unary -/+ < postfix (.attr, [item], (call)) with |filters and `is` tests
// binding to the operand before them.
// Statements: if/elif/else, for (targets, `if` filter, else, recursive is refused), set (names,
// tuples, ns.attr, block form), macro, call, generation, filter, break/continue, raw.
// Errors: ftune::Error "template syntax error at line L, column C: ...".
#pragma once
#include <memory>
#include <string_view>

#include "data/jinja/ast.h"

namespace ftune::jinja {

struct ParsedTemplate {
  Body body;
  bool has_generation = false;  // contains {% generation %}
};

// Parses template source; nesting deeper than `max_depth` (expressions or blocks) is a syntax
// error, so a hostile template cannot exhaust the stack.
std::shared_ptr<const ParsedTemplate> parse_template(std::string_view source, int max_depth = 200);

}  // namespace ftune::jinja
