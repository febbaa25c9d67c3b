// prepare_data: dataset files -> records -> rendered text -> masked token ids, through the
// token cache (see prepare_data.h).
#include "data/prepare_data.h"

#include <spdlog/spdlog.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/batch.h"
#include "core/error.h"
#include "io/json_limits.h"
#include "data/data_files.h"
#include "data/debug_dataset.h"
#include "data/shuffle.h"
#include "data/token_cache.h"

namespace ftune {

namespace {

constexpr uint64_t kValidationStream = 0x76616C6964617465ull;  // "validate"

// Token strings from tokenizer_config.json: a string or {"content": ...}.
std::optional<std::string> config_token(const nlohmann::json& cfg, const char* key) {
  if (!cfg.is_object()) return std::nullopt;
  auto it = cfg.find(key);
  if (it == cfg.end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  return std::nullopt;
}

// Everything shared by the train and validation files.
class Pipeline {
 public:
  Pipeline(const DataOptions& opts, const TextEncoder& enc) : opts_(opts), enc_(enc) {
    if (!opts.tokenizer_dir.empty()) {
      const auto p = std::filesystem::path(opts.tokenizer_dir) / "tokenizer_config.json";
      std::error_code ec;
      if (std::filesystem::is_regular_file(p, ec)) {
        config_path_ = p.string();
        try {
          const std::string text = read_file_bytes(config_path_);
          check_json_nesting(text, config_path_);
          config_ = nlohmann::json::parse(text);
        } catch (const nlohmann::json::exception& e) {
          fail("{}: invalid JSON: {}", config_path_, e.what());
        }
      }
    }
    eos_ = find_eos();
    pad_id_ = eos_.value_or(0);
    if (auto pad = config_token(config_, "pad_token")) {
      if (auto id = enc_.token_to_id(*pad)) pad_id_ = *id;
      else spdlog::warn("{}: pad_token '{}' is not a token of the tokenizer; padding with id {}",
                        config_path_, *pad, pad_id_);
    }
  }

  int32_t pad_id() const { return pad_id_; }
  std::string template_name() const { return tmpl_ ? tmpl_->name : ""; }

  struct FileResult {
    TokenizedDataset data;
    DatasetFormat format = DatasetFormat::messages;
    bool from_cache = false;
  };

  // path "" = the built-in debug dataset.
  FileResult process(const std::string& path) {
    const bool builtin = path.empty();
    const std::string name = builtin ? kBuiltinDebugDatasetName : path;
    const std::string bytes = builtin ? builtin_debug_dataset_jsonl() : read_file_bytes(path);
    const std::vector<DatasetRecord> records = parse_dataset_text(bytes, name);

    FileResult out;
    const std::optional<DatasetFormat> given = parse_format_name(opts_.format);
    out.format = given ? *given : detect_format(records.front());
    const bool conversation = is_conversation_format(out.format);
    const ChatTemplate* tmpl = conversation ? &chat_template(builtin) : nullptr;
    std::optional<int32_t> bos, eos;
    if (!conversation) {
      bos = enc_.bos_id();
      eos = eos_;
      FTUNE_CHECK(eos.has_value(),
                  "{}: cannot tell which EOS token to append to {} examples: no eos_token in "
                  "tokenizer_config.json (model.tokenizer = '{}') and the tokenizer adds none",
                  name, format_name(out.format), opts_.tokenizer_dir);
    }

    Fnv1a64 h;
    h.field("ftune token cache").u64(kTokenCacheVersion).field(bytes).field(enc_.fingerprint());
    h.field(format_name(out.format)).u64(static_cast<uint64_t>(opts_.max_seq_length));
    h.u64(static_cast<uint64_t>(opts_.truncation)).u64(opts_.train_on_responses_only ? 1 : 0);
    if (tmpl) {
      h.field(tmpl->fingerprint());
    }
    h.u64(bos ? static_cast<uint64_t>(*bos) + 1 : 0).u64(eos ? static_cast<uint64_t>(*eos) + 1 : 0);
    const uint64_t key = h.value();

    std::optional<TokenCache> cache;
    if (!opts_.cache_dir.empty()) {
      cache.emplace(opts_.cache_dir);
      CacheLoad hit = cache->load(key);
      if (hit.data) {
        out.data = std::move(*hit.data);
        out.from_cache = true;
        return out;
      }
      if (!hit.problem.empty()) {
        spdlog::warn("token cache: ignoring a damaged cache file ({}); tokenizing again",
                     hit.problem);
      }
    }

    out.data = tokenize_records(records, out.format, tmpl, bos, eos, name);
    if (cache) cache->store(key, out.data);
    return out;
  }

 private:
  std::optional<int32_t> find_eos() const {
    if (auto eos = config_token(config_, "eos_token")) {
      if (auto id = enc_.token_to_id(*eos)) return id;
      // An eos_token the tokenizer does not know would silently end examples with another id.
      fail("{}: eos_token '{}' is not a token of the tokenizer in {}", config_path_, *eos,
           opts_.tokenizer_dir);
    }
    if (auto id = enc_.eos_id()) return id;
    for (const char* s : {"<|end_of_text|>", "</s>", "<|endoftext|>"}) {
      if (auto id = enc_.token_to_id(s)) return id;
    }
    return std::nullopt;
  }

  const ChatTemplate& chat_template(bool builtin) {
    if (tmpl_) return *tmpl_;
    try {
      tmpl_ = resolve_chat_template(opts_.chat_template, config_path_);
    } catch (const Error& e) {
      // The built-in dataset is Llama-3-Instruct style: with "auto" and no usable template
      // (e.g. the built-in tiny model's tokenizer), use llama-3.
      const std::string spec = opts_.chat_template;
      if (!builtin || !(spec.empty() || spec == "auto")) throw;
      spdlog::warn("{}; using the llama-3 chat template for the built-in debug dataset",
                   e.what());
      tmpl_ = resolve_chat_template("llama-3", config_path_);
    }
    for (const std::string& s : tmpl_->special_tokens()) {
      const auto id = enc_.token_to_id(s);
      const auto ids = enc_.encode(s);
      FTUNE_CHECK(id && ids.size() == 1 && ids[0] == *id,
                  "chat template {} writes '{}', which is not a single token of this tokenizer; "
                  "the template does not fit the model (set model.chat_template)",
                  tmpl_->name, s);
    }
    return *tmpl_;
  }

  TokenizedDataset tokenize_records(const std::vector<DatasetRecord>& records,
                                    DatasetFormat format, const ChatTemplate* tmpl,
                                    std::optional<int32_t> bos, std::optional<int32_t> eos,
                                    const std::string& name) const {
    TokenizedDataset out;
    DataStats& st = out.stats;
    st.records = static_cast<int64_t>(records.size());
    for (const DatasetRecord& rec : records) {
      const SourceExample src = convert_record(rec, format);
      const RenderedExample rendered = render_example(src, tmpl, opts_.train_on_responses_only);
      TokenizedExample ex = tokenize_rendered(enc_, rendered, bos, eos);
      if (ex.size() > opts_.max_seq_length) {
        if (opts_.truncation == Truncation::drop) {
          ++st.dropped_too_long;
          continue;
        }
        ex.ids.resize(static_cast<size_t>(opts_.max_seq_length));
        ex.labels.resize(static_cast<size_t>(opts_.max_seq_length));
        ex.truncated = true;
      }
      if (ex.trained_tokens() == 0) {
        ++st.dropped_untrained;
        continue;
      }
      out.examples.push_back(std::move(ex));
    }
    const DataStats kept = summarize(out.examples);
    st.examples = kept.examples;
    st.tokens = kept.tokens;
    st.trained_tokens = kept.trained_tokens;
    st.truncated = kept.truncated;
    st.dropped = st.dropped_too_long + st.dropped_untrained;

    if (st.examples == 0) {
      if (st.dropped_untrained == 0) {
        fail("{}: every one of its {} examples is longer than max_seq_length ({}) and "
             "data.truncation is drop",
             name, st.records, opts_.max_seq_length);
      }
      fail("{}: every label is masked after tokenization: none of its {} examples has a trained "
           "token ({} without one, {} too long); check data.format, model.chat_template and "
           "data.train_on_responses_only",
           name, st.records, st.dropped_untrained, st.dropped_too_long);
    }
    return out;
  }

  const DataOptions& opts_;
  const TextEncoder& enc_;
  std::string config_path_;
  nlohmann::json config_;
  std::optional<ChatTemplate> tmpl_;
  std::optional<int32_t> eos_;
  int32_t pad_id_ = 0;
};

}  // namespace

Truncation parse_truncation(std::string_view name) {
  if (name == "truncate") return Truncation::truncate;
  if (name == "drop") return Truncation::drop;
  fail("unknown data.truncation '{}' (expected truncate or drop)", name);
}

DataStats summarize(const std::vector<TokenizedExample>& examples) {
  DataStats s;
  s.examples = static_cast<int64_t>(examples.size());
  for (const auto& e : examples) {
    s.tokens += e.size();
    s.trained_tokens += e.trained_tokens();
    s.truncated += e.truncated ? 1 : 0;
  }
  return s;
}

void split_validation(std::vector<TokenizedExample>& train,
                      std::vector<TokenizedExample>& validation, double fraction,
                      uint64_t seed) {
  FTUNE_CHECK(fraction >= 0.0 && fraction < 1.0,
              "data.validation_split must be in [0, 1), got {}", fraction);
  validation.clear();
  if (fraction == 0.0) return;
  const auto n = static_cast<int64_t>(train.size());
  FTUNE_CHECK(n >= 2, "data.validation_split {} needs at least 2 examples, the data has {}",
              fraction, n);
  const int64_t n_val =
      std::clamp<int64_t>(std::llround(fraction * static_cast<double>(n)), 1, n - 1);
  const std::vector<int64_t> perm = shuffled_indices(n, mix_seed(seed, kValidationStream));
  std::vector<char> is_val(static_cast<size_t>(n), 0);
  for (int64_t i = 0; i < n_val; ++i) is_val[perm[i]] = 1;
  std::vector<TokenizedExample> kept;
  kept.reserve(static_cast<size_t>(n - n_val));
  for (int64_t i = 0; i < n; ++i) {
    (is_val[i] ? validation : kept).push_back(std::move(train[i]));
  }
  train = std::move(kept);
}

PreparedData prepare_data(const DataOptions& opts, const TextEncoder& enc) {
  FTUNE_CHECK(opts.max_seq_length >= 1, "data.max_seq_length must be >= 1, got {}",
              opts.max_seq_length);
  FTUNE_CHECK(opts.micro_batch_rows >= 1, "train.micro_batch_size must be >= 1, got {}",
              opts.micro_batch_rows);
  FTUNE_CHECK(opts.validation.empty() || opts.validation_split == 0.0,
              "set data.validation or data.validation_split, not both");
  FTUNE_CHECK(opts.validation_split >= 0.0 && opts.validation_split < 1.0,
              "data.validation_split must be in [0, 1), got {}", opts.validation_split);
  parse_format_name(opts.format);  // reject an unknown name before reading anything

  Pipeline pipe(opts, enc);
  PreparedData out;
  Pipeline::FileResult train = pipe.process(opts.train);
  out.train = std::move(train.data.examples);
  out.train_stats = train.data.stats;
  out.train_format = train.format;
  out.train_from_cache = train.from_cache;

  if (!opts.validation.empty()) {
    Pipeline::FileResult val = pipe.process(opts.validation);
    out.validation = std::move(val.data.examples);
    out.validation_stats = val.data.stats;
    out.validation_from_cache = val.from_cache;
  } else if (opts.validation_split > 0.0) {
    split_validation(out.train, out.validation, opts.validation_split, opts.seed);
    const DataStats tr = summarize(out.train), va = summarize(out.validation);
    out.train_stats.examples = tr.examples;
    out.train_stats.tokens = tr.tokens;
    out.train_stats.trained_tokens = tr.trained_tokens;
    out.train_stats.truncated = tr.truncated;
    out.validation_stats = va;
    out.validation_stats.records = va.examples;
  }
  out.chat_template = pipe.template_name();
  out.pad_id = pipe.pad_id();
  return out;
}

BatchOptions batch_options(const DataOptions& opts, const PreparedData& data, int64_t epoch,
                           int rank, int world) {
  BatchOptions b;
  b.seq_len = opts.max_seq_length;
  b.rows = opts.micro_batch_rows;
  b.packing = opts.packing;
  b.shuffle = opts.shuffle;
  b.seed = opts.seed;
  b.epoch = epoch;
  b.rank = rank;
  b.world = world;
  b.pad_id = data.pad_id;
  return b;
}

}  // namespace ftune
