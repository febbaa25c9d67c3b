// The Jinja builtins chat templates use: filters, tests, methods of str/dict/list values,
// and the global functions transformers provides (range, namespace, dict, raise_exception,
// strftime_now). Semantics follow jinja2 3.1 and Python 3; tojson is transformers' version
// (json.dumps with ensure_ascii=False, sort_keys=False, optional indent and separators).
#pragma once
#include <ctime>
#include <optional>
#include <string>
#include <unordered_map>

#include "data/jinja/value.h"

namespace ftune::jinja {

bool is_known_filter(const std::string& name);
bool is_known_test(const std::string& name);

Value apply_filter(Interpreter& in, const std::string& name, const Value& input, CallArgs& args);
bool apply_test(Interpreter& in, const std::string& name, const Value& input, CallArgs& args);

// obj.name for a str/dict/list method ("strip", "items", ...); nullopt when `name` is not one.
std::optional<Value> bound_method(const Value& obj, const std::string& name);

// Python's `item in container`; throws RenderError for containers that do not support it.
bool contains(const Value& container, const Value& item);
// Python's <, for numbers, strings and lists; throws RenderError otherwise.
bool less_than(const Value& a, const Value& b);

// The globals of transformers' environment. `now` is what strftime_now formats.
std::unordered_map<std::string, Value> builtin_globals(const std::tm& now);

}  // namespace ftune::jinja
