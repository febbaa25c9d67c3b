#include "cli/generation_setup.h"

#include <algorithm>
#include <filesystem>

#include "core/error.h"
#include "io/json_file.h"

namespace ftune {

namespace fs = std::filesystem;

namespace {

void add_unique(std::vector<int32_t>& v, int64_t id) {
  const auto i = static_cast<int32_t>(id);
  if (std::find(v.begin(), v.end(), i) == v.end()) v.push_back(i);
}

// tokenizer_config.json token fields are a string, null, or {"content": ...}.
std::optional<std::string> config_token(const nlohmann::json& cfg, const char* key) {
  const auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  return std::nullopt;
}

}  // namespace

std::vector<int32_t> stop_token_ids(const std::string& model_dir, const std::string& tokenizer_dir,
                                    const ModelSpec& spec, const Tokenizer& tok,
                                    const ChatTemplate* tmpl) {
  std::vector<int32_t> ids;
  auto add_checked = [&](int64_t id, const std::string& where) {
    FTUNE_CHECK(id >= 0 && id < spec.vocab_size,
                "{}: eos_token_id {} is outside the vocabulary (size {})", where, id,
                spec.vocab_size);
    add_unique(ids, id);
  };
  const std::string gen_path = model_dir + "/generation_config.json";
  std::error_code ec;
  if (fs::is_regular_file(gen_path, ec)) {
    const nlohmann::json g = read_json_file(gen_path);
    FTUNE_CHECK(g.is_object(), "{}: expected a JSON object", gen_path);
    if (const auto it = g.find("eos_token_id"); it != g.end() && !it->is_null()) {
      if (it->is_number_integer()) {
        add_checked(it->get<int64_t>(), gen_path);
      } else {
        FTUNE_CHECK(it->is_array(), "{}: eos_token_id must be an integer or a list of integers",
                    gen_path);
        for (const auto& e : *it) {
          FTUNE_CHECK(e.is_number_integer(),
                      "{}: eos_token_id must be an integer or a list of integers", gen_path);
          add_checked(e.get<int64_t>(), gen_path);
        }
      }
    }
  }
  for (int32_t e : spec.eos_token_ids) add_checked(e, model_dir + "/config.json");
  std::optional<int32_t> tok_eos;
  const std::string tc_path = tokenizer_dir + "/tokenizer_config.json";
  if (fs::is_regular_file(tc_path, ec)) {
    const nlohmann::json tc = read_json_file(tc_path);
    if (tc.is_object())
      if (auto s = config_token(tc, "eos_token")) tok_eos = tok.token_to_id(*s);
  }
  if (!tok_eos) tok_eos = tok.eos_id();
  if (tok_eos) add_unique(ids, *tok_eos);
  if (tmpl != nullptr)
    if (auto id = tok.token_to_id(tmpl->eos_token)) add_unique(ids, *id);
  for (const char* s : {"<|eot_id|>", "<|im_end|>", "<|eom_id|>"})
    if (auto id = tok.token_to_id(s)) add_unique(ids, *id);
  ids.erase(std::remove_if(ids.begin(), ids.end(),
                           [&](int32_t id) { return id < 0 || id >= spec.vocab_size; }),
            ids.end());
  return ids;
}

ChatTemplate generation_chat_template(const std::string& name, const std::string& tokenizer_dir,
                                      const Tokenizer& tok) {
  const std::string cfg = tokenizer_dir + "/tokenizer_config.json";
  std::error_code ec;
  const bool have_cfg = fs::is_regular_file(cfg, ec);
  ChatTemplate t = resolve_chat_template(name, have_cfg ? cfg : std::string());
  for (const std::string& s : t.special_tokens())
    FTUNE_CHECK(tok.token_to_id(s).has_value(),
                "chat template {}: '{}' is not a token of {}/tokenizer.json (set --chat-template "
                "to the model's format)",
                t.name, s, tokenizer_dir);
  return t;
}

std::vector<int32_t> chat_prompt_ids(const Tokenizer& tok, const ChatTemplate& tmpl,
                                     const Conversation& conv) {
  return tok.encode(render_chat_text(tmpl, conv, /*add_generation_prompt=*/true),
                    /*add_special_tokens=*/false);
}

std::vector<int32_t> raw_prompt_ids(const Tokenizer& tok, const std::string& text) {
  return tok.encode(text, /*add_special_tokens=*/true);
}

}  // namespace ftune
