// Syntax tree of a parsed Jinja template: expressions and statements (see parser.h for the
// grammar, interpreter.h for their meaning).
#pragma once
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "data/jinja/value.h"

namespace ftune::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;
using KwArgs = std::vector<std::pair<std::string, ExprPtr>>;

struct Expr {
  enum class Kind {
    literal,   // value
    name,      // name
    list,      // args
    tuple,     // args
    dict,      // args = key, value, key, value, ...
    attr,      // a.name
    item,      // a[b]
    slice,     // a[args[0]:args[1]:args[2]] (null = omitted)
    call,      // a(args, kwargs)
    filter,    // a | name(args, kwargs)
    test,      // a is [not] name(args)   (negate)
    unary,     // name in {not, -, +} applied to a
    binary,    // a name b: or and == != < <= > >= in notin + - * / // % ** ~
    ternary,   // a if b else c  (c may be null: undefined)
  };
  Kind kind;
  int line = 0;
  int column = 0;
  Value value;
  std::string name;
  bool negate = false;
  ExprPtr a, b, c;
  std::vector<ExprPtr> args;  // null entries allowed for slice bounds
  KwArgs kwargs;
};

struct Stmt;
using StmtPtr = std::unique_ptr<Stmt>;
using Body = std::vector<StmtPtr>;

struct MacroParam {
  std::string name;
  ExprPtr default_value;  // null = required
};

struct Stmt {
  enum class Kind {
    text,        // text
    output,      // {{ expr }}
    if_,         // branches (cond null = else)
    for_,        // targets in expr [if cond] body [else else_body]
    set,         // targets = expr, or ns.attr = expr (attr non-empty)
    set_block,   // {% set name %}body{% endset %} (filter: optional filter chain on expr)
    macro,       // name(params) body
    call_block,  // {% call(params) expr %}body{% endcall %}: body is caller()
    generation,  // {% generation %}body{% endgeneration %}
    filter_block,// {% filter name %}body{% endfilter %}: expr is the filter applied to body
    break_,
    continue_,
  };
  Kind kind;
  int line = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr cond;
  std::vector<std::string> targets;
  std::string attr;
  std::vector<std::pair<ExprPtr, Body>> branches;
  Body body;
  Body else_body;
  std::string name;
  std::vector<MacroParam> params;
};

}  // namespace ftune::jinja
