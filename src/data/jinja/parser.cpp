// Jinja parser (see parser.h): recursive descent over the token stream, one method per
// precedence level as in jinja2/parser.py.
#include "data/jinja/parser.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

#include "data/jinja/lexer.h"

namespace ftune::jinja {

namespace {

using T = Token::Type;

class Parser {
 public:
  Parser(std::vector<Token> tokens, int max_depth) : t_(std::move(tokens)), max_depth_(max_depth) {}

  std::shared_ptr<const ParsedTemplate> run() {
    auto out = std::make_shared<ParsedTemplate>();
    out->body = parse_body({});
    out->has_generation = has_generation_;
    return out;
  }

 private:
  // Guards recursion: every nested expression or block level counts one.
  struct Depth {
    Parser& p;
    explicit Depth(Parser& parser) : p(parser) {
      if (++p.depth_ > p.max_depth_) p.fail_here("template nesting is too deep");
    }
    ~Depth() { --p.depth_; }
  };

  const Token& cur() const { return t_[i_]; }
  const Token& peek(size_t k = 1) const { return t_[std::min(i_ + k, t_.size() - 1)]; }
  bool is_op(std::string_view s) const { return cur().type == T::op && cur().value == s; }
  bool is_name(std::string_view s) const { return cur().type == T::name && cur().value == s; }
  const Token& next() {
    const Token& tok = t_[i_];
    if (i_ + 1 < t_.size()) ++i_;
    return tok;
  }

  [[noreturn]] void fail_at(const Token& tok, const std::string& what) const {
    syntax_error(tok.line, tok.column, what);
  }
  [[noreturn]] void fail_here(const std::string& what) const { fail_at(cur(), what); }

  std::string describe(const Token& tok) const {
    switch (tok.type) {
      case T::eof: return "end of template";
      case T::var_end: return "'}}'";
      case T::block_end: return "'%}'";
      case T::var_begin: return "'{{'";
      case T::block_begin: return "'{%'";
      case T::text: return "template text";
      case T::string: return "string";
      default: return "'" + tok.value + "'";
    }
  }

  void expect_op(std::string_view s) {
    if (!is_op(s)) fail_here(fmt::format("expected '{}', got {}", s, describe(cur())));
    next();
  }
  std::string expect_name() {
    if (cur().type != T::name) fail_here(fmt::format("expected a name, got {}", describe(cur())));
    return next().value;
  }
  void expect_block_end() {
    if (cur().type != T::block_end) fail_here(fmt::format("expected end of statement block, got {}", describe(cur())));
    next();
  }

  ExprPtr node(Expr::Kind k, const Token& at) {
    auto e = std::make_unique<Expr>();
    e->kind = k;
    e->line = at.line;
    e->column = at.column;
    return e;
  }

  // ---- statements ------------------------------------------------------------------------

  // Parses until a block tag named in `end_tags`; stops with cur() at that tag's name.
  Body parse_body(const std::vector<std::string_view>& end_tags) {
    Depth d(*this);
    Body body;
    while (true) {
      const Token& tok = cur();
      if (tok.type == T::eof) {
        if (!end_tags.empty()) {
          fail_at(tok, fmt::format("unexpected end of template, expected '{}'", end_tags.back()));
        }
        return body;
      }
      if (tok.type == T::text) {
        auto s = stmt(Stmt::Kind::text, tok);
        s->text = tok.value;
        body.push_back(std::move(s));
        next();
      } else if (tok.type == T::var_begin) {
        next();
        auto s = stmt(Stmt::Kind::output, tok);
        s->expr = parse_tuple_expr();
        if (cur().type != T::var_end) fail_here(fmt::format("expected '}}}}', got {}", describe(cur())));
        next();
        body.push_back(std::move(s));
      } else if (tok.type == T::block_begin) {
        next();
        if (cur().type != T::name) fail_here(fmt::format("expected a statement name, got {}", describe(cur())));
        const std::string name = cur().value;
        if (std::find(end_tags.begin(), end_tags.end(), name) != end_tags.end()) return body;
        body.push_back(parse_statement());
      } else {
        fail_at(tok, fmt::format("unexpected {}", describe(tok)));
      }
    }
  }

