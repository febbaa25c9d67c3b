// Jinja interpreter (see interpreter.h): statements, scopes, macros and expression evaluation.
#include "data/jinja/interpreter.h"

#include <fmt/format.h>

#include <cmath>

#include "data/jinja/builtins.h"
#include "data/jinja/lexer.h"
#include "data/jinja/pystr.h"

namespace ftune::jinja {

namespace {

// Refuses unknown filter and test names, as jinja2 does when it compiles a template.
void check_names(const Expr* e);
void check_names(const Body& body) {
  for (const auto& s : body) {
    check_names(s->expr.get());
    check_names(s->cond.get());
    for (const auto& [c, b] : s->branches) {
      check_names(c.get());
      check_names(b);
    }
    for (const auto& p : s->params) check_names(p.default_value.get());
    check_names(s->body);
    check_names(s->else_body);
  }
}
void check_names(const Expr* e) {
  if (!e) return;
  if (e->kind == Expr::Kind::filter && !is_known_filter(e->name)) {
    syntax_error(e->line, e->column, fmt::format("no filter named '{}'", e->name));
  }
  if (e->kind == Expr::Kind::test && !is_known_test(e->name)) {
    syntax_error(e->line, e->column, fmt::format("no test named '{}'", e->name));
  }
  check_names(e->a.get());
  check_names(e->b.get());
  check_names(e->c.get());
  for (const auto& x : e->args) check_names(x.get());
  for (const auto& [k, x] : e->kwargs) check_names(x.get());
}

Value slice(const Value& v, const std::vector<std::optional<int64_t>>& p, int line) {
  const int64_t step = p[2].value_or(1);
  if (step == 0) throw RenderError("slice step cannot be zero");
  std::u32string chars;
  int64_t n = 0;
  if (v.is_string()) {
    chars = utf8_decode(v.str());
    n = static_cast<int64_t>(chars.size());
  } else if (v.is_list()) {
    n = static_cast<int64_t>(v.items().size());
  } else if (v.is_undefined()) {
    throw RenderError(v.undefined_hint().empty() ? "undefined value is not subscriptable" : v.undefined_hint());
  } else {
    throw RenderError(fmt::format("'{}' object is not subscriptable", v.type_name()));
  }
  // Python's slice.indices().
  auto clamp = [&](std::optional<int64_t> x, bool is_start) {
    if (!x) return step > 0 ? (is_start ? int64_t{0} : n) : (is_start ? n - 1 : int64_t{-1});
    int64_t i = *x;
    if (i < 0) i += n;
    if (step > 0) return std::clamp<int64_t>(i, 0, n);
    return std::clamp<int64_t>(i, -1, n - 1);
  };
  const int64_t start = clamp(p[0], true), stop = clamp(p[1], false);
  std::vector<int64_t> idx;
  for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) idx.push_back(i);
  if (v.is_string()) {
    std::u32string out;
    for (int64_t i : idx) out.push_back(chars[static_cast<size_t>(i)]);
    return Value(utf8_encode(out));
  }
  Value::List out;
  for (int64_t i : idx) out.push_back(v.items()[static_cast<size_t>(i)]);
  return Value::list(std::move(out), v.is_tuple());
}

std::string undefined_message(const Value& v, const std::string& fallback) {
  return v.undefined_hint().empty() ? fallback : v.undefined_hint();
}

Value get_attr(const Value& obj, const std::string& name) {
  if (obj.is_undefined()) throw RenderError(undefined_message(obj, "undefined value has no attribute '" + name + "'"));
  if (obj.is_namespace()) {
    if (const Value* v = obj.find(name)) return *v;
    return Value::undefined(fmt::format("'Namespace' object has no attribute '{}'", name));
  }
  if (auto m = bound_method(obj, name)) return *m;
  if (obj.is_dict()) {
    if (const Value* v = obj.find(name)) return *v;
  }
  return Value::undefined(fmt::format("'{} object' has no attribute '{}'", obj.type_name(), name));
}

Value get_item(const Value& obj, const Value& key) {
  if (obj.is_undefined()) throw RenderError(undefined_message(obj, "undefined value is not subscriptable"));
  if (obj.is_dict() || obj.is_namespace()) {
    if (const Value* v = obj.find(key)) return *v;
  } else if ((obj.is_list() || obj.is_string()) && key.is_number() && !key.is_undefined() &&
             key.kind() != Value::Kind::floating) {
    int64_t i = key.as_int();
    const int64_t n = obj.is_list() ? static_cast<int64_t>(obj.items().size()) : obj.length();
    if (i < 0) i += n;
    if (i >= 0 && i < n) {
      if (obj.is_list()) return obj.items()[static_cast<size_t>(i)];
      return slice(obj, {i, i + 1, 1}, 0);
    }
    return Value::undefined(fmt::format("{} object has no element {}", obj.type_name(), key.as_int()));
  }
  if (key.is_string()) return get_attr(obj, key.str());
  return Value::undefined(fmt::format("'{} object' has no attribute {}", obj.type_name(), key.repr()));
}

}  // namespace

