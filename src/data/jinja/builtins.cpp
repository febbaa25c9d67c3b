// Jinja builtins (see builtins.h): filters, tests, methods and globals, following jinja2 3.1's
// filters.py/tests.py and Python 3's str/dict/list methods.
#include "data/jinja/builtins.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <functional>

#include "data/jinja/interpreter.h"
#include "data/jinja/pystr.h"

namespace ftune::jinja {

namespace {

// Argument `idx` (positional) or `name` (keyword) of a call, if given.
const Value* arg(const CallArgs& a, size_t idx, const char* name) {
  if (idx < a.positional.size()) return &a.positional[idx];
  for (const auto& [k, v] : a.keyword) {
    if (k == name) return &v;
  }
  return nullptr;
}

Value arg_or(const CallArgs& a, size_t idx, const char* name, Value fallback) {
  const Value* v = arg(a, idx, name);
  return v ? *v : fallback;
}

std::optional<std::string> opt_str(const CallArgs& a, size_t idx, const char* name) {
  const Value* v = arg(a, idx, name);
  if (!v || v->is_none()) return std::nullopt;
  if (!v->is_string()) throw RenderError(fmt::format("{} must be a string, not {}", name, v->type_name()));
  return v->str();
}

int64_t int_arg(const CallArgs& a, size_t idx, const char* name, int64_t fallback) {
  const Value* v = arg(a, idx, name);
  if (!v || v->is_none()) return fallback;
  if (!v->is_number() || v->kind() == Value::Kind::floating) {
    throw RenderError(fmt::format("{} must be an integer, not {}", name, v->type_name()));
  }
  return v->as_int();
}

const std::string& need_str(const Value& v, const char* what) {
  if (!v.is_string()) throw RenderError(fmt::format("{} requires a str, got '{}'", what, v.type_name()));
  return v.str();
}

Value str_list(const std::vector<std::string>& parts) {
  Value::List out;
  for (const auto& p : parts) out.emplace_back(p);
  return Value::list(std::move(out));
}

Value unsafe(const Value& obj, const std::string& name) {
  const std::string msg = fmt::format("access to attribute '{}' of '{}' object is unsafe.", name, obj.type_name());
  return Value::function(name, [msg](Interpreter&, CallArgs&) -> Value { throw RenderError(msg); });
}

// Jinja's attribute lookup for filters taking attribute= (dotted paths, integer parts).
Value attribute_of(const Value& item, const std::string& path) {
  Value cur = item;
  size_t pos = 0;
  while (true) {
    const size_t dot = path.find('.', pos);
    const std::string part = path.substr(pos, dot == std::string::npos ? std::string::npos : dot - pos);
    Value next;
    if (cur.is_dict() || cur.is_namespace()) {
      const Value* v = cur.find(part);
      next = v ? *v : Value::undefined(fmt::format("'{} object' has no attribute '{}'", cur.type_name(), part));
    } else if (cur.is_list() && !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit)) {
      const size_t i = std::stoul(part);
      next = i < cur.items().size() ? cur.items()[i] : Value::undefined();
    } else if (cur.is_undefined()) {
      throw RenderError(cur.undefined_hint().empty() ? "undefined value has no attributes" : cur.undefined_hint());
    } else {
      next = Value::undefined(fmt::format("'{} object' has no attribute '{}'", cur.type_name(), part));
    }
    cur = next;
    if (dot == std::string::npos) return cur;
    pos = dot + 1;
  }
}

std::string html_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// Python's str.splitlines() for the separators templates meet.
std::vector<std::string> splitlines(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\n' || s[i] == '\r') {
      out.push_back(s.substr(start, i - start));
      if (s[i] == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ++i;
      start = i + 1;
    }
  }
  if (start < s.size()) out.push_back(s.substr(start));
  return out;
}

std::string ensure_ascii(const std::string& json) {
  std::string out;
  for (char32_t c : utf8_decode(json)) {
    if (c < 0x80) {
      out += static_cast<char>(c);
      continue;
    }
    auto esc = [&](unsigned u) { out += fmt::format("\\u{:04x}", u); };
    if (c >= 0x10000) {
      const unsigned v = static_cast<unsigned>(c) - 0x10000;
      esc(0xD800 + (v >> 10));
      esc(0xDC00 + (v & 0x3FF));
    } else {
      esc(static_cast<unsigned>(c));
    }
  }
  return out;
}

Value sort_keys_deep(const Value& v) {
  if (v.is_list()) {
    Value::List items;
    for (const auto& x : v.items()) items.push_back(sort_keys_deep(x));
    return Value::list(std::move(items), v.is_tuple());
  }
  if (v.is_dict()) {
    Value::Dict items;
    for (const auto& [k, x] : v.entries()) items.emplace_back(k, sort_keys_deep(x));
    std::stable_sort(items.begin(), items.end(), [](const auto& a, const auto& b) { return less_than(a.first, b.first); });
    return Value::dict(std::move(items));
  }
  return v;
}

