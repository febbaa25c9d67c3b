// Renders conversations with ftune's chat templates for tests/py/test_chat_templates.py.
// Input (file named by argv[1]): {"cases": [{"template": <table name or Jinja source>,
//   "bos_token": ..., "eos_token": ..., "messages": [{"role", "content"}, ...],
//   "add_generation_prompt": false (optional)}, ...]}.
// A Jinja source goes through detect_chat_template, so the test also covers detection.
// A case with "tokenizer": <tokenizer.json path> is also tokenized with labels the way the
// data pipeline does it (render_example + tokenize_rendered, response-only masking).
// Output (stdout): a JSON array with, per case, {"name", "text", "segments": [[text,
// trainable], ...], and with a tokenizer "ids", "labels"} or {"error": message}.
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/chat_template.h"
#include "data/data_files.h"
#include "data/tokenize_example.h"
#include "data/tokenizer_encoder.h"
#include "io/tokenizer.h"

using nlohmann::json;

namespace {

ftune::ChatTemplate template_for(const json& c) {
  const std::string spec = c.at("template").get<std::string>();
  ftune::ChatTemplate t;
  bool is_name = false;
  for (const auto& n : ftune::chat_template_names()) is_name |= (n == spec);
  if (is_name) {
    t = ftune::chat_template_by_name(spec);
  } else {
    auto found = ftune::detect_chat_template(spec);
    if (!found) ftune::fail("template source not recognised");
    t = *found;
  }
  if (c.contains("bos_token")) t.bos_token = c["bos_token"].is_null() ? "" : c["bos_token"].get<std::string>();
  if (c.contains("eos_token")) t.eos_token = c["eos_token"].is_null() ? "" : c["eos_token"].get<std::string>();
  return t;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: render_chat <cases.json>\n");
    return 2;
  }
  try {
    const json in = json::parse(ftune::read_file_bytes(argv[1]));
    json out = json::array();
    std::map<std::string, std::unique_ptr<ftune::Tokenizer>> tokenizers;
    for (const json& c : in.at("cases")) {
      json r;
      try {
        const ftune::ChatTemplate t = template_for(c);
        ftune::Conversation conv;
        for (const json& m : c.at("messages")) {
          conv.push_back({m.at("role").get<std::string>(), m.at("content").get<std::string>()});
        }
        const auto segs =
            ftune::render_chat(t, conv, c.value("add_generation_prompt", false));
        r["name"] = t.name;
        r["text"] = ftune::join_segments(segs);
        r["segments"] = json::array();
        for (const auto& s : segs) r["segments"].push_back(json::array({s.text, s.trainable}));
        if (c.contains("tokenizer")) {
          const std::string path = c["tokenizer"].get<std::string>();
          auto& tok = tokenizers[path];
          if (!tok) tok = std::make_unique<ftune::Tokenizer>(ftune::Tokenizer::from_file(path));
          const ftune::TokenizerEncoder enc(*tok, "");
          ftune::SourceExample src;
          src.is_conversation = true;
          src.conversation = conv;
          const auto ex = ftune::tokenize_rendered(enc, ftune::render_example(src, &t, true),
                                                   std::nullopt, std::nullopt);
          r["ids"] = ex.ids;
          r["labels"] = ex.labels;
        }
      } catch (const ftune::Error& e) {
        r = json{{"error", e.what()}};
      }
      out.push_back(r);
    }
    std::cout << out.dump() << "\n";
  } catch (const std::exception& e) {
    std::fprintf(stderr, "render_chat: %s\n", e.what());
    return 1;
  }
  return 0;
}