std::shared_ptr<const ParsedTemplate> load_template(std::string_view source) {
  auto t = parse_template(source);
  check_names(t->body);
  return t;
}

Interpreter::Interpreter(const ParsedTemplate& tmpl, std::unordered_map<std::string, Value> globals,
                         const RenderLimits& limits)
    : tmpl_(tmpl), globals_(std::move(globals)), limits_(limits) {}

RenderResult Interpreter::render() {
  RenderResult r;
  scopes_.assign(1, Scope{});
  frame_base_.assign(1, 0);
  out_ = &r.text;
  exec(tmpl_.body);
  r.generation_spans = std::move(spans_);
  return r;
}

void Interpreter::fail(int line, const std::string& what) const {
  throw RenderError(line > 0 ? fmt::format("{} (template line {})", what, line) : what);
}

void Interpreter::count_step() {
  if (++steps_ > limits_.max_steps) {
    fail(line_, fmt::format("template stopped after {} steps (a runaway loop?)", limits_.max_steps));
  }
}

void Interpreter::write(const std::string& text) {
  out_->append(text);
  if (out_->size() > limits_.max_output_bytes) {
    fail(line_, fmt::format("template output exceeds {} bytes", limits_.max_output_bytes));
  }
}

std::string Interpreter::capture(const Body& body) {
  std::string buf;
  std::string* saved = out_;
  out_ = &buf;
  ++capture_depth_;
  try {
    exec(body);
  } catch (...) {
    out_ = saved;
    --capture_depth_;
    throw;
  }
  out_ = saved;
  --capture_depth_;
  return buf;
}

Value Interpreter::lookup(const std::string& name) const {
  for (size_t i = scopes_.size(); i-- > frame_base_.back();) {
    auto it = scopes_[i].find(name);
    if (it != scopes_[i].end()) return it->second;
  }
  if (frame_base_.back() > 0) {
    auto it = scopes_[0].find(name);
    if (it != scopes_[0].end()) return it->second;
  }
  auto it = globals_.find(name);
  if (it != globals_.end()) return it->second;
  return Value::undefined(fmt::format("'{}' is undefined", name));
}

void Interpreter::assign(const std::string& name, Value v) { scopes_.back()[name] = std::move(v); }

Interpreter::Flow Interpreter::exec(const Body& body) {
  for (const auto& s : body) {
    const Flow f = exec(*s);
    if (f != Flow::normal) return f;
  }
  return Flow::normal;
}