Value tojson(const Value& in, const CallArgs& a) {
  int indent = -1;
  std::string indent_str;
  if (const Value* v = arg(a, 0, "indent"); v && !v->is_none()) {
    if (v->is_string()) {
      indent_str = v->str();
      indent = -2;
    } else {
      indent = static_cast<int>(std::max<int64_t>(0, v->as_int()));
    }
  }
  std::string item_sep = indent == -1 ? ", " : ",", key_sep = ": ";
  if (const Value* v = arg(a, 2, "separators"); v && !v->is_none()) {
    if (!v->is_list() || v->items().size() != 2) throw RenderError("separators must be a pair of strings");
    item_sep = need_str(v->items()[0], "separators");
    key_sep = need_str(v->items()[1], "separators");
  }
  const bool sort = arg_or(a, 3, "sort_keys", Value(false)).truthy();
  const Value data = sort ? sort_keys_deep(in) : in;
  std::string out;
  if (indent == -2) {  // a string indent: render with 1 space per level, then replace
    std::string tmp = to_json(data, 1, item_sep, key_sep);
    for (size_t i = 0; i < tmp.size(); ++i) {
      out += tmp[i];
      if (tmp[i] == '\n') {
        size_t n = 0;
        while (i + 1 < tmp.size() && tmp[i + 1] == ' ') {
          ++n;
          ++i;
        }
        for (size_t k = 0; k < n; ++k) out += indent_str;
      }
    }
  } else {
    out = to_json(data, indent, item_sep, key_sep);
  }
  if (arg_or(a, 1, "ensure_ascii", Value(false)).truthy()) out = ensure_ascii(out);
  return Value(out);
}

Value::List items_of(const Value& v, const char* filter) {
  if (v.is_undefined()) return {};
  if (!v.is_dict()) throw RenderError(fmt::format("{}: can only get item pairs from a mapping", filter));
  Value::List out;
  for (const auto& [k, x] : v.entries()) out.push_back(Value::list({k, x}, true));
  return out;
}

// select/reject/selectattr/rejectattr: (seq, [attr,] [test, args...]).
Value select_filter(Interpreter& in, const Value& seq, CallArgs& a, bool by_attr, bool keep) {
  size_t first = 0;
  std::string attr;
  if (by_attr) {
    if (a.positional.empty()) throw RenderError("selectattr/rejectattr need an attribute name");
    attr = need_str(a.positional[0], "selectattr attribute");
    first = 1;
  }
  std::string test;
  CallArgs targs;
  if (a.positional.size() > first) {
    test = need_str(a.positional[first], "select test name");
    targs.positional.assign(a.positional.begin() + static_cast<std::ptrdiff_t>(first) + 1, a.positional.end());
    targs.keyword = a.keyword;
  }
  Value::List out;
  for (const Value& item : seq.iterate()) {
    in.count_step();
    const Value v = by_attr ? attribute_of(item, attr) : item;
    CallArgs copy = targs;
    const bool ok = test.empty() ? v.truthy() : in.test(test, v, copy);
    if (ok == keep) out.push_back(item);
  }
  return Value::list(std::move(out));
}

Value map_filter(Interpreter& in, const Value& seq, CallArgs& a) {
  Value::List out;
  if (const Value* attr = arg(a, 99, "attribute")) {
    const std::string path = need_str(*attr, "map attribute");
    const Value* dflt = arg(a, 99, "default");
    for (const Value& item : seq.iterate()) {
      Value v = attribute_of(item, path);
      if (v.is_undefined() && dflt) v = *dflt;
      out.push_back(v);
    }
    return Value::list(std::move(out));
  }
  if (a.positional.empty()) throw RenderError("map: a filter name or attribute= is required");
  const std::string name = need_str(a.positional[0], "map filter name");
  if (!is_known_filter(name)) throw RenderError(fmt::format("no filter named '{}'", name));
  CallArgs fargs;
  fargs.positional.assign(a.positional.begin() + 1, a.positional.end());
  fargs.keyword = a.keyword;
  for (const Value& item : seq.iterate()) {
    in.count_step();
    CallArgs copy = fargs;
    out.push_back(in.filter(name, item, copy));
  }
  return Value::list(std::move(out));
}

Value to_int(const Value& v, const CallArgs& a) {
  const Value dflt = arg_or(a, 0, "default", Value(int64_t{0}));
  const int64_t base = int_arg(a, 1, "base", 10);
  switch (v.kind()) {
    case Value::Kind::boolean:
    case Value::Kind::integer:
      return Value(v.as_int());
    case Value::Kind::floating:
      if (!std::isfinite(v.as_double())) return dflt;
      return Value(static_cast<int64_t>(v.as_double()));
    case Value::Kind::string: {
      std::string s = py_strip(v.str(), std::nullopt, true, true);
      s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
      if (!s.empty()) {
        char* end = nullptr;
        errno = 0;
        const long long i = std::strtoll(s.c_str(), &end, static_cast<int>(base));
        if (end && *end == '\0' && errno == 0) return Value(static_cast<int64_t>(i));
        const double d = std::strtod(s.c_str(), &end);
        if (end && *end == '\0' && std::isfinite(d)) return Value(static_cast<int64_t>(d));
      }
      return dflt;
    }
    default:
      return dflt;
  }
}

