// Tokenizer loaded from an HF tokenizer.json (FORMATS.md §5), no Python at run time.
// Supports byte-level BPE (Llama-3, Qwen2: Split-regex + ByteLevel pre-tokenizers) and
// SentencePiece-style BPE (Llama-2, Mistral: Prepend/Replace normalizer or Metaspace,
// byte_fallback, unk). Added/special tokens are split out before pre-tokenization.
// Ids match HF `tokenizers` 0.23 (tests/py/test_tokenizer_parity.py). Components:
//   model          BPE (merges as "a b" or ["a","b"], ignore_merges, byte_fallback, unk/fuse_unk)
//   normalizer     Sequence, Prepend, Replace, NFC
//   pre_tokenizer  Sequence, Split, ByteLevel, Metaspace, Digits
//   post_processor TemplateProcessing, ByteLevel, BertProcessing, RobertaProcessing, Sequence
//   decoder        Sequence, ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip
// Any other type is an error naming it and the file. The file's "truncation" and "padding"
// are not applied. Regex classes use the system PCRE2's Unicode tables (see tokenizer_regex.h).
// All const methods may be called from several threads at once.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ftune {

class Tokenizer {
 public:
  // Throws ftune::Error naming the file for a missing file, bad JSON or an unsupported model,
  // normalizer, pre-tokenizer or decoder.
  static Tokenizer from_file(const std::string& tokenizer_json_path);
  static Tokenizer from_json(const std::string& json_text, const std::string& origin = "<string>");

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Ids for `text`. add_special_tokens applies the post-processor (e.g. BOS), as HF
  // `tokenizer.encode(text, add_special_tokens=...)` does. Special tokens written inside the
  // text (e.g. "<|eot_id|>") are recognised and become their ids. Throws for invalid UTF-8.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = false) const;
  // Text for ids, as HF `decode(ids, skip_special_tokens=...)`. Throws for an id outside
  // [0, vocab_size()).
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  // Id of a token string (vocab or added token), nullopt when absent.
  std::optional<int32_t> token_to_id(std::string_view token) const;
  // Token string of an id; throws when out of range.
  std::string id_to_token(int32_t id) const;
  // Largest id + 1 over vocab and added tokens.
  int64_t vocab_size() const;
  bool is_special(int32_t id) const;

  // BOS/EOS the post-processor adds (if any), as ids.
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ftune