Interpreter::Flow Interpreter::exec(const Stmt& s) {
  count_step();
  line_ = s.line;
  switch (s.kind) {
    case Stmt::Kind::text:
      write(s.text);
      return Flow::normal;
    case Stmt::Kind::output:
      write(eval(*s.expr).to_str());
      return Flow::normal;
    case Stmt::Kind::if_:
      for (const auto& [cond, body] : s.branches) {
        if (!cond || eval(*cond).truthy()) return exec(body);
      }
      return Flow::normal;
    case Stmt::Kind::for_: {
      Flow flow = Flow::normal;
      exec_for(s, flow);
      return flow;
    }
    case Stmt::Kind::set:
      exec_set(s, eval(*s.expr));
      return Flow::normal;
    case Stmt::Kind::set_block: {
      Value v(capture(s.body));
      if (s.expr) {
        CallArgs none;
        // The chain's innermost filter has no operand: apply the chain to the captured text.
        std::vector<const Expr*> chain;
        for (const Expr* e = s.expr.get(); e; e = e->a.get()) chain.push_back(e);
        for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
          CallArgs args;
          for (const auto& a : (*it)->args) args.positional.push_back(eval(*a));
          for (const auto& [k, a] : (*it)->kwargs) args.keyword.emplace_back(k, eval(*a));
          v = filter((*it)->name, v, args);
        }
      }
      assign(s.targets[0], std::move(v));
      return Flow::normal;
    }
    case Stmt::Kind::filter_block: {
      Value v(capture(s.body));
      std::vector<const Expr*> chain;
      for (const Expr* e = s.expr.get(); e; e = e->a.get()) chain.push_back(e);
      for (auto it = chain.rbegin(); it != chain.rend(); ++it) {
        CallArgs args;
        for (const auto& a : (*it)->args) args.positional.push_back(eval(*a));
        for (const auto& [k, a] : (*it)->kwargs) args.keyword.emplace_back(k, eval(*a));
        v = filter((*it)->name, v, args);
      }
      write(v.to_str());
      return Flow::normal;
    }
    case Stmt::Kind::macro:
      assign(s.name, define_macro(s));
      return Flow::normal;
    case Stmt::Kind::call_block: {
      const Expr& call = *s.expr;
      Value fn = eval(*call.a);
      CallArgs args;
      for (const auto& a : call.args) args.positional.push_back(eval(*a));
      for (const auto& [k, a] : call.kwargs) args.keyword.emplace_back(k, eval(*a));
      // caller(): the call block's body as a macro with the block's parameters.
      const Stmt* block = &s;
      Value caller = Value::function("caller", [block](Interpreter& in, CallArgs& a) {
        return in.call_macro(*block, a, nullptr);
      });
      args.keyword.emplace_back("caller", caller);
      write(this->call(fn, args).to_str());
      return Flow::normal;
    }
    case Stmt::Kind::generation: {
      const size_t begin = out_->size();
      const Flow f = exec(s.body);
      if (capture_depth_ == 0) spans_.emplace_back(begin, out_->size());
      return f;
    }
    case Stmt::Kind::break_:
      return Flow::break_;
    case Stmt::Kind::continue_:
      return Flow::continue_;
  }
  return Flow::normal;
}

void Interpreter::exec_set(const Stmt& s, Value v) {
  if (!s.attr.empty()) {
    Value target = lookup(s.targets[0]);
    if (!target.is_namespace()) fail(s.line, "cannot assign attribute on non-namespace object");
    target.ns_set(s.attr, std::move(v));
    return;
  }
  if (s.targets.size() == 1) {
    assign(s.targets[0], std::move(v));
    return;
  }
  const Value::List items = v.iterate();
  if (items.size() != s.targets.size()) {
    fail(s.line, fmt::format("cannot unpack {} values into {} names", items.size(), s.targets.size()));
  }
  for (size_t k = 0; k < items.size(); ++k) assign(s.targets[k], items[k]);
}