Value to_float(const Value& v, const CallArgs& a) {
  const Value dflt = arg_or(a, 0, "default", Value(0.0));
  if (v.is_number()) return Value(v.as_double());
  if (v.is_string()) {
    const std::string s = py_strip(v.str(), std::nullopt, true, true);
    char* end = nullptr;
    const double d = std::strtod(s.c_str(), &end);
    if (!s.empty() && end && *end == '\0') return Value(d);
  }
  return dflt;
}

Value sorted(Value::List items, bool reverse, const std::string& attr, bool case_sensitive) {
  auto key = [&](const Value& v) {
    Value k = attr.empty() ? v : attribute_of(v, attr);
    if (!case_sensitive && k.is_string()) k = Value(py_lower(k.str()));
    return k;
  };
  std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
    return reverse ? less_than(key(y), key(x)) : less_than(key(x), key(y));
  });
  return Value::list(std::move(items));
}

Value indent_filter(const Value& v, const CallArgs& a) {
  const Value w = arg_or(a, 0, "width", Value(int64_t{4}));
  const std::string ind = w.is_string() ? w.str() : std::string(static_cast<size_t>(std::max<int64_t>(0, w.as_int())), ' ');
  const bool first = arg_or(a, 1, "first", Value(false)).truthy();
  const bool blank = arg_or(a, 2, "blank", Value(false)).truthy();
  std::vector<std::string> lines = splitlines(v.to_str() + "\n");
  std::string rv;
  if (blank) {
    for (size_t k = 0; k < lines.size(); ++k) rv += (k ? "\n" + ind : "") + lines[k];
  } else {
    rv = lines.empty() ? "" : lines[0];
    for (size_t k = 1; k < lines.size(); ++k) rv += "\n" + (lines[k].empty() ? "" : ind + lines[k]);
  }
  return Value(first ? ind + rv : rv);
}

Value round_filter(const Value& v, const CallArgs& a) {
  if (!v.is_number()) throw RenderError(fmt::format("round: '{}' is not a number", v.type_name()));
  const int64_t prec = int_arg(a, 0, "precision", 0);
  const std::string method = opt_str(a, 1, "method").value_or("common");
  const double scale = std::pow(10.0, static_cast<double>(prec));
  const double x = v.as_double() * scale;
  double r;
  if (method == "ceil") r = std::ceil(x);
  else if (method == "floor") r = std::floor(x);
  else if (method == "common") r = std::nearbyint(x);  // Python's round(): half to even
  else throw RenderError("method must be common, ceil or floor");
  return Value(r / scale);
}

using FilterFn = std::function<Value(Interpreter&, const Value&, CallArgs&)>;

