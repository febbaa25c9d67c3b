// Adapts ftune::Tokenizer (io/tokenizer.h) to the data layer's TextEncoder. Kept in its own
// file so code that only needs the template/format/packing logic does not link the tokenizer.
#pragma once
#include <string>

#include "data/tokenize_example.h"
#include "io/tokenizer.h"

namespace ftune {

class TokenizerEncoder : public TextEncoder {
 public:
  // `fingerprint`: bytes identifying the tokenizer for the token cache key (tokenizer.json's
  // bytes; see tokenizer_fingerprint).
  TokenizerEncoder(const Tokenizer& tok, std::string fingerprint)
      : tok_(tok), fingerprint_(std::move(fingerprint)) {}

  std::vector<int32_t> encode(std::string_view text) const override {
    return tok_.encode(text, /*add_special_tokens=*/false);
  }
  std::optional<int32_t> token_to_id(std::string_view token) const override {
    return tok_.token_to_id(token);
  }
  std::optional<int32_t> bos_id() const override { return tok_.bos_id(); }
  std::optional<int32_t> eos_id() const override { return tok_.eos_id(); }
  std::string fingerprint() const override { return fingerprint_; }

 private:
  const Tokenizer& tok_;
  std::string fingerprint_;
};

// <tokenizer_dir>/tokenizer.json's bytes when it exists; otherwise every token string of the
// vocabulary in id order plus the BOS/EOS ids.
std::string tokenizer_fingerprint(const Tokenizer& tok, const std::string& tokenizer_dir);

}  // namespace ftune
