// Dataset files and record formats (see dataset_format.h; prompt strings from FORMATS.md §9).
#include "data/dataset_format.h"

#include <array>

#include "core/error.h"
#include "io/json_limits.h"
#include "data/data_files.h"

namespace ftune {

namespace {

using nlohmann::json;

struct FormatEntry {
  DatasetFormat format;
  const char* name;
};
constexpr std::array<FormatEntry, 5> kFormats = {{
    {DatasetFormat::alpaca, "alpaca"},
    {DatasetFormat::sharegpt, "sharegpt"},
    {DatasetFormat::messages, "messages"},
    {DatasetFormat::text, "text"},
    {DatasetFormat::prompt_completion, "prompt_completion"},
}};
static_assert(static_cast<size_t>(DatasetFormat::prompt_completion) + 1 == kFormats.size(),
              "every DatasetFormat has one table entry");

std::string format_list() {
  std::string s;
  for (const auto& f : kFormats) s += (s.empty() ? "" : ", ") + std::string(f.name);
  return s;
}

// Line (1-based) and column (1-based, in bytes) of byte offset `pos` in `text`.
std::pair<size_t, size_t> line_col(std::string_view text, size_t pos) {
  size_t line = 1, col = 1;
  for (size_t i = 0; i < pos && i < text.size(); ++i) {
    if (text[i] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return {line, col};
}

// nlohmann's message without its "[json.exception...] parse error at line L, column C: "
// prefix (we report our own position), bytes outside ASCII escaped: the bytes it quotes may be
// the invalid UTF-8 that caused the error.
std::string parse_error_text(const json::exception& e) {
  std::string what = e.what();
  if (auto p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);
  if (what.rfind("parse error at line ", 0) == 0) {
    if (auto p = what.find(": "); p != std::string::npos) what = what.substr(p + 2);
  } else if (what.rfind("parse error: ", 0) == 0) {
    what = what.substr(13);
  }
  std::string out;
  for (unsigned char c : what) {
    if (c >= 0x80 || c < 0x20) {
      out += fmt::format("\\x{:02X}", static_cast<unsigned>(c));
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

// Byte offsets where each element of the top-level JSON array starts, found by a scan that
// tracks strings and nesting; used to name the line a record starts on.
std::vector<size_t> array_element_offsets(std::string_view text) {
  std::vector<size_t> starts;
  int depth = 0;
  bool in_string = false, escaped = false, expect_value = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') continue;
    if (depth == 1 && expect_value && c != ']') {
      starts.push_back(i);
      expect_value = false;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      ++depth;
      if (depth == 1) expect_value = true;
    } else if (c == ']' || c == '}') {
      --depth;
    } else if (c == ',' && depth == 1) {
      expect_value = true;
    }
  }
  return starts;
}

std::string_view strip_bom(std::string_view s) {
  if (s.size() >= 3 && s.substr(0, 3) == "\xEF\xBB\xBF") s.remove_prefix(3);
  return s;
}

std::vector<DatasetRecord> parse_json_array(std::string_view text, const std::string& name) {
  json arr;
  if (const size_t deep = json_nesting_overflow(text); deep != std::string_view::npos) {
    const auto [line, col] = line_col(text, deep);
    fail("{}:{}: column {}: JSON nested deeper than {} levels (refused)", name, line, col,
         kMaxJsonDepth);
  }
  try {
    arr = json::parse(text);
  } catch (const json::parse_error& e) {
    const size_t pos = e.byte > 0 ? e.byte - 1 : 0;
    const auto [line, col] = line_col(text, pos);
    fail("{}:{}: invalid JSON: column {}: {}", name, line, col, parse_error_text(e));
  } catch (const json::exception& e) {  // e.g. out_of_range: a number too large for a double
    fail("{}: invalid JSON: {}", name, parse_error_text(e));
  }
  FTUNE_CHECK(arr.is_array(), "{}:1: expected a JSON array of records", name);
  const std::vector<size_t> starts = array_element_offsets(text);
  const bool have_lines = starts.size() == arr.size();
  std::vector<DatasetRecord> out;
  out.reserve(arr.size());
  size_t line = 1, scanned = 0;  // newlines counted incrementally: records are in text order
  for (size_t i = 0; i < arr.size(); ++i) {
    std::string origin;
    if (have_lines) {
      for (; scanned < starts[i]; ++scanned) line += (text[scanned] == '\n');
      origin = fmt::format("{}:{}", name, line);
    } else {
      origin = fmt::format("{}: record {}", name, i);
    }
    out.push_back(DatasetRecord{std::move(arr[i]), std::move(origin)});
  }
  return out;
}

std::vector<DatasetRecord> parse_jsonl(std::string_view text, const std::string& name) {
  std::vector<DatasetRecord> out;
  size_t line_no = 0, pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;  // blank line
    json v;
    if (const size_t deep = json_nesting_overflow(line); deep != std::string_view::npos)
      fail("{}:{}: column {}: JSON nested deeper than {} levels (refused)", name, line_no, deep + 1,
           kMaxJsonDepth);
    try {
      v = json::parse(line);
    } catch (const json::parse_error& e) {
      const size_t col = e.byte > 0 ? e.byte : 1;
      fail("{}:{}: invalid JSON: column {}: {}", name, line_no, col, parse_error_text(e));
    } catch (const json::exception& e) {  // e.g. out_of_range: a number too large for a double
      fail("{}:{}: invalid JSON: {}", name, line_no, parse_error_text(e));
    }
    out.push_back(DatasetRecord{std::move(v), fmt::format("{}:{}", name, line_no)});
  }
  return out;
}

const json& require(const DatasetRecord& r, const json& obj, const char* key,
                    const std::string& where = "record") {
  auto it = obj.find(key);
  if (it == obj.end()) fail("{}: {} has no '{}'", r.origin, where, key);
  return *it;
}

std::string require_string(const DatasetRecord& r, const json& obj, const char* key,
                           const std::string& where = "record") {
  const json& v = require(r, obj, key, where);
  if (!v.is_string()) {
    fail("{}: {} '{}' is not a string (it is {})", r.origin, where, key, v.type_name());
  }
  return v.get<std::string>();
}

// sharegpt "from" values: system, human/user, gpt/assistant.
std::optional<std::string> sharegpt_role(const std::string& from) {
  if (from == "system") return "system";
  if (from == "human" || from == "user") return "user";
  if (from == "gpt" || from == "assistant") return "assistant";
  return std::nullopt;
}

Conversation convert_turns(const DatasetRecord& r, const char* list_key, const char* role_key,
                           const char* text_key, bool sharegpt) {
  const json& list = require(r, r.value, list_key);
  FTUNE_CHECK(list.is_array(), "{}: '{}' is not a list (it is {})", r.origin, list_key,
              list.type_name());
  FTUNE_CHECK(!list.empty(), "{}: '{}' is an empty list", r.origin, list_key);
  Conversation conv;
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string where = fmt::format("{}[{}]", list_key, i);
    FTUNE_CHECK(list[i].is_object(), "{}: {} is not an object", r.origin, where);
    const std::string role = require_string(r, list[i], role_key, where);
    std::string content = require_string(r, list[i], text_key, where);
    std::optional<std::string> mapped;
    if (sharegpt) {
      mapped = sharegpt_role(role);
    } else if (role == "system" || role == "user" || role == "assistant") {
      mapped = role;
    }
    if (!mapped) {
      fail("{}: {} has unknown {} '{}' (expected {})", r.origin, where, role_key, role,
           sharegpt ? "system, human, gpt" : "system, user, assistant");
    }
    conv.push_back(ChatMessage{*mapped, std::move(content)});
  }
  return conv;
}

}  // namespace

std::string_view format_name(DatasetFormat f) {
  for (const auto& e : kFormats) {
    if (e.format == f) return e.name;
  }
  fail("dataset format {} has no name", static_cast<int>(f));
}

std::optional<DatasetFormat> parse_format_name(std::string_view name) {
  if (name.empty() || name == "auto") return std::nullopt;
  for (const auto& e : kFormats) {
    if (name == e.name) return e.format;
  }
  fail("unknown dataset format '{}' (expected auto, {})", name, format_list());
}

bool is_conversation_format(DatasetFormat f) {
  return f == DatasetFormat::sharegpt || f == DatasetFormat::messages;
}

std::vector<DatasetRecord> parse_dataset_text(std::string_view bytes, const std::string& name) {
  const std::string_view text = strip_bom(bytes);
  const size_t first = text.find_first_not_of(" \t\r\n");
  std::vector<DatasetRecord> records;
  if (first != std::string_view::npos && text[first] == '[') {
    records = parse_json_array(text, name);
  } else {
    records = parse_jsonl(text, name);
  }
  FTUNE_CHECK(!records.empty(), "{}: dataset is empty", name);
  return records;
}

std::vector<DatasetRecord> read_dataset_file(const std::string& path) {
  return parse_dataset_text(read_file_bytes(path), path);
}

DatasetFormat detect_format(const DatasetRecord& first) {
  FTUNE_CHECK(first.value.is_object(), "{}: record is not a JSON object", first.origin);
  const json& v = first.value;
  if (v.contains("conversations")) return DatasetFormat::sharegpt;
  if (v.contains("messages")) return DatasetFormat::messages;
  if (v.contains("instruction")) return DatasetFormat::alpaca;
  if (v.contains("prompt")) return DatasetFormat::prompt_completion;
  if (v.contains("text")) return DatasetFormat::text;
  std::string keys;
  for (auto it = v.begin(); it != v.end(); ++it) keys += (keys.empty() ? "" : ", ") + it.key();
  fail("{}: cannot detect the dataset format from the record's keys ({}); set data.format to "
       "one of {}",
       first.origin, keys.empty() ? "none" : keys, format_list());
}

std::string alpaca_prompt(std::string_view instruction, std::string_view input) {
  if (input.empty()) {
    return fmt::format(
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\n{}\n\n### Response:\n",
        instruction);
  }
  return fmt::format(
      "Below is an instruction that describes a task, paired with an input that provides "
      "further context. Write a response that appropriately completes the request.\n\n"
      "### Instruction:\n{}\n\n### Input:\n{}\n\n### Response:\n",
      instruction, input);
}

SourceExample convert_record(const DatasetRecord& r, DatasetFormat format) {
  FTUNE_CHECK(r.value.is_object(), "{}: record is not a JSON object", r.origin);
  SourceExample ex;
  ex.origin = r.origin;
  switch (format) {
    case DatasetFormat::alpaca: {
      const std::string instruction = require_string(r, r.value, "instruction");
      std::string input;
      if (auto it = r.value.find("input"); it != r.value.end() && !it->is_null()) {
        input = require_string(r, r.value, "input");
      }
      ex.response = require_string(r, r.value, "output");
      ex.prompt = alpaca_prompt(instruction, input);
      break;
    }
    case DatasetFormat::sharegpt:
      ex.is_conversation = true;
      ex.conversation = convert_turns(r, "conversations", "from", "value", true);
      break;
    case DatasetFormat::messages:
      ex.is_conversation = true;
      ex.conversation = convert_turns(r, "messages", "role", "content", false);
      break;
    case DatasetFormat::text:
      ex.response = require_string(r, r.value, "text");
      break;
    case DatasetFormat::prompt_completion:
      ex.prompt = require_string(r, r.value, "prompt");
      ex.response = require_string(r, r.value, "completion");
      break;
  }
  return ex;
}

}  // namespace ftune