void Interpreter::exec_for(const Stmt& s, Flow& flow) {
  const Value seq = eval(*s.expr);
  Value::List all;
  if (seq.is_dict()) {
    all = seq.iterate();
  } else if (seq.is_list() || seq.is_string() || seq.is_undefined()) {
    all = seq.iterate();
  } else {
    fail(s.line, fmt::format("'{}' object is not iterable", seq.type_name()));
  }
  auto bind = [&](const Value& item) {
    if (s.targets.size() == 1) {
      assign(s.targets[0], item);
      return;
    }
    const Value::List parts = item.iterate();
    if (parts.size() != s.targets.size()) {
      fail(s.line, fmt::format("cannot unpack {} values into {} loop variables", parts.size(), s.targets.size()));
    }
    for (size_t k = 0; k < parts.size(); ++k) assign(s.targets[k], parts[k]);
  };
  // The `if` filter runs before the loop, so loop.length counts the kept items only.
  Value::List items;
  if (s.cond) {
    for (const Value& item : all) {
      scopes_.emplace_back();
      try {
        bind(item);
        if (eval(*s.cond).truthy()) items.push_back(item);
      } catch (...) {
        scopes_.pop_back();
        throw;
      }
      scopes_.pop_back();
    }
  } else {
    items = std::move(all);
  }
  if (items.empty()) {
    if (!s.else_body.empty()) flow = exec(s.else_body);
    return;
  }
  const int64_t n = static_cast<int64_t>(items.size());
  for (int64_t k = 0; k < n; ++k) {
    count_step();
    const Value::List cycle_items;
    Value::Dict loop;
    loop.emplace_back(Value("index"), Value(k + 1));
    loop.emplace_back(Value("index0"), Value(k));
    loop.emplace_back(Value("revindex"), Value(n - k));
    loop.emplace_back(Value("revindex0"), Value(n - k - 1));
    loop.emplace_back(Value("first"), Value(k == 0));
    loop.emplace_back(Value("last"), Value(k == n - 1));
    loop.emplace_back(Value("length"), Value(n));
    loop.emplace_back(Value("depth"), Value(int64_t{1}));
    loop.emplace_back(Value("depth0"), Value(int64_t{0}));
    loop.emplace_back(Value("previtem"), k > 0 ? items[static_cast<size_t>(k - 1)]
                                               : Value::undefined("there is no previous item"));
    loop.emplace_back(Value("nextitem"), k + 1 < n ? items[static_cast<size_t>(k + 1)]
                                                   : Value::undefined("there is no next item"));
    loop.emplace_back(Value("cycle"), Value::function("cycle", [k](Interpreter&, CallArgs& a) {
      if (a.positional.empty()) throw RenderError("no items for cycling given");
      return a.positional[static_cast<size_t>(k) % a.positional.size()];
    }));
    scopes_.emplace_back();
    Flow f = Flow::normal;
    try {
      assign("loop", Value::dict(std::move(loop)));
      bind(items[static_cast<size_t>(k)]);
      f = exec(s.body);
    } catch (...) {
      scopes_.pop_back();
      throw;
    }
    scopes_.pop_back();
    if (f == Flow::break_) break;
  }
}

Value Interpreter::define_macro(const Stmt& s) {
  const Stmt* m = &s;
  return Value::function(s.name, [m](Interpreter& in, CallArgs& args) {
    return in.call_macro(*m, args, nullptr);
  });
}

