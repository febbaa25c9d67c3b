// Jinja values with Python semantics (see value.h).
#include "data/jinja/value.h"

#include <charconv>
#include <cmath>
#include <cstdio>

#include "data/jinja/pystr.h"

namespace ftune::jinja {

namespace {
const std::string kEmpty;
}

Value Value::undefined(std::string hint) {
  Value v;
  v.s_ = std::make_shared<const std::string>(std::move(hint));
  return v;
}

Value Value::none() {
  Value v;
  v.kind_ = Kind::none;
  return v;
}

Value::Value(bool b) : kind_(Kind::boolean), b_(b), i_(b ? 1 : 0) {}
Value::Value(int64_t i) : kind_(Kind::integer), i_(i) {}
Value::Value(double f) : kind_(Kind::floating), f_(f) {}
Value::Value(std::string s)
    : kind_(Kind::string), s_(std::make_shared<const std::string>(std::move(s))) {}

Value Value::list(List items, bool tuple) {
  Value v;
  v.kind_ = Kind::list;
  v.tuple_ = tuple;
  v.list_ = std::make_shared<const List>(std::move(items));
  return v;
}

Value Value::dict(Dict items) {
  Value v;
  v.kind_ = Kind::dict;
  v.dict_ = std::make_shared<Dict>(std::move(items));
  return v;
}

Value Value::namespace_object(Dict items) {
  Value v = dict(std::move(items));
  v.kind_ = Kind::ns;
  return v;
}

Value Value::function(std::string name, NativeFn fn) {
  Value v;
  v.kind_ = Kind::function;
  v.fn_ = std::make_shared<const Fn>(Fn{std::move(name), std::move(fn)});
  return v;
}

Value Value::from_json(const nlohmann::ordered_json& j) {
  switch (j.type()) {
    case nlohmann::ordered_json::value_t::null:
      return none();
    case nlohmann::ordered_json::value_t::boolean:
      return Value(j.get<bool>());
    case nlohmann::ordered_json::value_t::number_integer:
      return Value(j.get<int64_t>());
    case nlohmann::ordered_json::value_t::number_unsigned: {
      const auto u = j.get<uint64_t>();
      if (u > static_cast<uint64_t>(INT64_MAX)) return Value(static_cast<double>(u));
      return Value(static_cast<int64_t>(u));
    }
    case nlohmann::ordered_json::value_t::number_float:
      return Value(j.get<double>());
    case nlohmann::ordered_json::value_t::string:
      return Value(j.get<std::string>());
    case nlohmann::ordered_json::value_t::array: {
      List items;
      for (const auto& e : j) items.push_back(from_json(e));
      return list(std::move(items));
    }
    case nlohmann::ordered_json::value_t::object: {
      Dict items;
      for (auto it = j.begin(); it != j.end(); ++it) {
        items.emplace_back(Value(it.key()), from_json(it.value()));
      }
      return dict(std::move(items));
    }
    default:
      return none();
  }
}

int64_t Value::as_int() const { return kind_ == Kind::floating ? static_cast<int64_t>(f_) : i_; }
double Value::as_double() const {
  return kind_ == Kind::floating ? f_ : static_cast<double>(i_);
}
const std::string& Value::undefined_hint() const { return s_ ? *s_ : kEmpty; }
const std::string& Value::function_name() const { return fn_ ? fn_->name : kEmpty; }

Value Value::call(Interpreter& in, CallArgs& args) const {
  if (kind_ != Kind::function) {
    if (is_undefined()) throw RenderError(undefined_hint().empty() ? "undefined is not callable"
                                                                   : undefined_hint());
    throw RenderError(std::string("'") + type_name() + "' object is not callable");
  }
  return fn_->fn(in, args);
}

bool Value::truthy() const {
  switch (kind_) {
    case Kind::undefined:
    case Kind::none:
      return false;
    case Kind::boolean:
      return b_;
    case Kind::integer:
      return i_ != 0;
    case Kind::floating:
      return f_ != 0.0;
    case Kind::string:
      return !s_->empty();
    case Kind::list:
      return !list_->empty();
    case Kind::dict:
      return !dict_->empty();
    default:
      return true;
  }
}

const char* Value::type_name() const {
  switch (kind_) {
    case Kind::undefined: return "Undefined";
    case Kind::none: return "NoneType";
    case Kind::boolean: return "bool";
    case Kind::integer: return "int";
    case Kind::floating: return "float";
    case Kind::string: return "str";
    case Kind::list: return tuple_ ? "tuple" : "list";
    case Kind::dict: return "dict";
    case Kind::function: return "function";
    case Kind::ns: return "Namespace";
  }
  return "object";
}

std::string python_float_repr(double d) {
  if (std::isnan(d)) return "nan";
  if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
  if (d == 0.0) return std::signbit(d) ? "-0.0" : "0.0";
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::scientific);
  std::string sci(buf, r.ptr);  // e.g. "-1.2345e+02"
  const size_t e = sci.find('e');
  std::string mant = sci.substr(0, e);
  const int exp = std::stoi(sci.substr(e + 1));
  const bool neg = mant[0] == '-';
  if (neg) mant.erase(0, 1);
  std::string digits;
  for (char c : mant) {
    if (c != '.') digits += c;
  }
  std::string out;
  if (exp >= -4 && exp < 16) {  // repr's fixed notation range
    if (exp < 0) {
      out = "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
    } else {
      const size_t int_len = static_cast<size_t>(exp) + 1;
      if (digits.size() <= int_len) {
        out = digits + std::string(int_len - digits.size(), '0') + ".0";
      } else {
        out = digits.substr(0, int_len) + "." + digits.substr(int_len);
      }
    }
  } else {
    out = digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char eb[16];
    std::snprintf(eb, sizeof eb, "e%c%02d", exp < 0 ? '-' : '+', exp < 0 ? -exp : exp);
    out += eb;
  }
  return neg ? "-" + out : out;
}

