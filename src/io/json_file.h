// Reading JSON text and files with errors that name the file (or origin) and the parse
// position, so a broken config.json or safetensors header points at the exact spot.
#pragma once
#include <nlohmann/json.hpp>

#include <string>
#include <string_view>

namespace ftune {

// Whole file as bytes; throws ftune::Error naming the file when it cannot be read.
std::string read_text_file(const std::string& path);

// Parses `text`; on a syntax error throws ftune::Error
// "<origin>: invalid JSON: parse error at line L, column C: <what was wrong>".
// `callback` is nlohmann's parser callback (e.g. to see object keys as they are read).
nlohmann::json parse_json_text(std::string_view text, const std::string& origin,
                               const nlohmann::json::parser_callback_t& callback = nullptr);

// read_text_file + parse_json_text with the path as origin.
nlohmann::json read_json_file(const std::string& path);

// A short printable rendering of a JSON value for error messages ("string \"abc\"",
// "number 4.5", "null"), truncated when long.
std::string json_value_brief(const nlohmann::json& v);

}  // namespace ftune
