// Chat templates: renders a conversation into text exactly as the model's Jinja chat_template
// (HF tokenizer_config.json, apply_chat_template(..., add_generation_prompt=False)) would, split
// into segments flagged trainable (assistant replies and their end-of-turn token) or not, so
// response-only masking knows the assistant spans.
//
// The templates live in one table (chat_template.cpp, kChatTemplates); each entry is written
// against the official Jinja source it reproduces (quoted in tests/py/test_chat_templates.py,
// which renders ~50 conversations with jinja2 and requires byte-identical text).
#pragma once
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ftune {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant" (other roles render where the template does)
  std::string content;
};
using Conversation = std::vector<ChatMessage>;

// A piece of rendered text. trainable = part of an assistant reply the model should learn
// (content + end-of-turn token); everything else (headers, prompts, system text) is not.
struct TextSegment {
  std::string text;
  bool trainable = false;
};

enum class ChatTemplateKind { llama3, llama2, mistral, chatml, alpaca };

// A resolved template: which family plus the token strings the Jinja source reads from
// tokenizer_config.json (bos_token, eos_token) and, for chatml, the default system message
// inserted when the conversation has none (Qwen2: "You are a helpful assistant.").
struct ChatTemplate {
  ChatTemplateKind kind = ChatTemplateKind::llama3;
  std::string name;       // table name, e.g. "llama-3"
  std::string bos_token;  // as the template's {{ bos_token }} renders it ("" when none)
  std::string eos_token;
  std::optional<std::string> default_system;  // chatml only

  // Special-token strings the template writes into the text; each must be a single token of
  // the tokenizer the text is fed to (checked by the data pipeline).
  std::vector<std::string> special_tokens() const;
  // The token that closes an assistant turn and is trained with it (<|eot_id|>, </s>,
  // <|im_end|>, the eos token for alpaca).
  std::string end_of_turn() const;
};

// Names of the table entries, in table order: llama-3, llama-2, mistral, chatml, alpaca.
std::vector<std::string> chat_template_names();

// The table entry `name` with its default bos/eos/system strings. Throws ftune::Error listing
// the known names when `name` is unknown.
ChatTemplate chat_template_by_name(std::string_view name);

// Recognises a Jinja chat_template string by distinctive markers (<|start_header_id|>,
// <<SYS>>, [INST], <|im_start|>, ### Instruction:). Returns nullopt when nothing matches.
// Throws for sources that match a family but render differently from our entry (Llama-3.1
// date/tool headers, Qwen3 <think> blocks), naming what to set instead.
std::optional<ChatTemplate> detect_chat_template(std::string_view jinja_source);

// Resolves model.chat_template: a table name, or "auto" = detect from tokenizer_config.json's
// chat_template (or a chat_template.jinja next to it). bos_token/eos_token are taken from
// tokenizer_config.json when it has them (string or {"content": ...}). `tokenizer_config_path`
// may be empty when `spec` is a name. Errors name the file and what to set.
ChatTemplate resolve_chat_template(std::string_view spec, const std::string& tokenizer_config_path);

// Renders `conv`. Adjacent segments with the same flag are merged. Throws ftune::Error where
// the Jinja template raises (e.g. llama-2/mistral roles that do not alternate
// user/assistant), with the template name and message index. add_generation_prompt appends
// what the template's `{% if add_generation_prompt %}` block writes (the assistant header that
// the model continues from, for generation; a non-trainable segment): llama-3
// '<|start_header_id|>assistant<|end_header_id|>\n\n', chatml '<|im_start|>assistant\n',
// alpaca '\n\n### Response:\n'; llama-2 and mistral have no such block (their prompt ends
// with ' [/INST]').
std::vector<TextSegment> render_chat(const ChatTemplate& tmpl, const Conversation& conv,
                                     bool add_generation_prompt = false);

// Concatenated text of the segments.
std::string join_segments(const std::vector<TextSegment>& segments);

// Python str.strip(): removes leading and trailing Unicode whitespace (str.isspace) from UTF-8
// text. Jinja's |trim and .strip() (used by the llama-3 and llama-2 templates) are exactly this.
std::string python_strip(std::string_view s);

}  // namespace ftune