const std::unordered_map<std::string, FilterFn>& filters() {
  static const std::unordered_map<std::string, FilterFn> table = [] {
    std::unordered_map<std::string, FilterFn> t;
    auto soft = [](const Value& v) { return v.to_str(); };
    t["abs"] = [](Interpreter&, const Value& v, CallArgs&) {
      if (!v.is_number()) throw RenderError(fmt::format("bad operand type for abs(): '{}'", v.type_name()));
      return v.kind() == Value::Kind::floating ? Value(std::fabs(v.as_double())) : Value(static_cast<int64_t>(std::llabs(v.as_int())));
    };
    t["attr"] = [](Interpreter&, const Value& v, CallArgs& a) {
      const Value* n = arg(a, 0, "name");
      if (!n) throw RenderError("attr: missing attribute name");
      return attribute_of(v, n->to_str());
    };
    t["capitalize"] = [soft](Interpreter&, const Value& v, CallArgs&) { return Value(py_capitalize(soft(v))); };
    t["length"] = [](Interpreter&, const Value& v, CallArgs&) { return Value(v.length()); };
    t["count"] = t["length"];
    t["default"] = [](Interpreter&, const Value& v, CallArgs& a) {
      const bool boolean = arg_or(a, 1, "boolean", Value(false)).truthy();
      if (v.is_undefined() || (boolean && !v.truthy())) return arg_or(a, 0, "default_value", Value(""));
      return v;
    };
    t["d"] = t["default"];
    t["dictsort"] = [](Interpreter&, const Value& v, CallArgs& a) {
      const bool cs = arg_or(a, 0, "case_sensitive", Value(false)).truthy();
      const std::string by = opt_str(a, 1, "by").value_or("key");
      const bool rev = arg_or(a, 2, "reverse", Value(false)).truthy();
      Value::List pairs = items_of(v, "dictsort");
      const size_t pos = by == "value" ? 1 : 0;
      std::stable_sort(pairs.begin(), pairs.end(), [&](const Value& x, const Value& y) {
        Value kx = x.items()[pos], ky = y.items()[pos];
        if (!cs && kx.is_string()) kx = Value(py_lower(kx.str()));
        if (!cs && ky.is_string()) ky = Value(py_lower(ky.str()));
        return rev ? less_than(ky, kx) : less_than(kx, ky);
      });
      return Value::list(std::move(pairs));
    };
    t["escape"] = [soft](Interpreter&, const Value& v, CallArgs&) { return Value(html_escape(soft(v))); };
    t["e"] = t["escape"];
    t["forceescape"] = t["escape"];
    t["first"] = [](Interpreter&, const Value& v, CallArgs&) {
      const Value::List items = v.iterate();
      return items.empty() ? Value::undefined("No first item, sequence was empty.") : items.front();
    };
    t["last"] = [](Interpreter&, const Value& v, CallArgs&) {
      const Value::List items = v.iterate();
      return items.empty() ? Value::undefined("No last item, sequence was empty.") : items.back();
    };
    t["float"] = [](Interpreter&, const Value& v, CallArgs& a) { return to_float(v, a); };
    t["int"] = [](Interpreter&, const Value& v, CallArgs& a) { return to_int(v, a); };
    t["format"] = [](Interpreter& in, const Value& v, CallArgs& a) {
      (void)in;
      std::string out;
      size_t used = 0;
      const std::string f = v.to_str();
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
        if (used >= a.positional.size()) throw RenderError("not enough arguments for format string");
        const Value& x = a.positional[used++];
        if (c == 's') out += x.to_str();
        else if (c == 'r') out += x.repr();
        else if (c == 'd' || c == 'i') out += std::to_string(x.as_int());
        else throw RenderError(fmt::format("unsupported format character '{}'", c));
      }
      return Value(out);
    };
    t["indent"] = [](Interpreter&, const Value& v, CallArgs& a) { return indent_filter(v, a); };
    t["items"] = [](Interpreter&, const Value& v, CallArgs&) { return Value::list(items_of(v, "items")); };
    t["join"] = [](Interpreter&, const Value& v, CallArgs& a) {
      const std::string sep = arg_or(a, 0, "d", Value("")).to_str();
      const Value* attr = arg(a, 1, "attribute");
      std::string out;
      bool first = true;
      for (const Value& item : v.iterate()) {
        if (!first) out += sep;
        first = false;
        out += (attr ? attribute_of(item, attr->to_str()) : item).to_str();
      }
      return Value(out);
    };
    t["list"] = [](Interpreter&, const Value& v, CallArgs&) { return Value::list(v.iterate()); };
    t["lower"] = [soft](Interpreter&, const Value& v, CallArgs&) { return Value(py_lower(soft(v))); };
    t["upper"] = [soft](Interpreter&, const Value& v, CallArgs&) { return Value(py_upper(soft(v))); };
    t["title"] = [soft](Interpreter&, const Value& v, CallArgs&) { return Value(py_title(soft(v))); };
    t["map"] = [](Interpreter& in, const Value& v, CallArgs& a) { return map_filter(in, v, a); };
    t["select"] = [](Interpreter& in, const Value& v, CallArgs& a) { return select_filter(in, v, a, false, true); };
    t["reject"] = [](Interpreter& in, const Value& v, CallArgs& a) { return select_filter(in, v, a, false, false); };
    t["selectattr"] = [](Interpreter& in, const Value& v, CallArgs& a) { return select_filter(in, v, a, true, true); };
    t["rejectattr"] = [](Interpreter& in, const Value& v, CallArgs& a) { return select_filter(in, v, a, true, false); };
    auto minmax = [](bool want_max) {
      return [want_max](Interpreter&, const Value& v, CallArgs& a) {
        const bool cs = arg_or(a, 0, "case_sensitive", Value(false)).truthy();
        const std::string attr = opt_str(a, 1, "attribute").value_or("");
        const Value::List items = v.iterate();
        if (items.empty()) return Value::undefined(want_max ? "No aggregated item, sequence was empty." : "No aggregated item, sequence was empty.");
        Value::List s = sorted(items, false, attr, cs).items();
        return want_max ? s.back() : s.front();
      };
    };
    t["max"] = minmax(true);
    t["min"] = minmax(false);
    t["replace"] = [soft](Interpreter&, const Value& v, CallArgs& a) {
      const Value* old = arg(a, 0, "old");
      const Value* with = arg(a, 1, "new");
      if (!old || !with) throw RenderError("replace: old and new are required");
      return Value(py_replace(soft(v), old->to_str(), with->to_str(), int_arg(a, 2, "count", -1)));
    };
    t["reverse"] = [](Interpreter&, const Value& v, CallArgs&) {
      if (v.is_string()) {
        std::u32string u = utf8_decode(v.str());
        std::reverse(u.begin(), u.end());
        return Value(utf8_encode(u));
      }
      Value::List items = v.iterate();
      std::reverse(items.begin(), items.end());
      return Value::list(std::move(items));
    };
    t["round"] = [](Interpreter&, const Value& v, CallArgs& a) { return round_filter(v, a); };
    t["safe"] = [](Interpreter&, const Value& v, CallArgs&) { return v; };
    t["sort"] = [](Interpreter&, const Value& v, CallArgs& a) {
      return sorted(v.iterate(), arg_or(a, 0, "reverse", Value(false)).truthy(),
                    opt_str(a, 2, "attribute").value_or(""),
                    arg_or(a, 1, "case_sensitive", Value(false)).truthy());
    };
    t["string"] = [soft](Interpreter&, const Value& v, CallArgs&) { return Value(soft(v)); };
    t["sum"] = [](Interpreter&, const Value& v, CallArgs& a) {
      const std::string attr = opt_str(a, 0, "attribute").value_or("");
      Value total = arg_or(a, 1, "start", Value(int64_t{0}));
      for (const Value& item : v.iterate()) {
        const Value x = attr.empty() ? item : attribute_of(item, attr);
        if (!x.is_number() || !total.is_number()) throw RenderError("sum: values must be numbers");
        if (x.kind() == Value::Kind::floating || total.kind() == Value::Kind::floating) total = Value(total.as_double() + x.as_double());
        else total = Value(total.as_int() + x.as_int());
      }
      return total;
    };
    t["tojson"] = [](Interpreter&, const Value& v, CallArgs& a) { return tojson(v, a); };
    t["trim"] = [soft](Interpreter&, const Value& v, CallArgs& a) {
      return Value(py_strip(soft(v), opt_str(a, 0, "chars"), true, true));
    };
    t["unique"] = [](Interpreter&, const Value& v, CallArgs& a) {
      const bool cs = arg_or(a, 0, "case_sensitive", Value(false)).truthy();
      const std::string attr = opt_str(a, 1, "attribute").value_or("");
      Value::List out, seen;
      for (const Value& item : v.iterate()) {
        Value k = attr.empty() ? item : attribute_of(item, attr);
        if (!cs && k.is_string()) k = Value(py_lower(k.str()));
        if (std::none_of(seen.begin(), seen.end(), [&](const Value& s) { return s.equals(k); })) {
          seen.push_back(k);
          out.push_back(item);
        }
      }
      return Value::list(std::move(out));
    };
    t["wordcount"] = [soft](Interpreter&, const Value& v, CallArgs&) {
      return Value(static_cast<int64_t>(py_split(soft(v), std::nullopt, -1).size()));
    };
    return t;
  }();
  return table;
}

