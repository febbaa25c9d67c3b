// Chat template presets, resolution from tokenizer_config.json and rendering through the Jinja
// interpreter (see chat_template.h; spans in chat_spans.cpp).
#include "data/chat_template.h"

#include <array>
#include <cctype>
#include <ctime>
#include <filesystem>

#include "core/error.h"
#include "data/data_files.h"
#include "data/jinja/builtins.h"
#include "data/jinja/interpreter.h"
#include "data/jinja/pystr.h"
#include "io/json_limits.h"

namespace ftune {

namespace {

// Generated from tests/fixtures/chat_templates/*.jinja (the official sources); a test checks they agree.
constexpr std::string_view kLlama3Source = R"JINJA({% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>

'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>

' }}{% endif %})JINJA";
constexpr std::string_view kLlama2Source = R"JINJA({% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %})JINJA";
constexpr std::string_view kMistralSource = R"JINJA({{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %})JINJA";
constexpr std::string_view kChatmlSource = R"JINJA({% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system
You are a helpful assistant.<|im_end|>
' }}{% endif %}{{'<|im_start|>' + message['role'] + '
' + message['content'] + '<|im_end|>' + '
'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant
' }}{% endif %})JINJA";
constexpr std::string_view kAlpacaSource = R"JINJA({{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}{% set loop_messages = messages[1:] %}{% else %}{{ 'Below is an instruction that describes a task. Write a response that appropriately completes the request.' }}{% set loop_messages = messages %}{% endif %}{% for message in loop_messages %}{% if message['role'] == 'user' %}{{ '\n\n### Instruction:\n' + message['content'] }}{% elif message['role'] == 'assistant' %}{{ '\n\n### Response:\n' + message['content'] + eos_token }}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '\n\n### Response:\n' }}{% endif %})JINJA";

struct Preset {
  const char* name;
  std::string_view source;
  const char* bos;  // official tokenizer_config.json values
  const char* eos;
  std::array<const char*, 4> tokens;  // special tokens the source writes besides bos/eos
  // Whether the source writes any role name into its header (llama-3, chatml) rather than
  // only system/user/assistant.
  bool writes_any_role;
};

constexpr int kPresetCount = 5;
constexpr std::array<Preset, kPresetCount> kPresets = {{
    {"llama-3", kLlama3Source, "<|begin_of_text|>", "<|eot_id|>",
     {"<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", nullptr}, true},
    {"llama-2", kLlama2Source, "<s>", "</s>", {nullptr, nullptr, nullptr, nullptr}, false},
    {"mistral", kMistralSource, "<s>", "</s>", {nullptr, nullptr, nullptr, nullptr}, false},
    {"chatml", kChatmlSource, "", "<|im_end|>", {"<|im_start|>", "<|im_end|>", nullptr, nullptr},
     true},
    {"alpaca", kAlpacaSource, "", "</s>", {nullptr, nullptr, nullptr, nullptr}, false},
}};

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
  for (const auto& p : kPresets) s += (s.empty() ? "" : ", ") + std::string(p.name);
  return s;
}

// Which special tokens a preset writes into the text, given its bos/eos.
std::vector<std::string> preset_tokens(const Preset& p, const ChatTemplate& t) {
  std::vector<std::string> out;
  auto add = [&](const std::string& s) {
    if (!s.empty() && std::find(out.begin(), out.end(), s) == out.end()) out.push_back(s);
  };
  if (std::string_view(p.name) != "chatml") add(t.bos_token);
  if (std::string_view(p.name) != "chatml" && std::string_view(p.name) != "llama-3") add(t.eos_token);
  for (const char* tok : p.tokens) {
    if (tok) add(tok);
  }
  return out;
}

// tokenizer_config.json token fields are a string, null, or {"content": "...", ...}.
std::optional<std::string> token_field(const nlohmann::json& cfg, const std::string& key) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return std::nullopt;
}

