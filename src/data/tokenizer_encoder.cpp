// TokenizerEncoder support and prepare_data over ftune::Tokenizer (see tokenizer_encoder.h).
#include "data/tokenizer_encoder.h"

#include <filesystem>

#include "data/data_files.h"
#include "data/prepare_data.h"

namespace ftune {

std::string tokenizer_fingerprint(const Tokenizer& tok, const std::string& tokenizer_dir) {
  if (!tokenizer_dir.empty()) {
    const auto p = std::filesystem::path(tokenizer_dir) / "tokenizer.json";
    std::error_code ec;
    if (std::filesystem::is_regular_file(p, ec)) return read_file_bytes(p.string());
  }
  std::string fp = "vocab:";
  for (int64_t id = 0; id < tok.vocab_size(); ++id) {
    fp += tok.id_to_token(static_cast<int32_t>(id));
    fp += '\0';
  }
  fp += std::to_string(tok.bos_id().value_or(-1)) + "," + std::to_string(tok.eos_id().value_or(-1));
  return fp;
}

PreparedData prepare_data(const DataOptions& opts, const Tokenizer& tok) {
  const TokenizerEncoder enc(tok, tokenizer_fingerprint(tok, opts.tokenizer_dir));
  return prepare_data(opts, enc);
}

}  // namespace ftune
