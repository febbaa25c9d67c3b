// Typed reads of JSON object fields whose errors name the file and the key ("<file>: key
// 'lora_alpha' must be a number, got string \"8\""), instead of nlohmann's bare
// "[json.exception.type_error.302] type must be number, but is string".
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

namespace ftune {

// Missing key: the default when given, else an error "<file>: missing key '<key>'".
// JSON null counts as missing when a default is given.
double json_number(const nlohmann::json& obj, const char* key, const std::string& file,
                   std::optional<double> def = std::nullopt);
int64_t json_int(const nlohmann::json& obj, const char* key, const std::string& file,
                 std::optional<int64_t> def = std::nullopt);
uint64_t json_uint(const nlohmann::json& obj, const char* key, const std::string& file,
                   std::optional<uint64_t> def = std::nullopt);
bool json_bool(const nlohmann::json& obj, const char* key, const std::string& file,
               std::optional<bool> def = std::nullopt);
std::string json_string(const nlohmann::json& obj, const char* key, const std::string& file,
                        std::optional<std::string> def = std::nullopt);

}  // namespace ftune
