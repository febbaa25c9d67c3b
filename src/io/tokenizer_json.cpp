// Typed tokenizer.json accessors (see tokenizer_json.h).
#include "io/tokenizer_json.h"

#include "core/error.h"

namespace ftune::tok {

const json& json_at(const json& j, const char* key, const std::string& where) {
  FTUNE_CHECK(j.is_object(), "{}: expected a JSON object, got {}", where, j.type_name());
  const auto it = j.find(key);
  FTUNE_CHECK(it != j.end(), "{}: missing key '{}'", where, key);
  return *it;
}

std::string json_string(const json& j, const char* key, const std::string& where) {
  const json& v = json_at(j, key, where);
  FTUNE_CHECK(v.is_string(), "{}: key '{}' must be a string, got {}", where, key, v.type_name());
  return v.get<std::string>();
}

bool json_bool(const json& j, const char* key, bool def, const std::string& where) {
  FTUNE_CHECK(j.is_object(), "{}: expected a JSON object, got {}", where, j.type_name());
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  FTUNE_CHECK(it->is_boolean(), "{}: key '{}' must be a boolean, got {}", where, key,
              it->type_name());
  return it->get<bool>();
}

int64_t json_int(const json& j, const char* key, const std::string& where) {
  const json& v = json_at(j, key, where);
  FTUNE_CHECK(v.is_number_integer(), "{}: key '{}' must be an integer, got {}", where, key,
              v.type_name());
  return v.get<int64_t>();
}

std::string json_type(const json& j, const std::string& where) {
  return json_string(j, "type", where);
}

void unsupported_component(const std::string& kind, const std::string& type,
                           const std::string& where) {
  fail("{}: unsupported {} type '{}'", where, kind, type);
}

}  // namespace ftune::tok
