// Post-processors (see tokenizer_postprocessor.h).
#include "io/tokenizer_postprocessor.h"

#include <map>

#include "core/error.h"

namespace ftune::tok {

namespace {

// A fixed layout: `before` ids, the sequence, `after` ids. TemplateProcessing's single template
// and Bert/Roberta processing all reduce to this for one sequence.
class AroundPostProcessor final : public PostProcessor {
 public:
  AroundPostProcessor(std::vector<int32_t> before, std::vector<int32_t> after)
      : before_(std::move(before)), after_(std::move(after)) {}
  void process(std::vector<int32_t>& ids) const override {
    ids.insert(ids.begin(), before_.begin(), before_.end());
    ids.insert(ids.end(), after_.begin(), after_.end());
  }
  std::optional<int32_t> bos() const override {
    return before_.empty() ? std::nullopt : std::optional<int32_t>(before_.front());
  }
  std::optional<int32_t> eos() const override {
    return after_.empty() ? std::nullopt : std::optional<int32_t>(after_.front());
  }

 private:
  std::vector<int32_t> before_, after_;
};

class IdentityPostProcessor final : public PostProcessor {
 public:
  void process(std::vector<int32_t>&) const override {}
};

class SequencePostProcessor final : public PostProcessor {
 public:
  explicit SequencePostProcessor(std::vector<std::unique_ptr<PostProcessor>> parts)
      : parts_(std::move(parts)) {}
  void process(std::vector<int32_t>& ids) const override {
    for (const auto& p : parts_) p->process(ids);
  }
  std::optional<int32_t> bos() const override {
    for (const auto& p : parts_)
      if (auto b = p->bos()) return b;
    return std::nullopt;
  }
  std::optional<int32_t> eos() const override {
    for (const auto& p : parts_)
      if (auto e = p->eos()) return e;
    return std::nullopt;
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> parts_;
};

// TemplateProcessing: {"single": [{"SpecialToken": {"id": name}} | {"Sequence": {"id": "A"}}],
// "special_tokens": {name: {"ids": [...]}}}.
std::unique_ptr<PostProcessor> parse_template(const json& j, const std::string& where) {
  const json& specials = json_at(j, "special_tokens", where);
  FTUNE_CHECK(specials.is_object(), "{}: 'special_tokens' must be an object", where);
  const json& single = json_at(j, "single", where);
  FTUNE_CHECK(single.is_array(), "{}: 'single' must be an array", where);
  std::vector<int32_t> before, after;
  int sequences = 0;
  for (size_t i = 0; i < single.size(); ++i) {
    const std::string w = where + ".single[" + std::to_string(i) + "]";
    const json& item = single[i];
    if (item.contains("Sequence")) {
      const std::string id = json_string(item["Sequence"], "id", w);
      FTUNE_CHECK(id == "A", "{}: the single template may only use sequence A, got '{}'", w, id);
      ++sequences;
      continue;
    }
    FTUNE_CHECK(item.contains("SpecialToken"), "{}: expected SpecialToken or Sequence", w);
    const std::string name = json_string(item["SpecialToken"], "id", w);
    FTUNE_CHECK(specials.contains(name), "{}: special token '{}' missing from special_tokens", w,
                name);
    const json& ids = json_at(specials[name], "ids", w + " special_tokens." + name);
    FTUNE_CHECK(ids.is_array(), "{}: special_tokens.{}.ids must be an array", where, name);
    for (const auto& id : ids) {
      FTUNE_CHECK(id.is_number_integer(), "{}: special_tokens.{}.ids must hold integers", where,
                  name);
      (sequences == 0 ? before : after).push_back(id.get<int32_t>());
    }
  }
  FTUNE_CHECK(sequences == 1, "{}: the single template must contain $A exactly once", where);
  return std::make_unique<AroundPostProcessor>(std::move(before), std::move(after));
}

// Bert/Roberta: {"cls": [token, id], "sep": [token, id]} → [CLS] A [SEP].
std::unique_ptr<PostProcessor> parse_cls_sep(const json& j, const std::string& where) {
  auto id_of = [&](const char* key) {
    const json& v = json_at(j, key, where);
    FTUNE_CHECK(v.is_array() && v.size() == 2 && v[1].is_number_integer(),
                "{}: '{}' must be [token, id]", where, key);
    return v[1].get<int32_t>();
  };
  return std::make_unique<AroundPostProcessor>(std::vector<int32_t>{id_of("cls")},
                                               std::vector<int32_t>{id_of("sep")});
}

}  // namespace

std::unique_ptr<PostProcessor> parse_post_processor(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  const std::string type = json_type(j, where);
  if (type == "TemplateProcessing") return parse_template(j, where);
  if (type == "ByteLevel") return std::make_unique<IdentityPostProcessor>();
  if (type == "BertProcessing" || type == "RobertaProcessing") return parse_cls_sep(j, where);
  if (type == "Sequence") {
    const json& list = json_at(j, "processors", where);
    FTUNE_CHECK(list.is_array(), "{}: 'processors' must be an array", where);
    std::vector<std::unique_ptr<PostProcessor>> parts;
    for (size_t i = 0; i < list.size(); ++i) {
      auto p = parse_post_processor(list[i], where + ".processors[" + std::to_string(i) + "]");
      if (p) parts.push_back(std::move(p));
    }
    return std::make_unique<SequencePostProcessor>(std::move(parts));
  }
  unsupported_component("post_processor", type, where);
}

}  // namespace ftune::tok
