// Dataset files and record formats (see dataset_format.h; prompt strings from FORMATS.md §9).
#include "data/dataset_format.h"

#include <algorithm>
#include <array>

#include "core/error.h"
#include "io/json_limits.h"
#include "data/data_files.h"

namespace ftune {

namespace {

using json = nlohmann::ordered_json;

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

// sharegpt "from" values: system, human/user, gpt/assistant, tool results (tool, ipython,
// observation) and function_call (LLaMA-Factory: the call as JSON in "value")
// as written. A fixed vocabulary, so a typo is caught here; the messages format passes any role.
std::optional<std::string> sharegpt_role(const std::string& from) {
  if (from == "system" || from == "tool" || from == "ipython") return from;
  // LLaMA-Factory's sharegpt: a tool call the assistant makes, and the tool's answer.
  if (from == "function_call") return "assistant";
  if (from == "observation") return "tool";
  if (from == "human" || from == "user") return "user";
  if (from == "gpt" || from == "assistant") return "assistant";
  return std::nullopt;
}

[[noreturn]] void wrong_type(const DatasetRecord& r, const std::string& key, const char* want,
                             const json& v) {
  fail("{}: '{}' is not {} (it is {})", r.origin, key, want, v.type_name());
}

// One tool call, as HF writes it: {"type": "function", "function": {"name", "arguments"}}, or
// the bare {"name", "arguments"} some templates (Qwen) also take.
void check_tool_call(const DatasetRecord& r, const json& call, const std::string& key) {
  if (!call.is_object()) wrong_type(r, key, "an object", call);
  const json* fn = &call;
  std::string fn_key = key;
  if (auto it = call.find("function"); it != call.end()) {
    fn_key = key + ".function";
    if (!it->is_object()) wrong_type(r, fn_key, "an object", *it);
    fn = &*it;
  }
  if (auto it = fn->find("name"); it != fn->end() && !it->is_string()) {
    wrong_type(r, fn_key + ".name", "a string", *it);
  }
  if (auto it = fn->find("arguments"); it != fn->end() && !it->is_object() && !it->is_string()) {
    wrong_type(r, fn_key + ".arguments", "an object or a string", *it);
  }
  if (auto it = call.find("id"); it != call.end() && !it->is_string()) {
    wrong_type(r, key + ".id", "a string", *it);
  }
}

// The keys chat templates read with a fixed type (HF's message format); others pass unchecked.
// Null is accepted where a template tests `is none` (datasets exported from Arrow tables carry
// every column on every message, null where unused).
void check_message_keys(const DatasetRecord& r, const json& msg, const std::string& where) {
  for (auto it = msg.begin(); it != msg.end(); ++it) {
    const std::string key = where + "." + it.key();
    const json& v = it.value();
    if (it.key() == "tool_calls") {
      if (v.is_null()) continue;
      if (!v.is_array()) wrong_type(r, key, "a list", v);
      for (size_t k = 0; k < v.size(); ++k) check_tool_call(r, v[k], fmt::format("{}[{}]", key, k));
    } else if (it.key() == "tool_call_id" || it.key() == "name" ||
               it.key() == "reasoning_content" || it.key() == "thinking") {
      if (!v.is_null() && !v.is_string()) wrong_type(r, key, "a string", v);
    }
  }
}

bool has_tool_calls(const json& msg) {
  auto it = msg.find("tool_calls");
  return it != msg.end() && it->is_array() && !it->empty();
}

// Record keys passed to the template beside the messages (apply_chat_template's arguments).
// `json_text_tools`: sharegpt records as LLaMA-Factory writes them, whose `tools` is a string
// holding the JSON list.
ChatArgs convert_chat_args(const DatasetRecord& r, bool json_text_tools) {
  ChatArgs args;
  for (const char* key : {"tools", "documents"}) {
    auto it = r.value.find(key);
    if (it == r.value.end() || it->is_null()) continue;
    json parsed;
    if (json_text_tools && it->is_string() && std::string_view(key) == "tools") {
      if (it->get<std::string>().empty()) continue;
      try {
        parsed = json::parse(it->get<std::string>());
      } catch (const json::exception&) {
        fail("{}: 'tools' is a string that is not JSON; write the list of tools as JSON",
             r.origin);
      }
      if (!parsed.is_array())
        fail("{}: 'tools' holds JSON that is not a list (it is {})", r.origin, parsed.type_name());
      for (size_t k = 0; k < parsed.size(); ++k)
        if (!parsed[k].is_object()) wrong_type(r, fmt::format("tools[{}]", k), "an object", parsed[k]);
      args.tools = parsed;
      continue;
    }
    if (!it->is_array()) {
      fail("{}: '{}' is not a list (it is {}); write it as a JSON list of objects", r.origin, key,
           it->type_name());
    }
    for (size_t k = 0; k < it->size(); ++k) {
      if (!(*it)[k].is_object()) wrong_type(r, fmt::format("{}[{}]", key, k), "an object", (*it)[k]);
    }
    (std::string_view(key) == "tools" ? args.tools : args.documents) = *it;
  }
  return args;
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
    const json& item = list[i];
    FTUNE_CHECK(item.is_object(), "{}: {} is not an object", r.origin, where);
    const std::string role = require_string(r, item, role_key, where);
    std::optional<std::string> mapped;
    if (sharegpt) {
      mapped = sharegpt_role(role);
      if (!mapped) {
        fail("{}: {} has unknown {} '{}' (expected system, human, gpt, tool, ipython, function_call, observation)", r.origin,
             where, role_key, role);
      }
    } else {
      FTUNE_CHECK(!role.empty(), "{}: {} has an empty {}", r.origin, where, role_key);
      mapped = role;  // any role: the template decides what it can render
    }
    check_message_keys(r, item, where);
    ChatMessage m;
    m.role = *mapped;
    auto text = item.find(text_key);
    if (sharegpt && role == "function_call") {
      // The value is the call as JSON, {"name", "arguments"} or a list of them: it becomes the
      // assistant turn's tool_calls, the content left out.
      FTUNE_CHECK(text != item.end() && text->is_string(), "{}: {} ('function_call') needs a "
                  "string '{}' holding the call as JSON", r.origin, where, text_key);
      json call;
      try {
        call = json::parse(text->get<std::string>());
      } catch (const json::exception&) {
        fail("{}: {} ('function_call') '{}' is not JSON: {{\"name\": ..., \"arguments\": {{...}}}} "
             "expected", r.origin, where, text_key);
      }
      json calls = json::array();
      for (const json& c : call.is_array() ? call : json::array({call}))
        calls.push_back(json{{"type", "function"}, {"function", c}});
      for (size_t k = 0; k < calls.size(); ++k)
        check_tool_call(r, calls[k], fmt::format("{}.{}[{}]", where, text_key, k));
      m.content_kind = ContentKind::absent;
      m.extra["tool_calls"] = calls;
      for (auto it = item.begin(); it != item.end(); ++it)
        if (it.key() != role_key && it.key() != text_key) m.extra[it.key()] = it.value();
      conv.push_back(std::move(m));
      continue;
    }
    if (text != item.end() && text->is_string()) {
      m.content = text->get<std::string>();
    } else if (text != item.end() && text->is_array()) {
      // OpenAI-style content parts: text parts are joined as the multimodal templates write
      // them (one after another); a text model has nothing to do with the others.
      std::string joined;
      for (size_t k = 0; k < text->size(); ++k) {
        const json& part = (*text)[k];
        const std::string pw = fmt::format("{}.{}[{}]", where, text_key, k);
        FTUNE_CHECK(part.is_object(), "{}: {} is not an object (it is {}); content parts look "
                    "like {{\"type\": \"text\", \"text\": \"...\"}}", r.origin, pw, part.type_name());
        auto type = part.find("type");
        FTUNE_CHECK(type != part.end() && type->is_string(), "{}: {} has no string 'type'",
                    r.origin, pw);
        FTUNE_CHECK(*type == "text", "{}: {} is a '{}' part; ftune trains text models, only "
                    "'text' parts can be used", r.origin, pw, type->get<std::string>());
        auto t = part.find("text");
        FTUNE_CHECK(t != part.end() && t->is_string(), "{}: {} has no string 'text'", r.origin, pw);
        joined += t->get<std::string>();
      }
      m.content = joined;
    } else if (has_tool_calls(item) && (text == item.end() || text->is_null())) {
      // A turn that only calls tools: the template decides how (or whether) to write it.
      m.content_kind = text == item.end() ? ContentKind::absent : ContentKind::null;
    } else if (text == item.end()) {
      fail("{}: {} has no '{}' (only a message with tool_calls may leave it out)", r.origin,
           where, text_key);
    } else {
      fail("{}: {} '{}' is not a string (it is {}){}", r.origin, where, text_key,
           text->type_name(), text->is_null() ? "; only a message with tool_calls may have null" : "");
    }
    for (auto it = item.begin(); it != item.end(); ++it) {
      if (it.key() != role_key && it.key() != text_key) m.extra[it.key()] = it.value();
    }
    conv.push_back(std::move(m));
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
  std::vector<std::string> names;
  for (auto it = v.begin(); it != v.end(); ++it) names.push_back(it.key());
  std::sort(names.begin(), names.end());
  std::string keys;
  for (const auto& k : names) keys += (keys.empty() ? "" : ", ") + k;
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
      ex.chat_args = convert_chat_args(r, /*json_text_tools=*/true);
      break;
    case DatasetFormat::messages:
      ex.is_conversation = true;
      ex.conversation = convert_turns(r, "messages", "role", "content", false);
      ex.chat_args = convert_chat_args(r, /*json_text_tools=*/false);
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
