// The tokenizer.* keys of a GGUF file, made from an HF tokenizer folder the way llama.cpp's
// convert_hf_to_gguf.py does (gguf-py SpecialVocab, get_vocab_base, LlamaHfVocab):
//   tokenizer.ggml.model   "gpt2" for byte-level BPE (Llama-3, Qwen2), "llama" for
//                          SentencePiece-style BPE with byte fallback (Llama-2, Mistral)
//   tokenizer.ggml.pre     the pre-tokenizer, recognised from the Split regex: "llama-bpe",
//                          "qwen2", else "default" (gpt2 only)
//   tokens / token_type    one entry per id up to config.json's vocab_size; ids without a token
//                          become "[PAD<i>]"; types NORMAL 1, UNKNOWN 2, CONTROL 3 (special added
//                          tokens), USER_DEFINED 4, UNUSED 5, BYTE 6 (<0xXX>)
//   scores                 "llama" only: -id for ordinary tokens (tokenizer.json keeps no
//                          SentencePiece scores; merge order follows the ids), 0 otherwise
//   merges                 "gpt2" only, "a b"
//   bos/eos/padding/unknown_token_id from tokenizer_config.json (else config.json's ids),
//   add_bos_token / add_eos_token (tokenizer_config.json, else the post-processor's template),
//   add_space_prefix ("llama"), and tokenizer.chat_template (tokenizer_config.json or
//   chat_template.jinja).
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "io/gguf_writer.h"
#include "io/hf_config.h"

namespace ftune {

struct GgufTokenizerKeys {
  std::vector<std::pair<std::string, GgufValue>> kv;  // in the order convert_hf_to_gguf writes
  std::vector<std::string> warnings;                  // e.g. an unrecognised pre-tokenizer
};

// `dir` holds tokenizer.json (required) and optionally tokenizer_config.json and
// chat_template.jinja; `cfg` gives vocab_size and fallback special-token ids.
GgufTokenizerKeys gguf_tokenizer_keys(const std::string& dir, const HFModelConfig& cfg);

}  // namespace ftune