using TestFn = std::function<bool(Interpreter&, const Value&, CallArgs&)>;

const Value& test_arg(const CallArgs& a, const char* test) {
  if (a.positional.empty()) throw RenderError(fmt::format("test '{}' needs an argument", test));
  return a.positional[0];
}

const std::unordered_map<std::string, TestFn>& tests() {
  static const std::unordered_map<std::string, TestFn> table = [] {
    std::unordered_map<std::string, TestFn> t;
    using K = Value::Kind;
    t["defined"] = [](Interpreter&, const Value& v, CallArgs&) { return !v.is_undefined(); };
    t["undefined"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_undefined(); };
    t["none"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_none(); };
    t["boolean"] = [](Interpreter&, const Value& v, CallArgs&) { return v.kind() == K::boolean; };
    t["true"] = [](Interpreter&, const Value& v, CallArgs&) { return v.kind() == K::boolean && v.as_bool(); };
    t["false"] = [](Interpreter&, const Value& v, CallArgs&) { return v.kind() == K::boolean && !v.as_bool(); };
    t["integer"] = [](Interpreter&, const Value& v, CallArgs&) { return v.kind() == K::integer; };
    t["float"] = [](Interpreter&, const Value& v, CallArgs&) { return v.kind() == K::floating; };
    t["number"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_number(); };
    t["string"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_string(); };
    t["mapping"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_dict(); };
    t["iterable"] = [](Interpreter&, const Value& v, CallArgs&) {
      return v.is_string() || v.is_list() || v.is_dict() || v.is_undefined();
    };
    t["sequence"] = t["iterable"];
    t["callable"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_callable(); };
    t["sameas"] = [](Interpreter&, const Value& v, CallArgs& a) {
      const Value& o = test_arg(a, "sameas");
      if (v.kind() != o.kind()) return false;
      if (v.is_none() || v.is_undefined() || v.kind() == K::boolean) return v.equals(o);
      return v.equals(o) && (v.kind() == K::integer);  // small ints are identical in CPython
    };
    t["eq"] = [](Interpreter&, const Value& v, CallArgs& a) { return v.equals(test_arg(a, "eq")); };
    t["equalto"] = t["eq"];
    t["=="] = t["eq"];
    t["ne"] = [](Interpreter&, const Value& v, CallArgs& a) { return !v.equals(test_arg(a, "ne")); };
    t["!="] = t["ne"];
    t["lt"] = [](Interpreter&, const Value& v, CallArgs& a) { return less_than(v, test_arg(a, "lt")); };
    t["lessthan"] = t["lt"];
    t["<"] = t["lt"];
    t["gt"] = [](Interpreter&, const Value& v, CallArgs& a) { return less_than(test_arg(a, "gt"), v); };
    t["greaterthan"] = t["gt"];
    t[">"] = t["gt"];
    t["le"] = [](Interpreter&, const Value& v, CallArgs& a) {
      const Value& o = test_arg(a, "le");
      return less_than(v, o) || v.equals(o);
    };
    t["<="] = t["le"];
    t["ge"] = [](Interpreter&, const Value& v, CallArgs& a) {
      const Value& o = test_arg(a, "ge");
      return less_than(o, v) || v.equals(o);
    };
    t[">="] = t["ge"];
    t["in"] = [](Interpreter&, const Value& v, CallArgs& a) { return contains(test_arg(a, "in"), v); };
    auto int_of = [](const Value& v, const char* test) {
      if (!v.is_number() || v.kind() == K::floating) throw RenderError(fmt::format("test '{}' needs an integer", test));
      return v.as_int();
    };
    t["odd"] = [int_of](Interpreter&, const Value& v, CallArgs&) { return int_of(v, "odd") % 2 != 0; };
    t["even"] = [int_of](Interpreter&, const Value& v, CallArgs&) { return int_of(v, "even") % 2 == 0; };
    t["divisibleby"] = [int_of](Interpreter&, const Value& v, CallArgs& a) {
      const int64_t d = int_of(test_arg(a, "divisibleby"), "divisibleby");
      if (d == 0) throw RenderError("integer division or modulo by zero");
      return int_of(v, "divisibleby") % d == 0;
    };
    t["lower"] = [](Interpreter&, const Value& v, CallArgs&) {
      const std::string s = v.to_str();
      return py_lower(s) == s && py_upper(s) != s;
    };
    t["upper"] = [](Interpreter&, const Value& v, CallArgs&) {
      const std::string s = v.to_str();
      return py_upper(s) == s && py_lower(s) != s;
    };
    t["escaped"] = [](Interpreter&, const Value&, CallArgs&) { return false; };
    t["filter"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_string() && is_known_filter(v.str()); };
    t["test"] = [](Interpreter&, const Value& v, CallArgs&) { return v.is_string() && is_known_test(v.str()); };
    return t;
  }();
  return table;
}