std::string Value::to_str() const {
  switch (kind_) {
    case Kind::undefined: return "";
    case Kind::none: return "None";
    case Kind::boolean: return b_ ? "True" : "False";
    case Kind::integer: return std::to_string(i_);
    case Kind::floating: return python_float_repr(f_);
    case Kind::string: return *s_;
    default: return repr();
  }
}

std::string Value::repr() const {
  switch (kind_) {
    case Kind::string:
      return py_repr_string(*s_);
    case Kind::list: {
      std::string out = tuple_ ? "(" : "[";
      for (size_t k = 0; k < list_->size(); ++k) {
        if (k) out += ", ";
        out += (*list_)[k].repr();
      }
      if (tuple_ && list_->size() == 1) out += ",";
      return out + (tuple_ ? ")" : "]");
    }
    case Kind::dict: {
      std::string out = "{";
      for (size_t k = 0; k < dict_->size(); ++k) {
        if (k) out += ", ";
        out += (*dict_)[k].first.repr() + ": " + (*dict_)[k].second.repr();
      }
      return out + "}";
    }
    case Kind::ns: {
      std::string out = "<Namespace {";
      for (size_t k = 0; k < dict_->size(); ++k) {
        if (k) out += ", ";
        out += (*dict_)[k].first.repr() + ": " + (*dict_)[k].second.repr();
      }
      return out + "}>";
    }
    case Kind::function:
      return "<function " + fn_->name + ">";
    default:
      return to_str();
  }
}

bool Value::equals(const Value& o) const {
  if (is_number() && o.is_number()) {
    if (kind_ == Kind::floating || o.kind_ == Kind::floating) return as_double() == o.as_double();
    return i_ == o.i_;
  }
  if (kind_ != o.kind_) return false;
  switch (kind_) {
    case Kind::undefined:
    case Kind::none:
      return true;
    case Kind::string:
      return *s_ == *o.s_;
    case Kind::list:
      if (tuple_ != o.tuple_ || list_->size() != o.list_->size()) return false;
      for (size_t k = 0; k < list_->size(); ++k) {
        if (!(*list_)[k].equals((*o.list_)[k])) return false;
      }
      return true;
    case Kind::dict:
      if (dict_->size() != o.dict_->size()) return false;
      for (const auto& [k, v] : *dict_) {
        const Value* w = o.find(k);
        if (!w || !v.equals(*w)) return false;
      }
      return true;
    default:
      return dict_ == o.dict_ && fn_ == o.fn_;
  }
}

const Value* Value::find(const Value& key) const {
  if (!dict_) return nullptr;
  for (const auto& [k, v] : *dict_) {
    if (k.equals(key)) return &v;
  }
  return nullptr;
}

const Value* Value::find(std::string_view key) const {
  if (!dict_) return nullptr;
  for (const auto& [k, v] : *dict_) {
    if (k.kind_ == Kind::string && *k.s_ == key) return &v;
  }
  return nullptr;
}

