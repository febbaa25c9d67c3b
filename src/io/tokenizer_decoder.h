// Decoders of tokenizer.json ("decoder"): ByteLevel, Metaspace, Replace, ByteFallback, Fuse,
// Strip and Sequence (HF tokenizers/src/decoders). Each rewrites the list of token strings
// (HF Decoder::decode_chain); the final text is their concatenation.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "io/tokenizer_json.h"

namespace ftune::tok {

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual void decode_chain(std::vector<std::string>& tokens) const = 0;
};

// nullptr for a null decoder; throws naming the file for an unsupported type.
std::unique_ptr<Decoder> parse_decoder(const json& j, const std::string& where);

}  // namespace ftune::tok