// ---- methods -------------------------------------------------------------------------------

bool str_starts_or_ends(const std::string& s, const Value& what, bool ends) {
  auto one = [&](const Value& p) {
    const std::string& x = need_str(p, ends ? "endswith" : "startswith");
    if (x.size() > s.size()) return false;
    return ends ? s.compare(s.size() - x.size(), x.size(), x) == 0 : s.compare(0, x.size(), x) == 0;
  };
  if (what.is_tuple()) return std::any_of(what.items().begin(), what.items().end(), one);
  return one(what);
}

std::optional<Value> str_method(const Value& obj, const std::string& name) {
  const std::string s = obj.str();
  auto fn = [&](auto body) { return Value::function(name, [s, body](Interpreter&, CallArgs& a) { return body(s, a); }); };
  if (name == "strip" || name == "lstrip" || name == "rstrip") {
    const bool l = name != "rstrip", r = name != "lstrip";
    return fn([l, r](const std::string& s, CallArgs& a) { return Value(py_strip(s, opt_str(a, 0, "chars"), l, r)); });
  }
  if (name == "split" || name == "rsplit") {
    const bool right = name == "rsplit";
    return fn([right](const std::string& s, CallArgs& a) {
      const auto sep = opt_str(a, 0, "sep");
      if (sep && sep->empty()) throw RenderError("empty separator");
      return str_list(py_split(s, sep, int_arg(a, 1, "maxsplit", -1), right));
    });
  }
  if (name == "splitlines") return fn([](const std::string& s, CallArgs&) { return str_list(splitlines(s)); });
  if (name == "startswith" || name == "endswith") {
    const bool ends = name == "endswith";
    return fn([ends](const std::string& s, CallArgs& a) { return Value(str_starts_or_ends(s, test_arg(a, "startswith"), ends)); });
  }
  if (name == "upper") return fn([](const std::string& s, CallArgs&) { return Value(py_upper(s)); });
  if (name == "lower") return fn([](const std::string& s, CallArgs&) { return Value(py_lower(s)); });
  if (name == "title") return fn([](const std::string& s, CallArgs&) { return Value(py_title(s)); });
  if (name == "capitalize") return fn([](const std::string& s, CallArgs&) { return Value(py_capitalize(s)); });
  if (name == "replace") {
    return fn([](const std::string& s, CallArgs& a) {
      if (a.positional.size() < 2) throw RenderError("replace expected at least 2 arguments");
      return Value(py_replace(s, need_str(a.positional[0], "replace"), need_str(a.positional[1], "replace"), int_arg(a, 2, "count", -1)));
    });
  }
  if (name == "find" || name == "rfind" || name == "count") {
    return fn([name](const std::string& s, CallArgs& a) {
      const std::string& x = need_str(test_arg(a, name.c_str()), name.c_str());
      if (name == "count") {
        if (x.empty()) return Value(Value(s).length() + 1);
        int64_t n = 0;
        for (size_t p = s.find(x); p != std::string::npos; p = s.find(x, p + x.size())) ++n;
        return Value(n);
      }
      const size_t p = name == "find" ? s.find(x) : s.rfind(x);
      if (p == std::string::npos) return Value(int64_t{-1});
      return Value(Value(s.substr(0, p)).length());
    });
  }
  if (name == "join") {
    return fn([](const std::string& s, CallArgs& a) {
      std::string out;
      bool first = true;
      for (const Value& v : test_arg(a, "join").iterate()) {
        if (!first) out += s;
        first = false;
        out += need_str(v, "join");
      }
      return Value(out);
    });
  }
  auto pred = [&](bool (*p)(char32_t)) {
    return fn([p](const std::string& s, CallArgs&) {
      const std::u32string u = utf8_decode(s);
      return Value(!u.empty() && std::all_of(u.begin(), u.end(), p));
    });
  };
  if (name == "isdigit") return pred([](char32_t c) { return c >= '0' && c <= '9'; });
  if (name == "isspace") return pred([](char32_t c) { return is_python_space(c); });
  if (name == "isalpha") return pred([](char32_t c) { return c > 0x7F || std::isalpha(static_cast<int>(c)) != 0; });
  if (name == "isalnum") return pred([](char32_t c) { return c > 0x7F || std::isalnum(static_cast<int>(c)) != 0; });
  if (name == "islower") return fn([](const std::string& s, CallArgs&) { return Value(py_lower(s) == s && py_upper(s) != s); });
  if (name == "isupper") return fn([](const std::string& s, CallArgs&) { return Value(py_upper(s) == s && py_lower(s) != s); });
  if (name == "format" || name == "encode" || name == "format_map") return unsafe(obj, name);
  return std::nullopt;
}

