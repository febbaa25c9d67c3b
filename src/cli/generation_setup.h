// What `ftune generate` and the training samples (train.sample_prompts) need around the
// Generator: the tokens that end a reply, and prompts turned into token ids (raw text, or a
// conversation rendered by a chat template with its generation prompt).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "data/chat_template.h"
#include "io/tokenizer.h"
#include "model/model_spec.h"

namespace ftune {

// The ids that end a reply, deduplicated in this order: generation_config.json's eos_token_id
// (an int or a list; the file is optional) in model_dir, config.json's eos_token_id (the spec),
// tokenizer_config.json's eos_token (in tokenizer_dir) or else the tokenizer's own EOS, the
// chat template's end-of-turn token (when given), and <|eot_id|>, <|im_end|> and <|eom_id|>
// when the vocabulary has them. Errors name the file and key.
std::vector<int32_t> stop_token_ids(const std::string& model_dir, const std::string& tokenizer_dir,
                                    const ModelSpec& spec, const Tokenizer& tok,
                                    const ChatTemplate* tmpl);

// A chat template for generation: `name` (a table name, or auto = the template of
// tokenizer_dir/tokenizer_config.json), whose special tokens must each be one token of `tok`.
ChatTemplate generation_chat_template(const std::string& name, const std::string& tokenizer_dir,
                                      const Tokenizer& tok);

// Ids of `conv` rendered with the generation prompt (special tokens written by the template are
// recognised; no post-processor BOS, as apply_chat_template(tokenize=True) does).
std::vector<int32_t> chat_prompt_ids(const Tokenizer& tok, const ChatTemplate& tmpl,
                                     const Conversation& conv);

// Ids of raw prompt text, with the tokenizer's special tokens (BOS) as tokenizer(text) adds them.
std::vector<int32_t> raw_prompt_ids(const Tokenizer& tok, const std::string& text);

}  // namespace ftune
