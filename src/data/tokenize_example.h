// From a SourceExample to token ids with labels (response-only masking).
//
// render_example turns an example into text segments flagged trainable: conversations through
// the chat template (assistant content + end-of-turn token trainable), alpaca and
// prompt/completion as prompt (not trained) + response (trained), text as one trained segment.
// train_on_responses_only = false makes every segment trainable (text always is).
//
// tokenize_rendered then tokenizes. Choice (documented here because it decides the ids): the
// ids are exactly encode(whole rendered text) without added special tokens -- what HF's
// apply_chat_template(tokenize=True) produces -- never a concatenation of per-segment
// encodings, because per-segment encodings can differ at segment boundaries (a SentencePiece
// normalizer prepends "▁" to every call; BPE may merge across a boundary). Labels come from
// where each segment boundary falls in those ids:
//   * fast path: when concat(encode(segment)) equals encode(text) (the usual case for
//     byte-level BPE, whose segment boundaries sit next to special tokens or newlines, where
//     the pre-tokenizer splits anyway), boundaries are the per-segment token counts;
//   * otherwise (SentencePiece-style tokenizers prepend "▁" to every encode call; BPE merges
//     can cross a boundary), a boundary is placed at a "clean" text position p, one where
//     encode(text[0:p]) is a prefix of the ids (so ids[0:k] cover exactly text[0:p]): b itself
//     when clean, else the nearest clean position on the trainable side's outer edge (the
//     largest p <= b for untrained->trained, the smallest p >= b for trained->untrained). So
//     a token that straddles a boundary is trained: it carries characters of the reply.
//     tests/py/test_chat_templates.py checks the result against HF tokenizers' offsets.
// Conversations get no extra BOS (templates write it as text, e.g. <|begin_of_text|>);
// alpaca/text/prompt_completion get the tokenizer's post-processor BOS, if any, in front and
// EOS appended (trained when the last segment is).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "data/chat_template.h"
#include "data/dataset_format.h"

namespace ftune {

// The part of a tokenizer the data layer uses. TokenizerEncoder (tokenizer_encoder.h) adapts
// ftune::Tokenizer; tests use small hand-written encoders.
class TextEncoder {
 public:
  virtual ~TextEncoder() = default;
  // Ids of `text` with no BOS/EOS added; special tokens written in the text become their ids.
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  virtual std::optional<int32_t> token_to_id(std::string_view token) const = 0;
  // BOS the tokenizer's post-processor adds to a plain encode (Llama: <s>, <|begin_of_text|>).
  virtual std::optional<int32_t> bos_id() const = 0;
  // EOS the post-processor adds, if any (most add none: the pipeline then takes eos_token from
  // tokenizer_config.json).
  virtual std::optional<int32_t> eos_id() const = 0;
  // Bytes that identify the tokenizer for the token cache key (e.g. tokenizer.json's bytes).
  virtual std::string fingerprint() const = 0;
};

struct RenderedExample {
  std::vector<TextSegment> segments;
  bool add_bos = false;  // prepend the post-processor BOS (non-conversation formats)
  bool add_eos = false;  // append EOS (non-conversation formats)
  std::string origin;
};

// `tmpl` is required for conversations (may be null otherwise).
RenderedExample render_example(const SourceExample& ex, const ChatTemplate* tmpl,
                               bool train_on_responses_only);

struct TokenizedExample {
  std::vector<int32_t> ids;
  std::vector<int32_t> labels;  // ids[i] or kIgnoreIndex (-100); unshifted, HF-style
  bool truncated = false;       // cut to max_seq_length
  int64_t size() const { return static_cast<int64_t>(ids.size()); }
  // Tokens that are targets of a prediction: labels[i] != -100 for i >= 1 (position 0 is never
  // predicted). This is what a batch's count_trained_tokens counts for the example.
  int64_t trained_tokens() const;
};

// bos/eos: ids to add when the example asks for them (nullopt = none to add).
TokenizedExample tokenize_rendered(const TextEncoder& enc, const RenderedExample& ex,
                                   std::optional<int32_t> bos, std::optional<int32_t> eos);

// Token index at which each segment starts in encode(join(segments)) (size = segments + 1, the
// last entry = number of tokens), by the rule above. Exposed for tests.
std::vector<size_t> segment_token_starts(const TextEncoder& enc,
                                         const std::vector<TextSegment>& segments,
                                         const std::vector<int32_t>& ids);

}  // namespace ftune