std::optional<Value> dict_method(const Value& obj, const std::string& name) {
  if (name == "items") {
    return Value::function(name, [obj](Interpreter&, CallArgs&) { return Value::list(items_of(obj, "items")); });
  }
  if (name == "keys") return Value::function(name, [obj](Interpreter&, CallArgs&) { return Value::list(obj.iterate()); });
  if (name == "values") {
    return Value::function(name, [obj](Interpreter&, CallArgs&) {
      Value::List out;
      for (const auto& kv : obj.entries()) out.push_back(kv.second);
      return Value::list(std::move(out));
    });
  }
  if (name == "get") {
    return Value::function(name, [obj](Interpreter&, CallArgs& a) {
      const Value* v = obj.find(test_arg(a, "get"));
      return v ? *v : arg_or(a, 1, "default", Value::none());
    });
  }
  if (name == "copy") return Value::function(name, [obj](Interpreter&, CallArgs&) { return Value::dict(obj.entries()); });
  for (const char* m : {"update", "pop", "popitem", "setdefault", "clear"}) {
    if (name == m) return unsafe(obj, name);
  }
  return std::nullopt;
}

std::optional<Value> list_method(const Value& obj, const std::string& name) {
  if (name == "index" || name == "count") {
    return Value::function(name, [obj, name](Interpreter&, CallArgs& a) {
      const Value& x = test_arg(a, name.c_str());
      int64_t n = 0;
      for (size_t i = 0; i < obj.items().size(); ++i) {
        if (!obj.items()[i].equals(x)) continue;
        if (name == "index") return Value(static_cast<int64_t>(i));
        ++n;
      }
      if (name == "index") throw RenderError(fmt::format("{} is not in list", x.repr()));
      return Value(n);
    });
  }
  for (const char* m : {"append", "extend", "insert", "pop", "remove", "reverse", "sort", "clear"}) {
    if (name == m) return unsafe(obj, name);
  }
  return std::nullopt;
}

}  // namespace

bool is_known_filter(const std::string& name) { return filters().count(name) > 0; }
bool is_known_test(const std::string& name) { return tests().count(name) > 0; }

Value apply_filter(Interpreter& in, const std::string& name, const Value& input, CallArgs& args) {
  auto it = filters().find(name);
  if (it == filters().end()) throw RenderError(fmt::format("no filter named '{}'", name));
  return it->second(in, input, args);
}

bool apply_test(Interpreter& in, const std::string& name, const Value& input, CallArgs& args) {
  auto it = tests().find(name);
  if (it == tests().end()) throw RenderError(fmt::format("no test named '{}'", name));
  return it->second(in, input, args);
}

std::optional<Value> bound_method(const Value& obj, const std::string& name) {
  if (obj.is_string()) return str_method(obj, name);
  if (obj.is_dict()) return dict_method(obj, name);
  if (obj.is_list()) return list_method(obj, name);
  return std::nullopt;
}

