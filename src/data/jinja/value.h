// Values of the Jinja interpreter, with Python's semantics where chat templates can see them:
// truthiness, equality (1 == 1.0 == True), str() and repr() of lists and dicts, insertion-ordered
// dicts, and jinja2's default Undefined (renders "", is falsy, iterates empty, and raises when an
// attribute of it is read). Lists and dicts are immutable once built (transformers renders with
// ImmutableSandboxedEnvironment); only namespace() objects are mutable, shared by reference.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/error.h"

namespace ftune::jinja {

// A template that raises (raise_exception, a type error, reading an attribute of undefined):
// what jinja2 reports as TemplateError/UndefinedError/TypeError at render time.
class RenderError : public Error {
 public:
  explicit RenderError(const std::string& msg) : Error(msg) {}
};

class Value;
class Interpreter;

struct CallArgs {
  std::vector<Value> positional;
  std::vector<std::pair<std::string, Value>> keyword;
};

using NativeFn = std::function<Value(Interpreter&, CallArgs&)>;

class Value {
 public:
  enum class Kind { undefined, none, boolean, integer, floating, string, list, dict, function, ns };
  using List = std::vector<Value>;
  using Dict = std::vector<std::pair<Value, Value>>;  // insertion order, like a Python dict

  Value() = default;  // undefined
  static Value undefined(std::string hint = "");
  static Value none();
  Value(bool b);
  Value(int64_t i);
  Value(int i) : Value(static_cast<int64_t>(i)) {}
  Value(double f);
  explicit Value(std::string s);
  explicit Value(const char* s) : Value(std::string(s)) {}
  static Value list(List items, bool tuple = false);
  static Value dict(Dict items);
  static Value function(std::string name, NativeFn fn);
  static Value namespace_object(Dict items);
  // JSON (as parsed from a dataset or tokenizer_config.json) to values, keeping key order.
  static Value from_json(const nlohmann::ordered_json& j);

  Kind kind() const { return kind_; }
  bool is_undefined() const { return kind_ == Kind::undefined; }
  bool is_none() const { return kind_ == Kind::none; }
  bool is_string() const { return kind_ == Kind::string; }
  bool is_number() const {
    return kind_ == Kind::integer || kind_ == Kind::floating || kind_ == Kind::boolean;
  }
  bool is_list() const { return kind_ == Kind::list; }
  bool is_dict() const { return kind_ == Kind::dict; }
  bool is_tuple() const { return kind_ == Kind::list && tuple_; }
  bool is_callable() const { return kind_ == Kind::function; }
  bool is_namespace() const { return kind_ == Kind::ns; }

  bool as_bool() const { return b_; }
  int64_t as_int() const;    // integer or boolean
  double as_double() const;  // any number
  const std::string& str() const { return *s_; }
  const List& items() const { return *list_; }
  const Dict& entries() const { return *dict_; }  // dict or namespace
  const std::string& undefined_hint() const;
  const std::string& function_name() const;
  Value call(Interpreter& in, CallArgs& args) const;

  // Python semantics.
  bool truthy() const;
  std::string to_str() const;   // str(value); undefined renders ""
  std::string repr() const;     // repr(value)
  bool equals(const Value& o) const;
  const char* type_name() const;  // "str", "int", "dict", ... as Python names them

  // Dict/namespace lookup by key; nullptr when absent.
  const Value* find(const Value& key) const;
  const Value* find(std::string_view key) const;
  // Namespace attribute assignment (the only mutation templates may do).
  void ns_set(const std::string& key, Value v) const;

  // Elements for iteration: list items, dict keys, string characters; undefined = none.
  // Throws RenderError for values that cannot be iterated.
  List iterate() const;
  int64_t length() const;  // len(); strings count code points

 private:
  Kind kind_ = Kind::undefined;
  bool b_ = false;
  bool tuple_ = false;
  int64_t i_ = 0;
  double f_ = 0.0;
  std::shared_ptr<const std::string> s_;  // string, or the hint of an undefined
  std::shared_ptr<const List> list_;
  std::shared_ptr<Dict> dict_;  // mutable only through ns_set
  struct Fn {
    std::string name;
    NativeFn fn;
  };
  std::shared_ptr<const Fn> fn_;
};

// json.dumps(v, ensure_ascii=False, indent=indent, separators=(item, key), sort_keys=False),
// as transformers' tojson filter calls it. indent < 0 = None.
std::string to_json(const Value& v, int indent, std::string_view item_sep, std::string_view key_sep);
// Python's repr() of a float (shortest round-trip digits, 1e+16 / 1e-05 forms).
std::string python_float_repr(double d);

}  // namespace ftune::jinja
