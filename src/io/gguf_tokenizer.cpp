#include "io/gguf_tokenizer.h"

#include <filesystem>
#include <map>
#include <optional>
#include <regex>

#include "core/error.h"
#include "io/json_file.h"

namespace ftune {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

enum TokenType : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4,
                           kUnused = 5, kByte = 6 };

// The Split regexes of the pre-tokenizers llama.cpp knows by name (llama-vocab.cpp).
constexpr const char* kLlama3Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
constexpr const char* kQwen2Regex =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+"
    "[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

// Every Split regex of a pre_tokenizer (a Sequence or a single one).
void split_regexes(const json& pt, std::vector<std::string>* out) {
  if (!pt.is_object()) return;
  if (pt.value("type", "") == "Sequence" && pt.contains("pretokenizers")) {
    for (const auto& p : pt["pretokenizers"]) split_regexes(p, out);
  } else if (pt.value("type", "") == "Split" && pt.contains("pattern") &&
             pt["pattern"].is_object() && pt["pattern"].contains("Regex") &&
             pt["pattern"]["Regex"].is_string()) {
    out->push_back(pt["pattern"]["Regex"].get<std::string>());
  }
}

// tokenizer_config.json's "bos_token" etc.: a string or {"content": ...}.
std::optional<std::string> special_content(const json& tc, const char* key) {
  if (!tc.is_object() || !tc.contains(key)) return std::nullopt;
  const json& v = tc[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string())
    return v["content"].get<std::string>();
  return std::nullopt;
}

// "Looks special" as gguf-py's does_token_look_special: <|...|>, <｜...｜>, or <...> of a few
// known shapes. Only the <|...|> form matters for the families ftune supports.
bool looks_special(const std::string& t) {
  return t.size() >= 4 && t.rfind("<|", 0) == 0 && t.compare(t.size() - 2, 2, "|>") == 0;
}

bool is_byte_token(const std::string& t) {
  static const std::regex re("<0x[0-9A-Fa-f]{2}>");
  return std::regex_match(t, re);
}

}  // namespace

