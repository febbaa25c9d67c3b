// Chat template table and renderers (see chat_template.h). Each renderer mirrors one official
// Jinja source statement by statement; the quoted sources are in tests/py/test_chat_templates.py.
#include "data/chat_template.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/json_limits.h"
#include "data/data_files.h"

namespace ftune {

namespace {

// Collects rendered text, merging neighbours with the same trainable flag.
class SegmentWriter {
 public:
  void add(std::string_view text, bool trainable) {
    if (text.empty()) return;
    if (!out_.empty() && out_.back().trainable == trainable) {
      out_.back().text += text;
    } else {
      out_.push_back(TextSegment{std::string(text), trainable});
    }
  }
  std::vector<TextSegment> take() { return std::move(out_); }

 private:
  std::vector<TextSegment> out_;
};

bool is_assistant(const ChatMessage& m) { return m.role == "assistant"; }

[[noreturn]] void alternation_error(const ChatTemplate& t, size_t index, const std::string& role) {
  fail("chat template {}: conversation roles must alternate user/assistant/user/assistant/... "
       "(message {} has role '{}')",
       t.name, index, role);
}

// meta-llama/Meta-Llama-3-8B-Instruct:
//   {% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'
//                    + message['content'] | trim + '<|eot_id|>' %}
//   {% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}
void render_llama3(const ChatTemplate& t, const Conversation& conv, SegmentWriter& w) {
  for (size_t i = 0; i < conv.size(); ++i) {
    const ChatMessage& m = conv[i];
    if (i == 0) w.add(t.bos_token, false);
    w.add("<|start_header_id|>" + m.role + "<|end_header_id|>\n\n", false);
    w.add(python_strip(m.content) + "<|eot_id|>", is_assistant(m));
  }
}

// meta-llama/Llama-2-7b-chat-hf: an optional leading system message is folded into the first
// loop message as '<<SYS>>\n' + system + '\n<</SYS>>\n\n' + content; user turns render
// bos + '[INST] ' + content.strip() + ' [/INST]', assistant turns ' ' + content.strip() + ' ' +
// eos. Roles alternate from user (else raise); another role at an odd index renders nothing.
void render_llama2(const ChatTemplate& t, const Conversation& conv, SegmentWriter& w) {
  const bool has_system = conv[0].role == "system";
  const size_t first = has_system ? 1 : 0;
  for (size_t k = 0; first + k < conv.size(); ++k) {
    const ChatMessage& m = conv[first + k];
    if ((m.role == "user") != (k % 2 == 0)) alternation_error(t, first + k, m.role);
    std::string content = m.content;
    if (k == 0 && has_system) {
      content = "<<SYS>>\n" + conv[0].content + "\n<</SYS>>\n\n" + m.content;
    }
    if (m.role == "user") {
      w.add(t.bos_token + "[INST] " + python_strip(content) + " [/INST]", false);
    } else if (m.role == "assistant") {
      w.add(" " + python_strip(content) + " " + t.eos_token, true);
    }
  }
}

// mistralai/Mistral-7B-Instruct-v0.1: bos, then '[INST] ' + content + ' [/INST]' for users and
// content + eos + ' ' for assistants; roles alternate from user; other roles raise.
void render_mistral(const ChatTemplate& t, const Conversation& conv, SegmentWriter& w) {
  w.add(t.bos_token, false);
  for (size_t k = 0; k < conv.size(); ++k) {
    const ChatMessage& m = conv[k];
    if ((m.role == "user") != (k % 2 == 0)) alternation_error(t, k, m.role);
    if (m.role == "user") {
      w.add("[INST] " + m.content + " [/INST]", false);
    } else if (m.role == "assistant") {
      w.add(m.content + t.eos_token, true);
      w.add(" ", false);  // separates the turn from the next [INST]; not part of the reply
    } else {
      fail("chat template {}: only user and assistant roles are supported (message {} has role "
           "'{}')",
           t.name, k, m.role);
    }
  }
}

// Qwen/Qwen2-7B-Instruct: '<|im_start|>' + role + '\n' + content + '<|im_end|>' + '\n' per
// message, preceded by a default system message when the first message is not a system one.
// The trained part of an assistant turn is content + <|im_end|>; the '\n' after it is not.
void render_chatml(const ChatTemplate& t, const Conversation& conv, SegmentWriter& w) {
  for (size_t i = 0; i < conv.size(); ++i) {
    const ChatMessage& m = conv[i];
    if (i == 0 && m.role != "system" && t.default_system) {
      w.add("<|im_start|>system\n" + *t.default_system + "<|im_end|>\n", false);
    }
    w.add("<|im_start|>" + m.role + "\n", false);
    w.add(m.content + "<|im_end|>", is_assistant(m));
    w.add("\n", false);
  }
}

// ftune's alpaca chat template (FORMATS.md §9 prompt strings, no-input form; Jinja source in
// tests/py/test_chat_templates.py): bos + (system content or the alpaca preamble), then
// '\n\n### Instruction:\n' + content per user turn and '\n\n### Response:\n' + content + eos
// per assistant turn; other roles raise.
constexpr std::string_view kAlpacaPreamble =
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.";

void render_alpaca(const ChatTemplate& t, const Conversation& conv, SegmentWriter& w) {
  w.add(t.bos_token, false);
  size_t first = 0;
  if (conv[0].role == "system") {
    w.add(conv[0].content, false);
    first = 1;
  } else {
    w.add(kAlpacaPreamble, false);
  }
  for (size_t k = first; k < conv.size(); ++k) {
    const ChatMessage& m = conv[k];
    if (m.role == "user") {
      w.add("\n\n### Instruction:\n" + m.content, false);
    } else if (m.role == "assistant") {
      w.add("\n\n### Response:\n", false);
      w.add(m.content + t.eos_token, true);
    } else {
      fail("chat template {}: only user and assistant roles are supported after an optional "
           "leading system message (message {} has role '{}')",
           t.name, k, m.role);
    }
  }
}

using RenderFn = void (*)(const ChatTemplate&, const Conversation&, SegmentWriter&);

struct ChatTemplateEntry {
  ChatTemplateKind kind;
  const char* name;
  const char* default_bos;     // official tokenizer_config.json values
  const char* default_eos;
  const char* default_system;  // nullptr = none
  RenderFn render;
  const char* generation_prompt;  // the {% if add_generation_prompt %} text ("" = none)
};

constexpr int kChatTemplateCount = 5;
constexpr std::array<ChatTemplateEntry, kChatTemplateCount> kChatTemplates = {{
    {ChatTemplateKind::llama3, "llama-3", "<|begin_of_text|>", "<|eot_id|>", nullptr,
     render_llama3, "<|start_header_id|>assistant<|end_header_id|>\n\n"},
    {ChatTemplateKind::llama2, "llama-2", "<s>", "</s>", nullptr, render_llama2, ""},
    {ChatTemplateKind::mistral, "mistral", "<s>", "</s>", nullptr, render_mistral, ""},
    {ChatTemplateKind::chatml, "chatml", "", "<|im_end|>", "You are a helpful assistant.",
     render_chatml, "<|im_start|>assistant\n"},
    {ChatTemplateKind::alpaca, "alpaca", "", "</s>", nullptr, render_alpaca,
     "\n\n### Response:\n"},
}};
static_assert(static_cast<int>(ChatTemplateKind::alpaca) + 1 == kChatTemplateCount,
              "every ChatTemplateKind has one table entry");

const ChatTemplateEntry& entry_of(ChatTemplateKind kind) {
  for (const auto& e : kChatTemplates) {
    if (e.kind == kind) return e;
  }
  fail("chat template: kind {} has no table entry", static_cast<int>(kind));
}

ChatTemplate from_entry(const ChatTemplateEntry& e) {
  ChatTemplate t;
  t.kind = e.kind;
  t.name = e.name;
  t.bos_token = e.default_bos;
  t.eos_token = e.default_eos;
  if (e.default_system) t.default_system = std::string(e.default_system);
  return t;
}

// "Llama_3" and "llama3" name "llama-3": lower case, '-' and '_' ignored.
std::string normalize_name(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '-' || c == '_') continue;
    out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

std::string known_names() {
  std::string s;
  for (const auto& e : kChatTemplates) s += (s.empty() ? "" : ", ") + std::string(e.name);
  return s;
}

bool contains(std::string_view hay, std::string_view needle) {
  return hay.find(needle) != std::string_view::npos;
}

// Decodes the UTF-8 code point starting at s[i]; sets len. Invalid bytes decode as themselves
// (never whitespace), so stripping stops at them.
char32_t decode_at(std::string_view s, size_t i, size_t& len) {
  const auto b = static_cast<unsigned char>(s[i]);
  int n = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xE ? 3 : (b >> 3) == 0x1E ? 4 : 0;
  if (n == 0 || i + n > s.size()) {
    len = 1;
    return 0xFFFD;
  }
  char32_t cp = n == 1 ? b : b & (0x7F >> n);
  for (int k = 1; k < n; ++k) cp = (cp << 6) | (static_cast<unsigned char>(s[i + k]) & 0x3F);
  len = static_cast<size_t>(n);
  return cp;
}

// Python's str.isspace() set (Unicode White_Space as CPython defines it).
bool is_python_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
         c == 0x202F || c == 0x205F || c == 0x3000;
}

// tokenizer_config.json token fields are a string, null, or {"content": "...", ...}.
std::optional<std::string> token_field(const nlohmann::json& cfg, const char* key) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return std::nullopt;
}

}  // namespace

