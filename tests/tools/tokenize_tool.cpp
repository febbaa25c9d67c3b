// Drives ftune::Tokenizer for tests/py/test_tokenizer_parity.py: reads a tokenizer.json and a
// JSON list of strings, writes one JSON object per string with
//   ids          encode(s, add_special_tokens=false)
//   ids_special  encode(s, add_special_tokens=true)
//   decode_plain decode(ids, skip_special_tokens=false)
//   decode       decode(ids_special, skip_special_tokens=false)
//   decode_skip  decode(ids_special, skip_special_tokens=true)
// or {"error": message} when encoding fails. Usage: tokenize_tool TOKENIZER_JSON STRINGS_JSON
// [OUT_JSON] (stdout without OUT_JSON). Exit status 1 when the tokenizer cannot be loaded.
#include <fstream>
#include <iostream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/tokenizer.h"

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4) {
    std::cerr << "usage: tokenize_tool TOKENIZER_JSON STRINGS_JSON [OUT_JSON]\n";
    return 2;
  }
  try {
    const ftune::Tokenizer tok = ftune::Tokenizer::from_file(argv[1]);
    std::ifstream in(argv[2], std::ios::binary);
    FTUNE_CHECK(in.good(), "tokenize_tool: cannot open '{}'", argv[2]);
    const nlohmann::json strings = nlohmann::json::parse(in);
    FTUNE_CHECK(strings.is_array(), "tokenize_tool: '{}' must hold a JSON list", argv[2]);
    nlohmann::json out = nlohmann::json::array();
    for (const auto& s : strings) {
      nlohmann::json r;
      try {
        const std::string text = s.get<std::string>();
        const auto ids = tok.encode(text, false);
        const auto ids_special = tok.encode(text, true);
        r["ids"] = ids;
        r["ids_special"] = ids_special;
        r["decode_plain"] = tok.decode(ids, false);
        r["decode"] = tok.decode(ids_special, false);
        r["decode_skip"] = tok.decode(ids_special, true);
      } catch (const std::exception& e) {
        r = {{"error", e.what()}};
      }
      out.push_back(std::move(r));
    }
    nlohmann::json meta = {{"vocab_size", tok.vocab_size()},
                           {"bos_id", tok.bos_id() ? nlohmann::json(*tok.bos_id()) : nullptr},
                           {"eos_id", tok.eos_id() ? nlohmann::json(*tok.eos_id()) : nullptr}};
    const std::string text =
        nlohmann::json{{"meta", meta}, {"results", out}}.dump(
            -1, ' ', false, nlohmann::json::error_handler_t::replace);
    if (argc == 4) {
      std::ofstream o(argv[3], std::ios::binary);
      FTUNE_CHECK(o.good(), "tokenize_tool: cannot write '{}'", argv[3]);
      o << text;
    } else {
      std::cout << text;
    }
  } catch (const std::exception& e) {
    std::cerr << "tokenize_tool: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