  StmtPtr stmt(Stmt::Kind k, const Token& at) {
    auto s = std::make_unique<Stmt>();
    s->kind = k;
    s->line = at.line;
    return s;
  }

  StmtPtr parse_statement() {
    const Token& tok = cur();
    const std::string name = next().value;
    if (name == "if") return parse_if(tok);
    if (name == "for") return parse_for(tok);
    if (name == "set") return parse_set(tok);
    if (name == "macro") return parse_macro(tok);
    if (name == "call") return parse_call_block(tok);
    if (name == "filter") return parse_filter_block(tok);
    if (name == "generation") {
      has_generation_ = true;
      auto s = stmt(Stmt::Kind::generation, tok);
      expect_block_end();
      s->body = parse_body({"endgeneration"});
      next();
      expect_block_end();
      return s;
    }
    if (name == "break" || name == "continue") {
      if (loop_depth_ == 0) fail_at(tok, fmt::format("'{}' outside of a for loop", name));
      expect_block_end();
      return stmt(name == "break" ? Stmt::Kind::break_ : Stmt::Kind::continue_, tok);
    }
    fail_at(tok, fmt::format("encountered unknown tag '{}'", name));
  }

  StmtPtr parse_if(const Token& at) {
    auto s = stmt(Stmt::Kind::if_, at);
    ExprPtr cond = parse_expr();
    expect_block_end();
    while (true) {
      Body body = parse_body({"elif", "else", "endif"});
      s->branches.emplace_back(std::move(cond), std::move(body));
      const std::string tag = next().value;
      if (tag == "elif") {
        cond = parse_expr();
        expect_block_end();
      } else if (tag == "else") {
        expect_block_end();
        s->branches.emplace_back(nullptr, parse_body({"endif"}));
        next();
        expect_block_end();
        return s;
      } else {
        expect_block_end();
        return s;
      }
    }
  }

  std::vector<std::string> parse_targets() {
    std::vector<std::string> names;
    const bool paren = is_op("(");
    if (paren) next();
    names.push_back(expect_name());
    while (is_op(",")) {
      next();
      if (cur().type != T::name || is_name("in")) break;
      names.push_back(expect_name());
    }
    if (paren) expect_op(")");
    return names;
  }

  StmtPtr parse_for(const Token& at) {
    auto s = stmt(Stmt::Kind::for_, at);
    s->targets = parse_targets();
    if (!is_name("in")) fail_here(fmt::format("expected 'in', got {}", describe(cur())));
    next();
    s->expr = parse_tuple_expr(/*with_ternary=*/false);
    if (is_name("if")) {
      next();
      s->cond = parse_expr();
    }
    if (is_name("recursive")) fail_here("recursive for loops are not supported");
    expect_block_end();
    ++loop_depth_;
    s->body = parse_body({"endfor", "else"});
    --loop_depth_;
    if (next().value == "else") {
      expect_block_end();
      s->else_body = parse_body({"endfor"});
      next();
    }
    expect_block_end();
    return s;
  }

  StmtPtr parse_set(const Token& at) {
    const Token& target_tok = cur();
    std::string first = expect_name();
    std::string attr;
    std::vector<std::string> targets{first};
    if (is_op(".")) {
      next();
      attr = expect_name();
    } else {
      while (is_op(",")) {
        next();
        targets.push_back(expect_name());
      }
    }
    if (is_op("=")) {
      next();
      auto s = stmt(Stmt::Kind::set, at);
      s->targets = std::move(targets);
      s->attr = std::move(attr);
      s->expr = parse_tuple_expr();
      expect_block_end();
      return s;
    }
    if (!attr.empty() || targets.size() != 1) fail_at(target_tok, "expected '=' after set target");
    auto s = stmt(Stmt::Kind::set_block, at);
    s->targets = std::move(targets);
    if (is_op("|")) s->expr = parse_filter_chain();
    expect_block_end();
    s->body = parse_body({"endset"});
    next();
    expect_block_end();
    return s;
  }

