// Renders conversations with ftune's chat templates for tests/py/test_chat_templates.py and
// tests/py/test_jinja_parity.py.
// Input (file named by argv[1]): {"cases": [{"template": <preset name or Jinja source>,
//   "bos_token": ..., "eos_token": ..., "variables": {...}, "date": "YYYY-MM-DD",
//   "add_generation_prompt": bool, "spans": bool (default true),
//   "messages": [{"role", "content", ...other keys}, ...] or "record": a dataset record
//   (messages/sharegpt format, converted as the data pipeline converts it)}, ...]}.
// A case with "tokenizer": <tokenizer.json path> is also tokenized with labels the way the
// data pipeline does it (render_example + tokenize_rendered, response-only masking).
// Output (stdout): a JSON array with, per case, {"name", "text", "segments": [[text,
// trainable], ...] (when spans), "generation": [[begin, end], ...] byte spans of
// {% generation %} blocks, and with a tokenizer "ids", "labels"} or {"error": message}.
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/chat_template.h"
#include "data/data_files.h"
#include "data/dataset_format.h"
#include "data/tokenize_example.h"
#include "data/tokenizer_encoder.h"
#include "io/tokenizer.h"

using nlohmann::ordered_json;

namespace {

ftune::ChatTemplate template_for(const ordered_json& c) {
  const std::string spec = c.at("template").get<std::string>();
  bool is_name = false;
  for (const auto& n : ftune::chat_template_names()) is_name |= (n == spec);
  ftune::ChatTemplate t = is_name ? ftune::chat_template_by_name(spec)
                                  : ftune::make_chat_template("source", spec);
  if (c.contains("bos_token")) t.bos_token = c["bos_token"].is_null() ? "" : c["bos_token"].get<std::string>();
  if (c.contains("eos_token")) t.eos_token = c["eos_token"].is_null() ? "" : c["eos_token"].get<std::string>();
  if (c.contains("variables")) t.variables = c["variables"];
  if (c.contains("date")) t.date = c["date"].get<std::string>();
  return t;
}

ftune::Conversation conversation_of(const ordered_json& c) {
  ftune::Conversation conv;
  for (const ordered_json& m : c.at("messages")) {
    ftune::ChatMessage msg;
    msg.role = m.at("role").get<std::string>();
    msg.content = m.at("content").get<std::string>();
    for (auto it = m.begin(); it != m.end(); ++it) {
      if (it.key() != "role" && it.key() != "content") msg.extra[it.key()] = it.value();
    }
    conv.push_back(std::move(msg));
  }
  return conv;
}

// A case with "record" (a dataset record of the messages or sharegpt format) goes through
// the data pipeline's conversion, so its tools and message keys reach the template as in
// training; "messages" are taken as they are.
ftune::SourceExample source_of(const ordered_json& c) {
  ftune::SourceExample src;
  src.is_conversation = true;
  if (c.contains("record")) {
    const ftune::DatasetRecord rec{c["record"], "record"};
    return ftune::convert_record(rec, ftune::detect_format(rec));
  }
  src.conversation = conversation_of(c);
  return src;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: render_chat <cases.json>\n");
    return 2;
  }
  try {
    const ordered_json in = ordered_json::parse(ftune::read_file_bytes(argv[1]));
    ordered_json out = ordered_json::array();
    std::map<std::string, std::unique_ptr<ftune::Tokenizer>> tokenizers;
    for (const ordered_json& c : in.at("cases")) {
      ordered_json r;
      try {
        const ftune::ChatTemplate t = template_for(c);
        const ftune::SourceExample src = source_of(c);
        const ftune::Conversation& conv = src.conversation;
        const bool gen = c.value("add_generation_prompt", false);
        std::vector<std::pair<size_t, size_t>> spans;
        r["name"] = t.name;
        r["text"] = ftune::render_chat_text(t, conv, gen, &spans, src.chat_args);
        r["generation"] = ordered_json::array();
        for (const auto& [b, e] : spans) r["generation"].push_back({b, e});
        if (!gen && c.value("spans", true)) {
          const auto segs = ftune::render_chat(t, conv, true, src.chat_args);
          r["segments"] = ordered_json::array();
          for (const auto& s : segs) r["segments"].push_back(ordered_json::array({s.text, s.trainable}));
        }
        if (c.contains("tokenizer")) {
          const std::string path = c["tokenizer"].get<std::string>();
          auto& tok = tokenizers[path];
          if (!tok) tok = std::make_unique<ftune::Tokenizer>(ftune::Tokenizer::from_file(path));
          const ftune::TokenizerEncoder enc(*tok, "");
          const auto ex = ftune::tokenize_rendered(enc, ftune::render_example(src, &t, true),
                                                   std::nullopt, std::nullopt);
          r["ids"] = ex.ids;
          r["labels"] = ex.labels;
        }
      } catch (const ftune::Error& e) {
        r = ordered_json{{"error", e.what()}};
      }
      out.push_back(r);
    }
    std::cout << out.dump(-1, ' ', false, ordered_json::error_handler_t::replace) << "\n";
  } catch (const std::exception& e) {
    std::fprintf(stderr, "render_chat: %s\n", e.what());
    return 1;
  }
  return 0;
}
