// Post-processors of tokenizer.json ("post_processor"): TemplateProcessing (single template),
// ByteLevel (offsets only: ids unchanged), BertProcessing, RobertaProcessing and Sequence
// (HF tokenizers/src/processors). Applied to a single sequence when add_special_tokens is true.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io/tokenizer_json.h"

namespace ftune::tok {

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // Adds the special tokens around a single sequence's ids.
  virtual void process(std::vector<int32_t>& ids) const = 0;
  // Special-token ids added before / after the sequence (the first of each), if any.
  virtual std::optional<int32_t> bos() const { return std::nullopt; }
  virtual std::optional<int32_t> eos() const { return std::nullopt; }
};

// nullptr for a null post_processor; throws naming the file for an unsupported type.
std::unique_ptr<PostProcessor> parse_post_processor(const json& j, const std::string& where);

}  // namespace ftune::tok