std::tm date_of(const std::string& date) {
  std::tm tm{};
  if (date.empty()) {
    const std::time_t now = std::time(nullptr);
    localtime_r(&now, &tm);
    return tm;
  }
  int y = 0, m = 0, d = 0;
  FTUNE_CHECK(std::sscanf(date.c_str(), "%d-%d-%d", &y, &m, &d) == 3 && m >= 1 && m <= 12 &&
                  d >= 1 && d <= 31,
              "chat template date '{}' is not YYYY-MM-DD", date);
  tm.tm_year = y - 1900;
  tm.tm_mon = m - 1;
  tm.tm_mday = d;
  tm.tm_hour = 12;
  std::tm copy = tm;
  const std::time_t t = timegm(&copy);  // fills in the weekday and day of the year
  gmtime_r(&t, &tm);
  return tm;
}

}  // namespace

std::string python_strip(std::string_view s) { return jinja::py_strip(s, std::nullopt, true, true); }

std::string ChatTemplate::fingerprint() const {
  std::string f = name + '\0' + source + '\0' + bos_token + '\0' + eos_token + '\0' +
                  variables.dump();
  // Only templates that call strftime_now depend on the date.
  if (source.find("strftime_now") != std::string::npos) {
    char buf[32];
    const std::tm tm = date_of(date);
    std::strftime(buf, sizeof buf, "%Y-%m-%d", &tm);
    f += '\0' + std::string(buf);
  }
  return f;
}

ChatTemplate make_chat_template(std::string name, std::string source) {
  ChatTemplate t;
  t.name = std::move(name);
  t.source = std::move(source);
  try {
    t.parsed = jinja::load_template(t.source);
  } catch (const Error& e) {
    fail("chat template {}: {}", t.name, e.what());
  }
  for (const auto& p : kPresets) {  // capabilities follow the source, whatever its name
    if (p.source == t.source) {
      t.is_preset = true;
      t.preset_writes_any_role = p.writes_any_role;
    }
  }
  return t;
}

std::vector<std::string> chat_template_names() {
  std::vector<std::string> out;
  for (const auto& p : kPresets) out.emplace_back(p.name);
  return out;
}

ChatTemplate chat_template_by_name(std::string_view name) {
  const std::string want = normalize_name(name);
  for (const auto& p : kPresets) {
    if (normalize_name(p.name) != want) continue;
    ChatTemplate t = make_chat_template(p.name, std::string(p.source));
    t.bos_token = p.bos;
    t.eos_token = p.eos;
    t.preset_special_tokens = preset_tokens(p, t);
    return t;
  }
  fail("unknown chat template '{}' (expected auto, {})", name, known_names());
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
    std::string source, origin = config_path;
    auto it = cfg.find("chat_template");
    if (it != cfg.end() && it->is_string()) {
      source = it->get<std::string>();
    } else if (it != cfg.end() && it->is_array()) {  // [{"name": "default", "template": ...}]
      bool found = false;
      for (const auto& e : *it) {
        if (e.is_object() && e.value("name", "") == "default" && e.contains("template") &&
            e["template"].is_string()) {
          source = e["template"].get<std::string>();
          found = true;
        }
      }
      FTUNE_CHECK(found, "{}: chat_template list has no entry named 'default'", config_path);
    } else {
      // Newer transformers save the template next to the config as chat_template.jinja.
      const auto jinja = std::filesystem::path(config_path).parent_path() / "chat_template.jinja";
      std::error_code ec;
      if (!std::filesystem::is_regular_file(jinja, ec)) {
        fail("{}: no chat_template (base model?); set model.chat_template to one of {}",
             config_path, known_names());
      }
      origin = jinja.string();
      source = read_file_bytes(origin);
    }
    t = make_chat_template(origin, std::move(source));
    for (const auto& p : kPresets) {  // a preset's official source: name it so
      if (p.source == t.source) t.name = p.name;
    }
  } else {
    t = chat_template_by_name(spec);
  }
  if (cfg.is_object()) {
    // transformers passes every special token of the tokenizer to the template.
    for (auto it = cfg.begin(); it != cfg.end(); ++it) {
      const std::string& key = it.key();
      if (key.size() < 7 || key.compare(key.size() - 6, 6, "_token") != 0) continue;
      const auto value = token_field(cfg, key);
      if (key == "bos_token") {
        t.bos_token = value.value_or("");  // null or absent: jinja renders ""
      } else if (key == "eos_token") {
        if (value) t.eos_token = *value;
      } else if (value) {
        t.variables[key] = *value;
      }
    }
  }
  {  // a preset's special tokens, with the config's bos/eos
    for (const auto& p : kPresets) {
      if (p.name == t.name) t.preset_special_tokens = preset_tokens(p, t);
    }
  }
  return t;
}

