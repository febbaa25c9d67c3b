// Tokenizer: loads tokenizer.json and runs HF's encode pipeline (TokenizerImpl::encode_single_
// sequence): added tokens cut out of the raw text → normalizer → pre-tokenizer → BPE per piece →
// post-processor; and decode (ids → token strings → decoder chain). FORMATS.md §5.
// The file's "truncation" and "padding" settings are not applied: callers choose lengths.
#include "io/tokenizer.h"

#include <fstream>
#include <sstream>

#include "core/error.h"
#include "io/json_limits.h"
#include "io/tokenizer_added.h"
#include "io/tokenizer_bpe.h"
#include "io/tokenizer_decoder.h"
#include "io/tokenizer_json.h"
#include "io/tokenizer_normalizer.h"
#include "io/tokenizer_postprocessor.h"
#include "io/tokenizer_pretokenizer.h"
#include "io/tokenizer_unicode.h"

namespace ftune {

struct Tokenizer::Impl {
  std::string origin;
  std::unique_ptr<tok::Normalizer> normalizer;
  std::unique_ptr<tok::PreTokenizer> pre_tokenizer;
  std::unique_ptr<tok::BpeModel> model;
  std::unique_ptr<tok::PostProcessor> post_processor;
  std::unique_ptr<tok::Decoder> decoder;
  tok::AddedVocabulary added;
  int64_t vocab_size = 0;
};

namespace {

// Runs f; an ftune::Error whose message does not name `origin` is rethrown with it in front.
template <typename F>
void with_origin(const std::string& origin, F&& f) {
  try {
    f();
  } catch (const Error& e) {
    const std::string what = e.what();
    if (what.find(origin) != std::string::npos) throw;
    fail("tokenizer '{}': {}", origin, what);
  }
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  FTUNE_CHECK(in.good(), "tokenizer: cannot open '{}'", path);
  std::ostringstream ss;
  ss << in.rdbuf();
  FTUNE_CHECK(!in.bad(), "tokenizer: error reading '{}'", path);
  return from_json(ss.str(), path);
}

Tokenizer Tokenizer::from_json(const std::string& json_text, const std::string& origin) {
  tok::json root;
  check_json_nesting(json_text, "tokenizer '" + origin + "'");
  try {
    root = tok::json::parse(json_text);
  } catch (const tok::json::exception& e) {  // parse_error, or out_of_range for a huge number
    fail("tokenizer '{}': invalid JSON: {}", origin, e.what());
  }
  FTUNE_CHECK(root.is_object(), "tokenizer '{}': top level must be a JSON object", origin);
  auto impl = std::make_unique<Impl>();
  impl->origin = origin;
  auto section = [&](const char* key) -> const tok::json& {
    static const tok::json null_json;
    const auto it = root.find(key);
    return it == root.end() ? null_json : *it;
  };

  const tok::json& model = tok::json_at(root, "model", origin);
  const std::string model_where = origin + ": model";
  std::string model_type;
  if (model.is_object() && model.contains("type")) {
    model_type = tok::json_type(model, model_where);
  } else if (model.is_object() && model.contains("merges")) {
    model_type = "BPE";  // files from before the model carried a "type" tag
  } else {
    fail("{}: cannot tell the model type (no 'type' key)", model_where);
  }
  if (model_type != "BPE") tok::unsupported_component("model", model_type, model_where);
  impl->model = tok::BpeModel::from_json(model, model_where);
  FTUNE_CHECK(impl->model->id_bound() > 0, "{}: the vocabulary is empty", model_where);

  // Errors from deep inside (a regex that does not compile) name the file they came from.
  with_origin(origin, [&] {
    impl->normalizer = tok::parse_normalizer(section("normalizer"), origin + ": normalizer");
    impl->pre_tokenizer =
        tok::parse_pre_tokenizer(section("pre_tokenizer"), origin + ": pre_tokenizer");
    impl->post_processor =
        tok::parse_post_processor(section("post_processor"), origin + ": post_processor");
    impl->decoder = tok::parse_decoder(section("decoder"), origin + ": decoder");
    impl->added = tok::AddedVocabulary(tok::AddedVocabulary::parse(section("added_tokens"), origin),
                                       impl->normalizer.get());
  });

  impl->vocab_size = impl->model->id_bound();
  for (const auto& t : impl->added.tokens())
    impl->vocab_size = std::max<int64_t>(impl->vocab_size, int64_t{t.id} + 1);
  return Tokenizer(std::move(impl));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  if (const auto bad = tok::first_invalid_utf8(text)) {
    fail("Tokenizer::encode ({}): input is not valid UTF-8 at byte {}", impl_->origin, *bad);
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  std::vector<tok::Piece> pieces;
  for (auto& seg : impl_->added.extract_and_normalize(text, impl_->normalizer.get())) {
    if (seg.id) {
      ids.push_back(*seg.id);
      continue;
    }
    pieces.clear();
    pieces.push_back(std::move(seg.text));
    if (impl_->pre_tokenizer)  // a regex past its match limit names the tokenizer file
      with_origin(impl_->origin, [&] { impl_->pre_tokenizer->pre_tokenize(pieces); });
    for (const auto& p : pieces) {
      const auto word = impl_->model->tokenize(p.text);
      ids.insert(ids.end(), word.begin(), word.end());
    }
  }
  if (add_special_tokens && impl_->post_processor) impl_->post_processor->process(ids);
  return ids;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (const int32_t id : ids) {
    FTUNE_CHECK(id >= 0 && id < impl_->vocab_size,
                "Tokenizer::decode ({}): id {} out of range [0, {})", impl_->origin, id,
                impl_->vocab_size);
    if (const tok::AddedToken* a = impl_->added.by_id(id)) {
      if (!(skip_special_tokens && a->special)) tokens.push_back(a->surface);
      continue;
    }
    const std::string* t = impl_->model->id_to_token(id);
    if (!t) continue;  // a gap in the vocab decodes to nothing, as in HF
    if (skip_special_tokens) {
      const tok::AddedToken* a = impl_->added.by_content(*t);
      if (a && a->special) continue;
    }
    tokens.push_back(*t);
  }
  if (!impl_->decoder) {  // HF: tokens joined by spaces
    std::string out;
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (i) out += ' ';
      out += tokens[i];
    }
    return out;
  }
  impl_->decoder->decode_chain(tokens);
  std::string out;
  for (const auto& t : tokens) out += t;
  return out;
}

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  if (const tok::AddedToken* a = impl_->added.by_content(token)) return a->id;
  return impl_->model->token_to_id(token);
}

std::string Tokenizer::id_to_token(int32_t id) const {
  if (const tok::AddedToken* a = impl_->added.by_id(id)) return a->surface;
  const std::string* t = impl_->model->id_to_token(id);
  FTUNE_CHECK(t != nullptr, "Tokenizer::id_to_token ({}): no token with id {} (vocab size {})",
              impl_->origin, id, impl_->vocab_size);
  return *t;
}

int64_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

bool Tokenizer::is_special(int32_t id) const {
  const tok::AddedToken* a = impl_->added.by_id(id);
  return a && a->special;
}

std::optional<int32_t> Tokenizer::bos_id() const {
  return impl_->post_processor ? impl_->post_processor->bos() : std::nullopt;
}

std::optional<int32_t> Tokenizer::eos_id() const {
  return impl_->post_processor ? impl_->post_processor->eos() : std::nullopt;
}

}  // namespace ftune