  std::vector<MacroParam> parse_params() {
    std::vector<MacroParam> params;
    expect_op("(");
    while (!is_op(")")) {
      if (!params.empty()) expect_op(",");
      if (is_op(")")) break;
      MacroParam p;
      p.name = expect_name();
      if (is_op("=")) {
        next();
        p.default_value = parse_expr();
      }
      params.push_back(std::move(p));
    }
    next();
    return params;
  }

  StmtPtr parse_macro(const Token& at) {
    auto s = stmt(Stmt::Kind::macro, at);
    s->name = expect_name();
    s->params = parse_params();
    expect_block_end();
    const int saved = loop_depth_;
    loop_depth_ = 0;
    s->body = parse_body({"endmacro"});
    loop_depth_ = saved;
    next();
    if (cur().type == T::name) next();  // {% endmacro name %}
    expect_block_end();
    return s;
  }

  StmtPtr parse_call_block(const Token& at) {
    auto s = stmt(Stmt::Kind::call_block, at);
    if (is_op("(")) s->params = parse_params();
    s->expr = parse_expr();
    if (s->expr->kind != Expr::Kind::call) fail_at(at, "expected a call after 'call'");
    expect_block_end();
    s->body = parse_body({"endcall"});
    next();
    expect_block_end();
    return s;
  }

  // `| f(args) | g`: a filter chain applied to a value given later (a = null at the bottom).
  ExprPtr parse_filter_chain() {
    ExprPtr chain;
    while (is_op("|") || !chain) {
      if (is_op("|")) next();
      chain = parse_filter(std::move(chain));
    }
    return chain;
  }

  StmtPtr parse_filter_block(const Token& at) {
    auto s = stmt(Stmt::Kind::filter_block, at);
    s->expr = parse_filter_chain();
    expect_block_end();
    s->body = parse_body({"endfilter"});
    next();
    expect_block_end();
    return s;
  }

  // ---- expressions -----------------------------------------------------------------------

  ExprPtr parse_tuple_expr(bool with_ternary = true) {
    const Token& at = cur();
    ExprPtr first = with_ternary ? parse_expr() : parse_or();
    if (!is_op(",")) return first;
    auto t = node(Expr::Kind::tuple, at);
    t->args.push_back(std::move(first));
    while (is_op(",")) {
      next();
      if (cur().type == T::var_end || cur().type == T::block_end || is_name("if")) break;
      t->args.push_back(with_ternary ? parse_expr() : parse_or());
    }
    return t;
  }

  ExprPtr parse_expr() {
    Depth d(*this);
    ExprPtr a = parse_or();
    while (is_name("if")) {
      const Token& at = next();
      auto t = node(Expr::Kind::ternary, at);
      t->b = parse_or();
      if (is_name("else")) {
        next();
        t->c = parse_expr();
      }
      t->a = std::move(a);
      a = std::move(t);
    }
    return a;
  }

  ExprPtr binary(const Token& at, std::string op, ExprPtr a, ExprPtr b) {
    auto e = node(Expr::Kind::binary, at);
    e->name = std::move(op);
    e->a = std::move(a);
    e->b = std::move(b);
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr a = parse_and();
    while (is_name("or")) {
      const Token& at = next();
      a = binary(at, "or", std::move(a), parse_and());
    }
    return a;
  }

  ExprPtr parse_and() {
    ExprPtr a = parse_not();
    while (is_name("and")) {
      const Token& at = next();
      a = binary(at, "and", std::move(a), parse_not());
    }
    return a;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      Depth d(*this);
      const Token& at = next();
      auto e = node(Expr::Kind::unary, at);
      e->name = "not";
      e->a = parse_not();
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    ExprPtr a = parse_math1();
    while (true) {
      const Token& at = cur();
      if (at.type == T::op && (at.value == "==" || at.value == "!=" || at.value == "<" ||
                               at.value == "<=" || at.value == ">" || at.value == ">=")) {
        const std::string op = next().value;
        a = binary(at, op, std::move(a), parse_math1());
      } else if (is_name("in")) {
        next();
        a = binary(at, "in", std::move(a), parse_math1());
      } else if (is_name("not") && peek().type == T::name && peek().value == "in") {
        next();
        next();
        a = binary(at, "notin", std::move(a), parse_math1());
      } else {
        return a;
      }
    }
  }