bool contains(const Value& container, const Value& item) {
  switch (container.kind()) {
    case Value::Kind::string:
      if (!item.is_string()) {
        throw RenderError(fmt::format("'in <string>' requires string as left operand, not {}", item.type_name()));
      }
      return container.str().find(item.str()) != std::string::npos;
    case Value::Kind::list:
      return std::any_of(container.items().begin(), container.items().end(),
                         [&](const Value& v) { return v.equals(item); });
    case Value::Kind::dict:
    case Value::Kind::ns:
      return container.find(item) != nullptr;
    case Value::Kind::undefined:
      return false;
    default:
      throw RenderError(fmt::format("argument of type '{}' is not iterable", container.type_name()));
  }
}

bool less_than(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind() != Value::Kind::floating && b.kind() != Value::Kind::floating) return a.as_int() < b.as_int();
    return a.as_double() < b.as_double();
  }
  if (a.is_string() && b.is_string()) return a.str() < b.str();  // UTF-8 order = code point order
  if (a.is_list() && b.is_list()) {
    const auto& x = a.items();
    const auto& y = b.items();
    for (size_t k = 0; k < x.size() && k < y.size(); ++k) {
      if (!x[k].equals(y[k])) return less_than(x[k], y[k]);
    }
    return x.size() < y.size();
  }
  if (a.is_undefined() || b.is_undefined()) {
    const Value& u = a.is_undefined() ? a : b;
    throw RenderError(u.undefined_hint().empty() ? "undefined value in comparison" : u.undefined_hint());
  }
  throw RenderError(fmt::format("'<' not supported between instances of '{}' and '{}'", a.type_name(), b.type_name()));
}

std::unordered_map<std::string, Value> builtin_globals(const std::tm& now) {
  std::unordered_map<std::string, Value> g;
  g["range"] = Value::function("range", [](Interpreter&, CallArgs& a) {
    std::vector<int64_t> p;
    for (const Value& v : a.positional) {
      if (!v.is_number() || v.kind() == Value::Kind::floating) {
        throw RenderError(fmt::format("'{}' object cannot be interpreted as an integer", v.type_name()));
      }
      p.push_back(v.as_int());
    }
    if (p.empty() || p.size() > 3) throw RenderError("range expected 1 to 3 arguments");
    const int64_t start = p.size() > 1 ? p[0] : 0, stop = p.size() > 1 ? p[1] : p[0];
    const int64_t step = p.size() > 2 ? p[2] : 1;
    if (step == 0) throw RenderError("range() arg 3 must not be zero");
    const double n = std::ceil((static_cast<double>(stop) - static_cast<double>(start)) / static_cast<double>(step));
    if (n > 1e6) throw RenderError("range too big (more than 1000000 items)");
    Value::List out;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) out.emplace_back(i);
    return Value::list(std::move(out));
  });
  auto mapping_args = [](CallArgs& a, const char* what) {
    Value::Dict items;
    if (a.positional.size() > 1) throw RenderError(fmt::format("{} expected at most 1 positional argument", what));
    if (!a.positional.empty()) {
      const Value& src = a.positional[0];
      if (src.is_dict() || src.is_namespace()) {
        items = src.entries();
      } else {
        for (const Value& pair : src.iterate()) {
          const Value::List kv = pair.iterate();
          if (kv.size() != 2) throw RenderError(fmt::format("{}: sequence elements must be pairs", what));
          items.emplace_back(kv[0], kv[1]);
        }
      }
    }
    for (auto& [k, v] : a.keyword) {
      bool replaced = false;
      for (auto& [ik, iv] : items) {
        if (ik.is_string() && ik.str() == k) {
          iv = v;
          replaced = true;
        }
      }
      if (!replaced) items.emplace_back(Value(k), v);
    }
    return items;
  };
  g["namespace"] = Value::function("namespace", [mapping_args](Interpreter&, CallArgs& a) {
    Value::Dict items = mapping_args(a, "namespace");
    for (const auto& [k, v] : items) {
      if (k.is_string() && !k.str().empty() && k.str()[0] == '_') {
        throw RenderError("Chat templates cannot store underscore-prefixed attributes on a namespace");
      }
    }
    return Value::namespace_object(std::move(items));
  });
  g["dict"] = Value::function("dict", [mapping_args](Interpreter&, CallArgs& a) {
    return Value::dict(mapping_args(a, "dict"));
  });
  g["raise_exception"] = Value::function("raise_exception", [](Interpreter&, CallArgs& a) -> Value {
    throw RenderError(a.positional.empty() ? std::string("raise_exception called") : a.positional[0].to_str());
  });
  g["strftime_now"] = Value::function("strftime_now", [now](Interpreter&, CallArgs& a) {
    const std::string f = need_str(test_arg(a, "strftime_now"), "strftime_now");
    std::string buf(256 + f.size() * 8, '\0');
    const size_t n = std::strftime(buf.data(), buf.size(), f.c_str(), &now);
    if (n == 0 && !f.empty()) return Value("");
    buf.resize(n);
    return Value(buf);
  });
  return g;
}

}  // namespace ftune::jinja
