// Normalizers of tokenizer.json ("normalizer"): Sequence, Prepend, Replace, NFC (HF
// tokenizers/src/normalizers). Applied to each piece of text left between added tokens.
#pragma once
#include <memory>
#include <string>

#include "io/tokenizer_json.h"

namespace ftune::tok {

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual void normalize(std::string& text) const = 0;
};

// nullptr for a null normalizer; throws naming the file for an unsupported type.
std::unique_ptr<Normalizer> parse_normalizer(const json& j, const std::string& where);

}  // namespace ftune::tok