void check_preset_can_render(const ChatTemplate& tmpl, const Conversation& conv,
                             const ChatArgs& args) {
  if (!tmpl.is_preset) return;
  const auto refuse = [&](const std::string& what, const std::string& where) {
    fail("chat template {} (a built-in preset) cannot render {}{}: it writes only system, user "
         "and assistant text; use a template that supports it (model.chat_template: auto with "
         "a model whose tokenizer_config.json has one)",
         tmpl.name, what, where.empty() ? "" : " (" + where + ")");
  };
  if (!args.tools.is_null()) refuse("'tools'", "");
  if (!args.documents.is_null()) refuse("'documents'", "");
  for (size_t i = 0; i < conv.size(); ++i) {
    const ChatMessage& m = conv[i];
    const std::string where = fmt::format("messages[{}]", i);
    const bool basic = m.role == "system" || m.role == "user" || m.role == "assistant";
    if (!basic && !tmpl.preset_writes_any_role) refuse("role '" + m.role + "'", where);
    if (m.content_kind != ContentKind::text) refuse("a message without string 'content'", where);
    for (const char* key : {"tool_calls", "reasoning_content", "thinking"}) {
      if (auto it = m.extra.find(key); it != m.extra.end() && !it->is_null()) {
        refuse(fmt::format("'{}'", key), where);
      }
    }
  }
}

std::string render_chat_text(const ChatTemplate& tmpl, const Conversation& conv,
                             bool add_generation_prompt,
                             std::vector<std::pair<size_t, size_t>>* generation_spans,
                             const ChatArgs& args) {
  FTUNE_CHECK(tmpl.parsed != nullptr, "chat template {}: not parsed (use make_chat_template)",
              tmpl.name);
  check_preset_can_render(tmpl, conv, args);
  auto globals = jinja::builtin_globals(date_of(tmpl.date));
  for (auto it = tmpl.variables.begin(); it != tmpl.variables.end(); ++it) {
    globals[it.key()] = jinja::Value::from_json(it.value());
  }
  jinja::Value::List messages;
  for (const ChatMessage& m : conv) {
    jinja::Value::Dict d;
    d.emplace_back(jinja::Value("role"), jinja::Value(m.role));
    switch (m.content_kind) {  // absent: no key, so the template sees it undefined
      case ContentKind::text:
        d.emplace_back(jinja::Value("content"), jinja::Value(m.content));
        break;
      case ContentKind::null:
        d.emplace_back(jinja::Value("content"), jinja::Value::none());
        break;
      case ContentKind::absent:
        break;
    }
    for (auto it = m.extra.begin(); it != m.extra.end(); ++it) {
      if (it.key() == "role" || it.key() == "content") continue;
      d.emplace_back(jinja::Value(it.key()), jinja::Value::from_json(it.value()));
    }
    messages.push_back(jinja::Value::dict(std::move(d)));
  }
  globals["messages"] = jinja::Value::list(std::move(messages));
  globals["add_generation_prompt"] = jinja::Value(add_generation_prompt);
  globals["bos_token"] = jinja::Value(tmpl.bos_token);
  globals["eos_token"] = jinja::Value(tmpl.eos_token);
  // apply_chat_template(tools=..., documents=...): None when not given.
  globals["tools"] = args.tools.is_null() ? jinja::Value::none() : jinja::Value::from_json(args.tools);
  globals["documents"] =
      args.documents.is_null() ? jinja::Value::none() : jinja::Value::from_json(args.documents);
  try {
    jinja::Interpreter in(*tmpl.parsed, std::move(globals));
    jinja::RenderResult r = in.render();
    if (generation_spans) *generation_spans = std::move(r.generation_spans);
    return std::move(r.text);
  } catch (const Error& e) {
    fail("chat template {}: {}", tmpl.name, e.what());
  }
}

std::string join_segments(const std::vector<TextSegment>& segments) {
  std::string s;
  for (const auto& seg : segments) s += seg.text;
  return s;
}

}  // namespace ftune