GgufTokenizerKeys gguf_tokenizer_keys(const std::string& dir, const HFModelConfig& cfg) {
  const std::string path = dir + "/tokenizer.json";
  FTUNE_CHECK(fs::exists(path), "{}: no tokenizer.json (the GGUF file carries the tokenizer)", dir);
  const json tj = read_json_file(path);
  FTUNE_CHECK(tj.is_object() && tj.contains("model") && tj["model"].is_object(),
              "{}: missing key 'model'", path);
  const json& model = tj["model"];
  FTUNE_CHECK(model.value("type", "") == "BPE", "{}: model.type '{}' is not supported for GGUF "
              "export (only BPE tokenizers: Llama-2/3, Mistral, Qwen2)", path, model.value("type", ""));
  FTUNE_CHECK(model.contains("vocab") && model["vocab"].is_object(), "{}: model.vocab is missing",
              path);
  const bool spm = model.value("byte_fallback", false);  // SentencePiece-converted (Llama-2)
  const std::string tc_path = dir + "/tokenizer_config.json";
  const json tc = fs::exists(tc_path) ? read_json_file(tc_path) : json::object();

  const int64_t n = cfg.vocab_size;
  std::vector<std::string> tokens(static_cast<size_t>(n));
  std::vector<bool> present(static_cast<size_t>(n), false), added(static_cast<size_t>(n), false),
      special(static_cast<size_t>(n), false);
  std::map<std::string, int64_t> ids;
  auto place = [&](const std::string& text, int64_t id, const char* where) {
    FTUNE_CHECK(id >= 0 && id < n, "{}: {} token '{}' has id {}, outside config.json's "
                "vocab_size {}", path, where, text, id, n);
    tokens[static_cast<size_t>(id)] = text;
    present[static_cast<size_t>(id)] = true;
    ids[text] = id;
  };
  for (const auto& [text, id] : model["vocab"].items()) {
    FTUNE_CHECK(id.is_number_integer(), "{}: model.vocab['{}'] is not an integer id", path, text);
    place(text, id.get<int64_t>(), "vocabulary");
  }
  if (tj.contains("added_tokens") && tj["added_tokens"].is_array()) {
    for (const auto& a : tj["added_tokens"]) {
      FTUNE_CHECK(a.is_object() && a.contains("id") && a["id"].is_number_integer() &&
                      a.contains("content") && a["content"].is_string(),
                  "{}: added_tokens entries need an integer 'id' and a string 'content'", path);
      const int64_t id = a["id"].get<int64_t>();
      place(a["content"].get<std::string>(), id, "added");
      added[static_cast<size_t>(id)] = true;
      special[static_cast<size_t>(id)] = a.value("special", false);
    }
  }

  GgufTokenizerKeys out;
  std::optional<int64_t> unk;
  if (spm) {
    if (auto u = special_content(tc, "unk_token"); u && ids.count(*u)) unk = ids[*u];
    else if (model.contains("unk_token") && model["unk_token"].is_string() &&
             ids.count(model["unk_token"].get<std::string>()))
      unk = ids[model["unk_token"].get<std::string>()];
  }
  std::vector<int32_t> types(static_cast<size_t>(n));
  std::vector<float> scores;
  if (spm) scores.assign(static_cast<size_t>(n), 0.0f);
  for (int64_t i = 0; i < n; ++i) {
    const size_t k = static_cast<size_t>(i);
    if (!present[k]) {
      tokens[k] = "[PAD" + std::to_string(i) + "]";
      types[k] = spm ? kUnused : kUserDefined;
    } else if (spm && unk && *unk == i) {
      types[k] = kUnknown;
    } else if (spm && is_byte_token(tokens[k])) {
      types[k] = kByte;
    } else if (added[k]) {
      types[k] = special[k] || looks_special(tokens[k]) ? kControl : kUserDefined;
    } else {
      types[k] = kNormal;
      if (spm) scores[k] = -static_cast<float>(i);
    }
  }

  std::string pre;
  if (!spm) {
    std::vector<std::string> regexes;
    if (tj.contains("pre_tokenizer")) split_regexes(tj["pre_tokenizer"], &regexes);
    for (const auto& r : regexes) {
      if (r == kLlama3Regex) pre = "llama-bpe";
      else if (r == kQwen2Regex) pre = "qwen2";
    }
    if (pre.empty()) {
      pre = "default";
      out.warnings.push_back(fmt::format(
          "{}: pre-tokenizer not recognised (neither Llama-3's nor Qwen2's split regex); "
          "tokenizer.ggml.pre = \"default\", so llama.cpp may split text differently", path));
    }
  }

  out.kv.emplace_back("tokenizer.ggml.model", std::string(spm ? "llama" : "gpt2"));
  if (!spm) out.kv.emplace_back("tokenizer.ggml.pre", pre);
  out.kv.emplace_back("tokenizer.ggml.tokens", tokens);
  if (spm) out.kv.emplace_back("tokenizer.ggml.scores", scores);
  out.kv.emplace_back("tokenizer.ggml.token_type", types);
  if (!spm) {
    std::vector<std::string> merges;
    if (model.contains("merges") && model["merges"].is_array()) {
      for (const auto& m : model["merges"]) {
        if (m.is_string()) {
          merges.push_back(m.get<std::string>());
        } else {
          FTUNE_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(),
                      "{}: model.merges entries must be \"a b\" or [\"a\", \"b\"]", path);
          merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
        }
      }
    }
    out.kv.emplace_back("tokenizer.ggml.merges", merges);
  }

  // Special tokens: tokenizer_config.json by content, else config.json's ids.
  auto special_id = [&](const char* key, std::optional<int64_t> fallback) -> std::optional<int64_t> {
    if (auto c = special_content(tc, key)) {
      FTUNE_CHECK(ids.count(*c), "{}: {} '{}' is not a token of {}", tc_path, key, *c, path);
      return ids[*c];
    }
    return fallback;
  };
  const auto bos = special_id("bos_token", cfg.bos_token_id);
  const auto eos = special_id("eos_token", cfg.eos_token_ids.empty()
                                               ? std::nullopt
                                               : std::optional<int64_t>(cfg.eos_token_ids[0]));
  const auto pad = special_id("pad_token", cfg.pad_token_id);
  auto put_id = [&](const char* key, std::optional<int64_t> id) {
    if (id && *id >= 0 && *id < n) out.kv.emplace_back(key, static_cast<uint32_t>(*id));
  };
  put_id("tokenizer.ggml.bos_token_id", bos);
  put_id("tokenizer.ggml.eos_token_id", eos);
  if (spm) put_id("tokenizer.ggml.unknown_token_id", unk);
  put_id("tokenizer.ggml.padding_token_id", pad);

  // add_bos/add_eos: tokenizer_config.json, else the post-processor's single template.
  std::optional<bool> add_bos, add_eos;
  if (tc.contains("add_bos_token") && tc["add_bos_token"].is_boolean()) add_bos = tc["add_bos_token"].get<bool>();
  if (tc.contains("add_eos_token") && tc["add_eos_token"].is_boolean()) add_eos = tc["add_eos_token"].get<bool>();
  if (tj.contains("post_processor") && tj["post_processor"].is_object()) {
    const json& pp = tj["post_processor"];
    const json procs = pp.value("type", "") == "Sequence" && pp.contains("processors")
                           ? pp["processors"] : json::array({pp});
    for (const auto& p : procs) {
      if (!p.is_object() || p.value("type", "") != "TemplateProcessing" || !p.contains("single") ||
          !p["single"].is_array() || p["single"].size() < 2)
        continue;
      auto special_at = [&](const json& item) -> std::optional<std::string> {
        if (item.is_object() && item.contains("SpecialToken") && item["SpecialToken"].is_object())
          return item["SpecialToken"].value("id", std::string());
        return std::nullopt;
      };
      const auto first = special_at(p["single"].front());
      const auto last = special_at(p["single"].back());
      if (!add_bos) add_bos = first && bos && ids.count(*first) && ids[*first] == *bos;
      if (!add_eos && last) add_eos = eos && ids.count(*last) && ids[*last] == *eos;
    }
  }
  if (spm && !add_bos) add_bos = true;  // LlamaTokenizer's default
  if (add_bos) out.kv.emplace_back("tokenizer.ggml.add_bos_token", *add_bos);
  if (add_eos) out.kv.emplace_back("tokenizer.ggml.add_eos_token", *add_eos);
  if (spm) {
    // SentencePiece prepends "▁" through a Prepend normalizer or a Metaspace pre-tokenizer.
    const std::string norm = tj.contains("normalizer") ? tj["normalizer"].dump() : "";
    const std::string pt = tj.contains("pre_tokenizer") ? tj["pre_tokenizer"].dump() : "";
    const bool prefix = norm.find("\"Prepend\"") != std::string::npos ||
                        (pt.find("\"Metaspace\"") != std::string::npos &&
                         pt.find("\"never\"") == std::string::npos);
    out.kv.emplace_back("tokenizer.ggml.add_space_prefix", prefix);
  }

  std::string chat_template;
  if (tc.contains("chat_template") && tc["chat_template"].is_string()) {
    chat_template = tc["chat_template"].get<std::string>();
  } else if (tc.contains("chat_template") && tc["chat_template"].is_array()) {
    for (const auto& t : tc["chat_template"])
      if (t.is_object() && t.value("name", "") == "default" && t.contains("template"))
        chat_template = t["template"].get<std::string>();
  } else if (fs::exists(dir + "/chat_template.jinja")) {
    chat_template = read_text_file(dir + "/chat_template.jinja");
  }
  if (!chat_template.empty()) out.kv.emplace_back("tokenizer.chat_template", chat_template);
  return out;
}

}  // namespace ftune