std::string python_strip(std::string_view s) {
  size_t begin = 0;
  while (begin < s.size()) {
    size_t len = 0;
    if (!is_python_space(decode_at(s, begin, len))) break;
    begin += len;
  }
  size_t end = s.size();
  while (end > begin) {
    size_t start = end - 1;  // back up to the lead byte of the last code point
    while (start > begin && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
    size_t len = 0;
    const char32_t cp = decode_at(s, start, len);
    if (start + len != end || !is_python_space(cp)) break;
    end = start;
  }
  return std::string(s.substr(begin, end - begin));
}

std::vector<std::string> ChatTemplate::special_tokens() const {
  std::vector<std::string> out;
  auto add = [&](const std::string& s) {
    if (!s.empty() && std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
  };
  switch (kind) {
    case ChatTemplateKind::llama3:
      add(bos_token);
      add("<|start_header_id|>");
      add("<|end_header_id|>");
      add("<|eot_id|>");
      break;
    case ChatTemplateKind::llama2:
    case ChatTemplateKind::mistral:
    case ChatTemplateKind::alpaca:
      add(bos_token);
      add(eos_token);
      break;
    case ChatTemplateKind::chatml:
      add("<|im_start|>");
      add("<|im_end|>");
      break;
  }
  return out;
}

std::string ChatTemplate::end_of_turn() const {
  switch (kind) {
    case ChatTemplateKind::llama3:
      return "<|eot_id|>";
    case ChatTemplateKind::chatml:
      return "<|im_end|>";
    default:
      return eos_token;
  }
}

std::vector<std::string> chat_template_names() {
  std::vector<std::string> out;
  for (const auto& e : kChatTemplates) out.emplace_back(e.name);
  return out;
}

ChatTemplate chat_template_by_name(std::string_view name) {
  const std::string want = normalize_name(name);
  for (const auto& e : kChatTemplates) {
    if (normalize_name(e.name) == want) return from_entry(e);
  }
  fail("unknown chat template '{}' (expected auto, {})", name, known_names());
}

std::optional<ChatTemplate> detect_chat_template(std::string_view src) {
  if (contains(src, "<|start_header_id|>") && contains(src, "<|eot_id|>")) {
    if (contains(src, "Cutting Knowledge Date") || contains(src, "Today Date")) {
      fail("chat template: this is the Llama-3.1+ template (date/tools system header), which "
           "ftune does not render; set model.chat_template: llama-3 to use the Llama-3 format");
    }
    return from_entry(entry_of(ChatTemplateKind::llama3));
  }
  if (contains(src, "<|im_start|>") && contains(src, "<|im_end|>")) {
    if (contains(src, "<think>")) {
      fail("chat template: this chatml template has <think> reasoning blocks (Qwen3 style), "
           "which ftune does not render; set model.chat_template: chatml");
    }
    ChatTemplate t = from_entry(entry_of(ChatTemplateKind::chatml));
    // The default system message the template inserts when a conversation has none.
    constexpr std::string_view kQwen25 =
        "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
    constexpr std::string_view kQwen2 = "You are a helpful assistant.";
    if (contains(src, kQwen25)) {
      t.default_system = std::string(kQwen25);
    } else if (contains(src, kQwen2)) {
      t.default_system = std::string(kQwen2);
    } else {
      t.default_system.reset();
    }
    return t;
  }
  if (contains(src, "<<SYS>>") && contains(src, "[INST]")) {
    return from_entry(entry_of(ChatTemplateKind::llama2));
  }
  if (contains(src, "[INST]")) {
    if (!contains(src, "message['content'] + eos_token + ' '")) {
      fail("chat template: this [INST] template is not the Mistral-7B-Instruct-v0.1 form "
           "ftune renders; set model.chat_template: mistral to use that form");
    }
    return from_entry(entry_of(ChatTemplateKind::mistral));
  }
  if (contains(src, "### Instruction:") && contains(src, "### Response:")) {
    return from_entry(entry_of(ChatTemplateKind::alpaca));
  }
  return std::nullopt;
}

ChatTemplate resolve_chat_template(std::string_view spec, const std::string& config_path) {
  const bool is_auto = normalize_name(spec) == "auto" || spec.empty();
  nlohmann::json cfg;
  if (!config_path.empty()) {
    try {
      const std::string text = read_file_bytes(config_path);
      check_json_nesting(text, config_path);
      cfg = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
      fail("{}: invalid JSON: {}", config_path, e.what());
    }
    FTUNE_CHECK(cfg.is_object(), "{}: expected a JSON object", config_path);
  } else if (is_auto) {
    fail("model.chat_template is auto but no tokenizer_config.json was given; set "
         "model.chat_template to one of {}",
         known_names());
  }

  ChatTemplate t;
  if (is_auto) {
    std::string source;
    auto it = cfg.find("chat_template");
    if (it != cfg.end() && it->is_string()) {
      source = it->get<std::string>();
    } else if (it != cfg.end() && it->is_array()) {  // [{"name": "default", "template": ...}]
      for (const auto& e : *it) {
        if (e.is_object() && e.value("name", "") == "default" && e.contains("template") &&
            e["template"].is_string()) {
          source = e["template"].get<std::string>();
        }
      }
      FTUNE_CHECK(!source.empty(), "{}: chat_template list has no entry named 'default'",
                  config_path);
    } else {
      // Newer transformers save the template next to the config as chat_template.jinja.
      const auto jinja = std::filesystem::path(config_path).parent_path() / "chat_template.jinja";
      std::error_code ec;
      if (std::filesystem::is_regular_file(jinja, ec)) {
        source = read_file_bytes(jinja.string());
      } else {
        fail("{}: no chat_template (base model?); set model.chat_template to one of {}",
             config_path, known_names());
      }
    }
    std::optional<ChatTemplate> found = detect_chat_template(source);
    if (!found) {
      fail("{}: cannot recognise its chat_template; set model.chat_template to one of {}",
           config_path, known_names());
    }
    t = *found;
  } else {
    t = chat_template_by_name(spec);
  }
  if (cfg.is_object()) {
    if (auto bos = token_field(cfg, "bos_token")) t.bos_token = *bos;
    else if (cfg.contains("bos_token")) t.bos_token.clear();  // null: Jinja renders ""
    if (auto eos = token_field(cfg, "eos_token")) t.eos_token = *eos;
  }
  return t;
}

std::vector<TextSegment> render_chat(const ChatTemplate& tmpl, const Conversation& conv,
                                     bool add_generation_prompt) {
  FTUNE_CHECK(!conv.empty(), "chat template {}: conversation is empty", tmpl.name);
  SegmentWriter w;
  entry_of(tmpl.kind).render(tmpl, conv, w);
  if (add_generation_prompt) w.add(entry_of(tmpl.kind).generation_prompt, false);
  return w.take();
}

std::string join_segments(const std::vector<TextSegment>& segments) {
  std::string s;
  for (const auto& seg : segments) s += seg.text;
  return s;
}

}  // namespace ftune
