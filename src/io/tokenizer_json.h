// Typed access to tokenizer.json values with errors that name the file and the component
// (e.g. "tokenizer.json 'x/tokenizer.json': pre_tokenizer.pretokenizers[1]: missing key 'pattern'").
#pragma once
#include <nlohmann/json.hpp>

#include <string>

namespace ftune::tok {

using json = nlohmann::json;

// `where` names the file and the JSON path of the component being read.
const json& json_at(const json& j, const char* key, const std::string& where);
std::string json_string(const json& j, const char* key, const std::string& where);
// Missing or null keys give `def`.
bool json_bool(const json& j, const char* key, bool def, const std::string& where);
int64_t json_int(const json& j, const char* key, const std::string& where);
// The component's "type" string.
std::string json_type(const json& j, const std::string& where);
// Throws "unsupported <kind> type '<type>'" naming the file.
[[noreturn]] void unsupported_component(const std::string& kind, const std::string& type,
                                        const std::string& where);

}  // namespace ftune::tok
