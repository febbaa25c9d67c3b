// Chat templates: renders a conversation into text exactly as HF's apply_chat_template does,
// by running the model's Jinja chat_template through ftune's interpreter (data/jinja/), split
// into segments flagged trainable (assistant replies and their end-of-turn marker) or not, so
// response-only masking knows the assistant spans.
//
// Templates: model.chat_template "auto" takes tokenizer_config.json's chat_template (or the
// chat_template.jinja beside it) -- any valid template renders. Five presets (llama-3, llama-2,
// mistral, chatml, alpaca) embed the official template strings (tests/fixtures/chat_templates/).
// tests/py/test_jinja_parity.py renders many conversations through ~20 official templates
// with jinja2 and requires byte-identical text.
//
// Trainable spans come from the rendering itself, not from per-template rules. For assistant
// message i:
//   P = render(messages[:i], add_generation_prompt=True), Q = render(messages[:i+1]).
//   When Q (minus trailing whitespace) is a prefix of the full rendering F, the span is
//   F[lcp(P, Q) : len(rstrip(Q))): what the message adds after the generation prompt, up to its
//   end-of-turn marker; trailing whitespace (the newline between turns) is not trained.
//   Otherwise the template renders the turn differently once later messages follow (Qwen3
//   drops <think> blocks of earlier turns; Mistral-Nemo moves the system prompt into the last
//   user turn; Phi-3.5 appends eos only at the very end). Then the span is located in F by
//   perturbation: rendering F with the message's content extended by a private-use character
//   at its end (and at its start) shows where that content sits in F; the span is that content
//   plus, after it, the part of the closing text the last-message form has (e.g. <|im_end|>),
//   and, before it, the last-message form's lead-in (e.g. llama-2's leading space) when F has
//   it. So an earlier Qwen3 turn trains "answer<|im_end|>" and the last one
//   "<think>..</think>\n\nanswer<|im_end|>", each as the template renders it in F.
// Where the template marks {% generation %}, tests check these spans agree with the markers.
#pragma once
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ftune {

namespace jinja {
struct ParsedTemplate;
}

// How a message's content reaches the template. An assistant turn that only calls tools is
// written with "content": null or without the key; templates test for both (`content is none`,
// `content is defined`), so the difference is kept.
enum class ContentKind { text, null, absent };

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", "tool", ... (passed to the template as is)
  std::string content;  // meaningful when content_kind is text
  // Other keys of the message (tool_calls, tool_call_id, name, reasoning_content, ...), passed
  // to the template unchanged.
  nlohmann::ordered_json extra = nlohmann::ordered_json::object();
  ContentKind content_kind = ContentKind::text;
};
using Conversation = std::vector<ChatMessage>;

// apply_chat_template's per-conversation arguments besides the messages: `tools` (a list of
// tool schemas) and `documents`; null = not given, which the template sees as none.
struct ChatArgs {
  nlohmann::ordered_json tools = nullptr;
  nlohmann::ordered_json documents = nullptr;
};

// A piece of rendered text. trainable = part of an assistant reply the model should learn
// (content + end-of-turn marker); everything else (headers, prompts, system text) is not.
struct TextSegment {
  std::string text;
  bool trainable = false;
};

struct ChatTemplate {
  std::string name;       // preset name, or where an "auto" template came from
  std::string source;     // Jinja source
  std::string bos_token;  // what {{ bos_token }} renders ("" when the config has none)
  std::string eos_token;
  // Further variables the template sees (other special tokens of tokenizer_config.json such
  // as pad_token/unk_token; options such as enable_thinking).
  nlohmann::ordered_json variables = nlohmann::ordered_json::object();
  // Date strftime_now() formats, "YYYY-MM-DD"; "" = today (local time), as transformers does.
  std::string date;
  // Special-token strings a preset writes; the data pipeline checks each is one token of the
  // tokenizer. Empty for a model's own template.
  std::vector<std::string> preset_special_tokens;
  std::shared_ptr<const jinja::ParsedTemplate> parsed;  // set by make_chat_template

  std::vector<std::string> special_tokens() const { return preset_special_tokens; }
  // Set when the source is one of the presets' (also when "auto" found that source): these
  // old templates render no tool calls, reasoning or tools, and the non-ChatML/Llama-3 ones no
  // role other than system/user/assistant; render_chat_text refuses such input instead of
  // letting the template drop it or write "None" (see check_preset_can_render).
  bool is_preset = false;
  bool preset_writes_any_role = false;  // llama-3, chatml: the role name goes into the header
  // Everything that changes the rendering (for token-cache keys).
  std::string fingerprint() const;
};

// Parses `source`; a syntax error throws ftune::Error naming `name`, the line and column.
ChatTemplate make_chat_template(std::string name, std::string source);

// Preset names, in table order: llama-3, llama-2, mistral, chatml, alpaca.
std::vector<std::string> chat_template_names();

// The preset `name` with its official bos/eos strings. Throws ftune::Error listing the known
// names when `name` is unknown ("Llama_3" and "llama3" name "llama-3").
ChatTemplate chat_template_by_name(std::string_view name);

// Resolves model.chat_template: a preset name, or "auto" = tokenizer_config.json's
// chat_template (a string, or the entry named "default" of a list), else chat_template.jinja
// next to it. bos_token/eos_token (and the other *_token strings) come from
// tokenizer_config.json when it has them (string or {"content": ...}; null renders "").
// `tokenizer_config_path` may be empty when `spec` is a name. Errors name the file.
ChatTemplate resolve_chat_template(std::string_view spec, const std::string& tokenizer_config_path);

// The rendered text of `conv` (apply_chat_template(conv, tools=args.tools,
// documents=args.documents, tokenize=False, add_generation_prompt)). Template errors
// (raise_exception, undefined attributes, type errors) throw ftune::Error
// "chat template <name>: <message>". `generation_spans`, when given, receives the byte spans
// {% generation %} blocks produced. A preset given what it cannot render throws (below).
std::string render_chat_text(const ChatTemplate& tmpl, const Conversation& conv,
                             bool add_generation_prompt,
                             std::vector<std::pair<size_t, size_t>>* generation_spans = nullptr,
                             const ChatArgs& args = {});

// For a preset template: throws "chat template <name> (built-in preset) cannot render <what>
// (messages[i])" for a role it cannot write, tool_calls, reasoning_content/thinking, a content
// that is not a string, or tools/documents. Other templates: no check.
void check_preset_can_render(const ChatTemplate& tmpl, const Conversation& conv,
                             const ChatArgs& args);

// Renders `conv` (add_generation_prompt=false) as segments; with find_spans, assistant spans
// are trainable (see the top of this file), else everything is one untrained segment.
// Adjacent segments with the same flag are merged. An assistant turn that only calls tools
// is trained like any other: its span is the tool-call text the template writes.
std::vector<TextSegment> render_chat(const ChatTemplate& tmpl, const Conversation& conv,
                                     bool find_spans = true, const ChatArgs& args = {});

// Concatenated text of the segments.
std::string join_segments(const std::vector<TextSegment>& segments);

// Python str.strip(): removes leading and trailing Unicode whitespace (str.isspace).
std::string python_strip(std::string_view s);

}  // namespace ftune