Value Interpreter::call_macro(const Stmt& s, CallArgs& args, const Value*) {
  if (call_depth_ >= limits_.max_call_depth) {
    fail(s.line, fmt::format("macro calls nested deeper than {}", limits_.max_call_depth));
  }
  Scope frame;
  Value::List varargs;
  size_t k = 0;
  for (; k < args.positional.size(); ++k) {
    if (k < s.params.size()) frame[s.params[k].name] = args.positional[k];
    else varargs.push_back(args.positional[k]);
  }
  Value::Dict kwargs;
  for (auto& [key, v] : args.keyword) {
    bool is_param = false;
    for (const auto& p : s.params) is_param |= p.name == key;
    if (is_param) frame[key] = v;
    else if (key == "caller") frame["caller"] = v;
    else kwargs.emplace_back(Value(key), v);
  }
  frame["varargs"] = Value::list(std::move(varargs));
  frame["kwargs"] = Value::dict(std::move(kwargs));
  const int saved_line = line_;
  scopes_.push_back(std::move(frame));
  frame_base_.push_back(scopes_.size() - 1);
  ++call_depth_;
  std::string out;
  try {
    for (const auto& p : s.params) {  // defaults are evaluated in the macro's scope, in order
      if (scopes_.back().count(p.name)) continue;
      scopes_.back()[p.name] = p.default_value
                                   ? eval(*p.default_value)
                                   : Value::undefined(fmt::format("parameter '{}' was not provided", p.name));
    }
    out = capture(s.body);
  } catch (...) {
    --call_depth_;
    frame_base_.pop_back();
    scopes_.pop_back();
    throw;
  }
  --call_depth_;
  frame_base_.pop_back();
  scopes_.pop_back();
  line_ = saved_line;
  return Value(std::move(out));
}

Value Interpreter::call(const Value& fn, CallArgs& args) { return fn.call(*this, args); }

Value Interpreter::filter(const std::string& name, const Value& input, CallArgs& args) {
  return apply_filter(*this, name, input, args);
}

bool Interpreter::test(const std::string& name, const Value& input, CallArgs& args) {
  return apply_test(*this, name, input, args);
}

Value Interpreter::eval_call_args(const Expr& e, CallArgs& args) {
  for (const auto& a : e.args) args.positional.push_back(eval(*a));
  for (const auto& [k, a] : e.kwargs) args.keyword.emplace_back(k, eval(*a));
  return Value();
}

Value Interpreter::eval(const Expr& e) {
  count_step();
  try {
    switch (e.kind) {
      case Expr::Kind::literal:
        return e.value;
      case Expr::Kind::name:
        return lookup(e.name);
      case Expr::Kind::list:
      case Expr::Kind::tuple: {
        Value::List items;
        for (const auto& a : e.args) items.push_back(eval(*a));
        return Value::list(std::move(items), e.kind == Expr::Kind::tuple);
      }
      case Expr::Kind::dict: {
        Value::Dict items;
        for (size_t k = 0; k + 1 < e.args.size(); k += 2) {
          Value key = eval(*e.args[k]);
          Value v = eval(*e.args[k + 1]);
          bool replaced = false;
          for (auto& [ek, ev] : items) {
            if (ek.equals(key)) {
              ev = v;
              replaced = true;
            }
          }
          if (!replaced) items.emplace_back(std::move(key), std::move(v));
        }
        return Value::dict(std::move(items));
      }
      case Expr::Kind::attr:
        return get_attr(eval(*e.a), e.name);
      case Expr::Kind::item:
        return get_item(eval(*e.a), eval(*e.b));
      case Expr::Kind::slice: {
        const Value v = eval(*e.a);
        std::vector<std::optional<int64_t>> parts(3);
        for (size_t k = 0; k < 3; ++k) {
          if (!e.args[k]) continue;
          const Value p = eval(*e.args[k]);
          if (p.is_none()) continue;
          if (!p.is_number() || p.kind() == Value::Kind::floating) {
            throw RenderError("slice indices must be integers or None");
          }
          parts[k] = p.as_int();
        }
        return slice(v, parts, e.line);
      }
      case Expr::Kind::call: {
        const Value fn = eval(*e.a);
        CallArgs args;
        eval_call_args(e, args);
        return fn.call(*this, args);
      }
      case Expr::Kind::filter: {
        const Value in = eval(*e.a);
        CallArgs args;
        eval_call_args(e, args);
        return filter(e.name, in, args);
      }
      case Expr::Kind::test: {
        const Value in = eval(*e.a);
        CallArgs args;
        eval_call_args(e, args);
        return Value(test(e.name, in, args) != e.negate);
      }
      case Expr::Kind::unary: {
        const Value v = eval(*e.a);
        if (e.name == "not") return Value(!v.truthy());
        if (v.is_undefined()) throw RenderError(undefined_message(v, "undefined value in arithmetic"));
        if (!v.is_number()) {
          throw RenderError(fmt::format("bad operand type for unary {}: '{}'", e.name, v.type_name()));
        }
        if (e.name == "+") return v.kind() == Value::Kind::boolean ? Value(v.as_int()) : v;
        if (v.kind() == Value::Kind::floating) return Value(-v.as_double());
        return Value(-v.as_int());
      }
      case Expr::Kind::binary:
        return eval_binary(e);
      case Expr::Kind::ternary:
        if (eval(*e.b).truthy()) return eval(*e.a);
        if (e.c) return eval(*e.c);
        return Value::undefined("the inline if-expression evaluated to false and no else section was defined");
    }
  } catch (const RenderError& err) {
    const std::string what = err.what();
    if (what.find("(template line") != std::string::npos) throw;
    fail(e.line, what);
  }
  return Value();
}