  ExprPtr parse_math1() {
    ExprPtr a = parse_concat();
    while (is_op("+") || is_op("-")) {
      const Token& at = cur();
      const std::string op = next().value;
      a = binary(at, op, std::move(a), parse_concat());
    }
    return a;
  }

  ExprPtr parse_concat() {
    ExprPtr a = parse_math2();
    while (is_op("~")) {
      const Token& at = next();
      a = binary(at, "~", std::move(a), parse_math2());
    }
    return a;
  }

  ExprPtr parse_math2() {
    ExprPtr a = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const Token& at = cur();
      const std::string op = next().value;
      a = binary(at, op, std::move(a), parse_pow());
    }
    return a;
  }

  ExprPtr parse_pow() {
    ExprPtr a = parse_unary(true);
    while (is_op("**")) {
      const Token& at = next();
      a = binary(at, "**", std::move(a), parse_unary(true));
    }
    return a;
  }

  ExprPtr parse_unary(bool with_filter) {
    Depth d(*this);
    ExprPtr e;
    if (is_op("-") || is_op("+")) {
      const Token& at = cur();
      auto u = node(Expr::Kind::unary, at);
      u->name = next().value;
      u->a = parse_unary(false);
      e = std::move(u);
    } else {
      e = parse_postfix(parse_primary());
    }
    if (with_filter) return parse_filter_expr(std::move(e));
    return e;
  }

  ExprPtr parse_primary() {
    const Token& tok = cur();
    switch (tok.type) {
      case T::name: {
        next();
        auto e = node(Expr::Kind::literal, tok);
        if (tok.value == "true" || tok.value == "True") e->value = Value(true);
        else if (tok.value == "false" || tok.value == "False") e->value = Value(false);
        else if (tok.value == "none" || tok.value == "None") e->value = Value::none();
        else {
          e->kind = Expr::Kind::name;
          e->name = tok.value;
        }
        return e;
      }
      case T::string: {
        std::string s = next().value;
        while (cur().type == T::string) s += next().value;  // adjacent literals concatenate
        auto e = node(Expr::Kind::literal, tok);
        e->value = Value(std::move(s));
        return e;
      }
      case T::integer: {
        next();
        auto e = node(Expr::Kind::literal, tok);
        int64_t v = 0;
        const auto r = std::from_chars(tok.value.data(), tok.value.data() + tok.value.size(), v);
        if (r.ec != std::errc()) e->value = Value(std::stod(tok.value));  // beyond int64
        else e->value = Value(v);
        return e;
      }
      case T::floating: {
        next();
        auto e = node(Expr::Kind::literal, tok);
        e->value = Value(std::strtod(tok.value.c_str(), nullptr));
        return e;
      }
      case T::op:
        if (tok.value == "(") {
          next();
          if (is_op(")")) {
            next();
            return node(Expr::Kind::tuple, tok);
          }
          ExprPtr first = parse_expr();
          if (!is_op(",")) {
            expect_op(")");
            return first;
          }
          auto t = node(Expr::Kind::tuple, tok);
          t->args.push_back(std::move(first));
          while (is_op(",")) {
            next();
            if (is_op(")")) break;
            t->args.push_back(parse_expr());
          }
          expect_op(")");
          return t;
        }
        if (tok.value == "[") {
          next();
          auto l = node(Expr::Kind::list, tok);
          while (!is_op("]")) {
            if (!l->args.empty()) expect_op(",");
            if (is_op("]")) break;
            l->args.push_back(parse_expr());
          }
          next();
          return l;
        }
        if (tok.value == "{") {
          next();
          auto d = node(Expr::Kind::dict, tok);
          while (!is_op("}")) {
            if (!d->args.empty()) expect_op(",");
            if (is_op("}")) break;
            d->args.push_back(parse_expr());
            expect_op(":");
            d->args.push_back(parse_expr());
          }
          next();
          return d;
        }
        break;
      default:
        break;
    }
    fail_at(tok, fmt::format("unexpected {}", describe(tok)));
  }

