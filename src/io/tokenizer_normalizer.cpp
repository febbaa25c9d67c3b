// Normalizers (see tokenizer_normalizer.h). Semantics follow HF tokenizers/src/normalizers:
// Prepend adds its string to non-empty text only; Replace substitutes every match.
#include "io/tokenizer_normalizer.h"

#include <vector>

#include "core/error.h"
#include "io/tokenizer_nfc.h"
#include "io/tokenizer_regex.h"

namespace ftune::tok {

namespace {

class SequenceNormalizer final : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts)
      : parts_(std::move(parts)) {}
  void normalize(std::string& text) const override {
    for (const auto& p : parts_) p->normalize(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

class PrependNormalizer final : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prepend) : prepend_(std::move(prepend)) {}
  void normalize(std::string& text) const override {
    if (!text.empty()) text.insert(0, prepend_);
  }

 private:
  std::string prepend_;
};

class ReplaceNormalizer final : public Normalizer {
 public:
  ReplaceNormalizer(TextPattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void normalize(std::string& text) const override { text = pattern_.replace_all(text, content_); }

 private:
  TextPattern pattern_;
  std::string content_;
};

class NfcNormalizer final : public Normalizer {
 public:
  void normalize(std::string& text) const override { text = nfc_normalize(text); }
};

}  // namespace

std::unique_ptr<Normalizer> parse_normalizer(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  const std::string type = json_type(j, where);
  if (type == "Sequence") {
    const json& list = json_at(j, "normalizers", where);
    FTUNE_CHECK(list.is_array(), "{}: 'normalizers' must be an array", where);
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (size_t i = 0; i < list.size(); ++i) {
      auto p = parse_normalizer(list[i], where + ".normalizers[" + std::to_string(i) + "]");
      if (p) parts.push_back(std::move(p));
    }
    return std::make_unique<SequenceNormalizer>(std::move(parts));
  }
  if (type == "NFC") return std::make_unique<NfcNormalizer>();
  if (type == "Prepend") return std::make_unique<PrependNormalizer>(json_string(j, "prepend", where));
  if (type == "Replace") {
    return std::make_unique<ReplaceNormalizer>(
        TextPattern::from_json(json_at(j, "pattern", where), where + ".pattern"),
        json_string(j, "content", where));
  }
  unsupported_component("normalizer", type, where);
}

}  // namespace ftune::tok