void Value::ns_set(const std::string& key, Value v) const {
  if (kind_ != Kind::ns) throw RenderError("cannot assign attribute on non-namespace object");
  if (!key.empty() && key[0] == '_') {
    throw RenderError("Chat templates cannot store underscore-prefixed attributes on a namespace");
  }
  for (auto& [k, old] : *dict_) {
    if (k.is_string() && k.str() == key) {
      old = std::move(v);
      return;
    }
  }
  dict_->emplace_back(Value(key), std::move(v));
}

Value::List Value::iterate() const {
  switch (kind_) {
    case Kind::undefined:
      return {};
    case Kind::list:
      return *list_;
    case Kind::dict: {
      List keys;
      for (const auto& kv : *dict_) keys.push_back(kv.first);
      return keys;
    }
    case Kind::string: {
      List chars;
      std::string one;
      for (char32_t c : utf8_decode(*s_)) {
        one.clear();
        utf8_append(one, c);
        chars.emplace_back(one);
      }
      return chars;
    }
    default:
      throw RenderError(std::string("'") + type_name() + "' object is not iterable");
  }
}

int64_t Value::length() const {
  switch (kind_) {
    case Kind::undefined: return 0;
    case Kind::string: {
      int64_t n = 0;
      for (char c : *s_) n += (static_cast<unsigned char>(c) & 0xC0) != 0x80;
      return n;
    }
    case Kind::list: return static_cast<int64_t>(list_->size());
    case Kind::dict: return static_cast<int64_t>(dict_->size());
    default:
      throw RenderError(std::string("object of type '") + type_name() + "' has no len()");
  }
}

namespace {

void json_string(std::string& out, const std::string& s) {
  out += '"';
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += ch;
        }
    }
  }
  out += '"';
}

void json_value(std::string& out, const Value& v, int indent, int level, std::string_view item_sep,
                std::string_view key_sep) {
  auto newline = [&](int lvl) {
    out += '\n';
    out.append(static_cast<size_t>(indent) * static_cast<size_t>(lvl), ' ');
  };
  switch (v.kind()) {
    case Value::Kind::none: out += "null"; return;
    case Value::Kind::boolean: out += v.as_bool() ? "true" : "false"; return;
    case Value::Kind::integer: out += std::to_string(v.as_int()); return;
    case Value::Kind::floating: {
      const double d = v.as_double();
      if (std::isnan(d)) out += "NaN";
      else if (std::isinf(d)) out += d < 0 ? "-Infinity" : "Infinity";
      else out += python_float_repr(d);
      return;
    }
    case Value::Kind::string: json_string(out, v.str()); return;
    case Value::Kind::list: {
      const auto& items = v.items();
      if (items.empty()) {
        out += "[]";
        return;
      }
      out += '[';
      for (size_t k = 0; k < items.size(); ++k) {
        if (k) out += item_sep;
        if (indent >= 0) newline(level + 1);
        json_value(out, items[k], indent, level + 1, item_sep, key_sep);
      }
      if (indent >= 0) newline(level);
      out += ']';
      return;
    }
    case Value::Kind::dict: {
      const auto& entries = v.entries();
      if (entries.empty()) {
        out += "{}";
        return;
      }
      out += '{';
      for (size_t k = 0; k < entries.size(); ++k) {
        if (k) out += item_sep;
        if (indent >= 0) newline(level + 1);
        const Value& key = entries[k].first;
        if (key.is_string()) json_string(out, key.str());
        else if (key.is_none()) out += "\"null\"";
        else if (key.kind() == Value::Kind::boolean) out += key.as_bool() ? "\"true\"" : "\"false\"";
        else if (key.is_number()) out += "\"" + key.to_str() + "\"";
        else throw RenderError(std::string("keys must be str, int, float, bool or None, not ") + key.type_name());
        out += key_sep;
        json_value(out, entries[k].second, indent, level + 1, item_sep, key_sep);
      }
      if (indent >= 0) newline(level);
      out += '}';
      return;
    }
    default:
      throw RenderError(std::string("Object of type ") + v.type_name() + " is not JSON serializable");
  }
}

}  // namespace

std::string to_json(const Value& v, int indent, std::string_view item_sep, std::string_view key_sep) {
  std::string out;
  json_value(out, v, indent, 0, item_sep, key_sep);
  return out;
}

}  // namespace ftune::jinja