  void parse_call_args(Expr& call) {
    expect_op("(");
    while (!is_op(")")) {
      if (!call.args.empty() || !call.kwargs.empty()) expect_op(",");
      if (is_op(")")) break;
      if (is_op("*") || is_op("**")) fail_here("*args and **kwargs in calls are not supported");
      if (cur().type == T::name && peek().type == T::op && peek().value == "=") {
        std::string key = next().value;
        next();
        call.kwargs.emplace_back(std::move(key), parse_expr());
      } else {
        if (!call.kwargs.empty()) fail_here("positional argument follows keyword argument");
        call.args.push_back(parse_expr());
      }
    }
    next();
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      const Token& at = cur();
      if (is_op(".")) {
        next();
        if (cur().type == T::name) {
          auto a = node(Expr::Kind::attr, at);
          a->name = next().value;
          a->a = std::move(e);
          e = std::move(a);
        } else if (cur().type == T::integer) {
          auto a = node(Expr::Kind::item, at);
          a->a = std::move(e);
          a->b = parse_primary();
          e = std::move(a);
        } else {
          fail_here(fmt::format("expected an attribute name, got {}", describe(cur())));
        }
      } else if (is_op("[")) {
        next();
        e = parse_subscript(at, std::move(e));
      } else if (is_op("(")) {
        auto c = node(Expr::Kind::call, at);
        c->a = std::move(e);
        parse_call_args(*c);
        e = std::move(c);
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_subscript(const Token& at, ExprPtr target) {
    std::vector<ExprPtr> parts(1);
    bool is_slice = false;
    while (!is_op("]")) {
      if (is_op(":")) {
        next();
        is_slice = true;
        if (parts.size() == 3) fail_here("too many ':' in slice");
        parts.emplace_back();
        continue;
      }
      if (parts.back()) fail_here(fmt::format("expected ']', got {}", describe(cur())));
      parts.back() = parse_expr();
    }
    next();
    if (!is_slice) {
      if (!parts[0]) fail_at(at, "empty subscript");
      auto e = node(Expr::Kind::item, at);
      e->a = std::move(target);
      e->b = std::move(parts[0]);
      return e;
    }
    auto e = node(Expr::Kind::slice, at);
    e->a = std::move(target);
    parts.resize(3);
    e->args = std::move(parts);
    return e;
  }

  ExprPtr parse_filter(ExprPtr operand) {
    const Token& at = cur();
    auto f = node(Expr::Kind::filter, at);
    f->name = expect_name();
    while (is_op(".")) {
      next();
      f->name += "." + expect_name();
    }
    f->a = std::move(operand);
    if (is_op("(")) parse_call_args(*f);
    return f;
  }

  ExprPtr parse_filter_expr(ExprPtr e) {
    while (true) {
      if (is_op("|")) {
        next();
        e = parse_filter(std::move(e));
      } else if (is_name("is")) {
        const Token& at = next();
        auto t = node(Expr::Kind::test, at);
        if (is_name("not")) {
          next();
          t->negate = true;
        }
        t->name = expect_name();
        while (is_op(".")) {
          next();
          t->name += "." + expect_name();
        }
        t->a = std::move(e);
        const Token& c = cur();
        if (is_op("(")) {
          parse_call_args(*t);
        } else if ((c.type == T::name || c.type == T::string || c.type == T::integer ||
                    c.type == T::floating || is_op("[") || is_op("{")) &&
                   !(is_name("else") || is_name("or") || is_name("and"))) {
          if (is_name("is")) fail_here("you cannot chain multiple tests with is");
          t->args.push_back(parse_postfix(parse_primary()));
        }
        e = std::move(t);
      } else if (is_op("(")) {
        const Token& at = cur();
        auto c = node(Expr::Kind::call, at);
        c->a = std::move(e);
        parse_call_args(*c);
        e = std::move(c);
      } else {
        return e;
      }
    }
  }

  std::vector<Token> t_;
  size_t i_ = 0;
  int depth_ = 0;
  int max_depth_;
  int loop_depth_ = 0;
  bool has_generation_ = false;
};

}  // namespace

std::shared_ptr<const ParsedTemplate> parse_template(std::string_view source, int max_depth) {
  return Parser(tokenize(source), max_depth).run();
}

}  // namespace ftune::jinja