Value Interpreter::eval_binary(const Expr& e) {
  const std::string& op = e.name;
  if (op == "and") {
    Value a = eval(*e.a);
    return a.truthy() ? eval(*e.b) : a;
  }
  if (op == "or") {
    Value a = eval(*e.a);
    return a.truthy() ? a : eval(*e.b);
  }
  const Value a = eval(*e.a);
  const Value b = eval(*e.b);
  if (op == "==") return Value(a.equals(b));
  if (op == "!=") return Value(!a.equals(b));
  if (op == "in") return Value(contains(b, a));
  if (op == "notin") return Value(!contains(b, a));
  if (op == "~") return Value(a.to_str() + b.to_str());
  if (op == "<") return Value(less_than(a, b));
  if (op == ">") return Value(less_than(b, a));
  if (op == "<=") return Value(less_than(a, b) || (a.equals(b) && !a.is_undefined()));
  if (op == ">=") return Value(less_than(b, a) || (a.equals(b) && !a.is_undefined()));
  for (const Value* v : {&a, &b}) {
    if (v->is_undefined()) throw RenderError(undefined_message(*v, "undefined value in arithmetic"));
  }
  auto type_error = [&]() -> Value {
    throw RenderError(fmt::format("unsupported operand type(s) for {}: '{}' and '{}'", op,
                                  a.type_name(), b.type_name()));
  };
  if (op == "+") {
    if (a.is_string() && b.is_string()) return Value(a.str() + b.str());
    if (a.is_list() && b.is_list() && a.is_tuple() == b.is_tuple()) {
      Value::List items = a.items();
      items.insert(items.end(), b.items().begin(), b.items().end());
      return Value::list(std::move(items), a.is_tuple());
    }
    if (a.is_string() || b.is_string()) {
      throw RenderError(a.is_string()
                            ? fmt::format("can only concatenate str (not \"{}\") to str", b.type_name())
                            : fmt::format("unsupported operand type(s) for +: '{}' and 'str'", a.type_name()));
    }
  }
  if (op == "*" && ((a.is_string() || a.is_list()) != (b.is_string() || b.is_list()))) {
    const Value& seq = (a.is_string() || a.is_list()) ? a : b;
    const Value& cnt = (a.is_string() || a.is_list()) ? b : a;
    if (!cnt.is_number() || cnt.kind() == Value::Kind::floating) return type_error();
    const int64_t times = std::max<int64_t>(0, cnt.as_int());
    const size_t unit = seq.is_string() ? seq.str().size() : seq.items().size();
    if (static_cast<double>(unit) * static_cast<double>(times) > static_cast<double>(limits_.max_output_bytes)) {
      throw RenderError("repetition result is too large");
    }
    if (seq.is_string()) {
      std::string out;
      for (int64_t k = 0; k < times; ++k) out += seq.str();
      return Value(std::move(out));
    }
    Value::List out;
    for (int64_t k = 0; k < times; ++k) out.insert(out.end(), seq.items().begin(), seq.items().end());
    return Value::list(std::move(out), seq.is_tuple());
  }
  if (op == "%" && a.is_string()) {  // printf-style formatting with %s / %d
    const Value::List vals = b.is_tuple() ? b.items() : Value::List{b};
    std::string out;
    size_t used = 0;
    const std::string& f = a.str();
    for (size_t i = 0; i < f.size(); ++i) {
      if (f[i] != '%' || i + 1 >= f.size()) {
        out += f[i];
        continue;
      }
      const char c = f[++i];
      if (c == '%') {
        out += '%';
        continue;
      }
      if (used >= vals.size()) throw RenderError("not enough arguments for format string");
      const Value& v = vals[used++];
      if (c == 's') out += v.to_str();
      else if (c == 'r') out += v.repr();
      else if (c == 'd' || c == 'i') {
        if (!v.is_number()) throw RenderError("%d format: a real number is required");
        out += std::to_string(v.as_int());
      } else {
        throw RenderError(fmt::format("unsupported format character '{}'", c));
      }
    }
    if (used < vals.size()) throw RenderError("not all arguments converted during string formatting");
    return Value(std::move(out));
  }
  if (!a.is_number() || !b.is_number()) return type_error();
  const bool ints = a.kind() != Value::Kind::floating && b.kind() != Value::Kind::floating;
  if (op == "/") {
    if (b.as_double() == 0.0) throw RenderError("division by zero");
    return Value(a.as_double() / b.as_double());
  }
  if (op == "//" || op == "%") {
    if (b.as_double() == 0.0) throw RenderError(op == "%" ? "modulo by zero" : "integer division or modulo by zero");
    if (ints) {
      const int64_t x = a.as_int(), y = b.as_int();
      if (x == INT64_MIN && y == -1) return op == "//" ? Value(static_cast<double>(x) * -1.0) : Value(int64_t{0});
      int64_t q = x / y, r = x % y;
      if (r != 0 && ((r < 0) != (y < 0))) {
        --q;
        r += y;
      }
      return op == "//" ? Value(q) : Value(r);
    }
    const double x = a.as_double(), y = b.as_double();
    const double q = std::floor(x / y);
    return op == "//" ? Value(q) : Value(x - q * y);
  }
  if (op == "**") {
    if (ints && b.as_int() >= 0) {
      const int64_t base = a.as_int(), n = b.as_int();
      if (base == 0) return Value(int64_t{n == 0 ? 1 : 0});
      if (base == 1) return Value(int64_t{1});
      if (base == -1) return Value(int64_t{n % 2 ? -1 : 1});
      int64_t r = 1;
      for (int64_t k = 0; k < n; ++k) {  // |base| >= 2 overflows within 64 steps
        if (__builtin_mul_overflow(r, base, &r)) return Value(std::pow(a.as_double(), b.as_double()));
      }
      return Value(r);
    }
    return Value(std::pow(a.as_double(), b.as_double()));
  }
  if (ints) {
    int64_t r = 0;
    const bool overflow = op == "+" ? __builtin_add_overflow(a.as_int(), b.as_int(), &r)
                          : op == "-" ? __builtin_sub_overflow(a.as_int(), b.as_int(), &r)
                                      : __builtin_mul_overflow(a.as_int(), b.as_int(), &r);
    if (!overflow) return Value(r);
  }
  const double x = a.as_double(), y = b.as_double();
  if (op == "+") return Value(x + y);
  if (op == "-") return Value(x - y);
  if (op == "*") return Value(x * y);
  return type_error();
}

}  // namespace ftune::jinja
