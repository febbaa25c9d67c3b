// Typed JSON field reads with file- and key-naming errors (see json_fields.h).
#include "io/json_fields.h"

#include "core/error.h"
#include "io/json_file.h"

namespace ftune {

namespace {

using nlohmann::json;

// The field, or nullptr when it is absent (or null and a default exists).
const json* field(const json& obj, const char* key, const std::string& file, bool has_default) {
  FTUNE_CHECK(obj.is_object(), "{}: expected a JSON object, got {}", file, json_value_brief(obj));
  const auto it = obj.find(key);
  if (it == obj.end() || (has_default && it->is_null())) {
    FTUNE_CHECK(has_default, "{}: missing key '{}'", file, key);
    return nullptr;
  }
  return &*it;
}

[[noreturn]] void wrong_type(const std::string& file, const char* key, const char* want,
                             const json& got) {
  fail("{}: key '{}' must be {}, got {}", file, key, want, json_value_brief(got));
}

}  // namespace

double json_number(const json& obj, const char* key, const std::string& file,
                   std::optional<double> def) {
  const json* v = field(obj, key, file, def.has_value());
  if (!v) return *def;
  if (!v->is_number()) wrong_type(file, key, "a number", *v);
  return v->get<double>();
}

int64_t json_int(const json& obj, const char* key, const std::string& file,
                 std::optional<int64_t> def) {
  const json* v = field(obj, key, file, def.has_value());
  if (!v) return *def;
  if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
    wrong_type(file, key, "an integer in the int64 range", *v);
  if (!v->is_number_integer()) wrong_type(file, key, "an integer", *v);
  return v->get<int64_t>();
}

uint64_t json_uint(const json& obj, const char* key, const std::string& file,
                   std::optional<uint64_t> def) {
  const json* v = field(obj, key, file, def.has_value());
  if (!v) return *def;
  if (!v->is_number_unsigned() && !(v->is_number_integer() && v->get<int64_t>() >= 0))
    wrong_type(file, key, "a non-negative integer", *v);
  return v->get<uint64_t>();
}

bool json_bool(const json& obj, const char* key, const std::string& file, std::optional<bool> def) {
  const json* v = field(obj, key, file, def.has_value());
  if (!v) return *def;
  if (!v->is_boolean()) wrong_type(file, key, "true or false", *v);
  return v->get<bool>();
}

std::string json_string(const json& obj, const char* key, const std::string& file,
                        std::optional<std::string> def) {
  const json* v = field(obj, key, file, def.has_value());
  if (!v) return *def;
  if (!v->is_string()) wrong_type(file, key, "a string", *v);
  return v->get<std::string>();
}

}  // namespace ftune
