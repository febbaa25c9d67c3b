// Parsing and validation of HF config.json for Llama-family models (see hf_config.h).
// Key handling follows transformers: LlamaConfig.__init__ (num_key_value_heads None -> heads,
// head_dim None -> hidden // heads), rope_config_validation (4.x: rope_scaling "type" is the
// legacy name of "rope_type"), and v5's RotaryEmbeddingConfigMixin.standardize_rope_params
// (rope_parameters holds rope_theta and rope_type, rope_type defaulting to "default").
#include "io/hf_config.h"

#include <cmath>
#include <limits>

#include "core/error.h"
#include "io/json_file.h"

namespace ftune {

namespace {

using json = nlohmann::json;

// Typed access to one JSON object, with errors naming the origin and the key path.
class Keys {
 public:
  Keys(const json& obj, std::string origin, std::string prefix = "")
      : obj_(obj), origin_(std::move(origin)), prefix_(std::move(prefix)) {}

  // Absent and null read as "not given", as HF's config classes treat None.
  bool given(const char* key) const { return obj_.contains(key) && !obj_[key].is_null(); }
  const json& at(const char* key) const { return obj_[key]; }
  std::string path(const char* key) const { return prefix_ + key; }

  [[noreturn]] void wrong_type(const char* key, const char* want) const {
    fail("{}: key '{}' must be {}, got {}", origin_, path(key), want,
         json_value_brief(obj_[key]));
  }
  void require(const char* key) const {
    FTUNE_CHECK(given(key), "{}: missing required key '{}'", origin_, path(key));
  }

  int64_t integer(const char* key) const {
    require(key);
    return int_value(key);
  }
  std::optional<int64_t> opt_integer(const char* key) const {
    if (!given(key)) return std::nullopt;
    return int_value(key);
  }
  int64_t positive(const char* key) const {
    const int64_t v = integer(key);
    FTUNE_CHECK(v > 0, "{}: key '{}' must be positive, got {}", origin_, path(key), v);
    return v;
  }
  std::optional<int64_t> opt_positive(const char* key) const {
    auto v = opt_integer(key);
    FTUNE_CHECK(!v || *v > 0, "{}: key '{}' must be positive, got {}", origin_, path(key), *v);
    return v;
  }
  double number(const char* key, double dflt) const {
    if (!given(key)) return dflt;
    if (!obj_[key].is_number()) wrong_type(key, "a number");
    return obj_[key].get<double>();
  }
  double positive_number(const char* key) const {
    require(key);
    const double v = number(key, 0);
    FTUNE_CHECK(std::isfinite(v) && v > 0, "{}: key '{}' must be a positive number, got {}",
                origin_, path(key), v);
    return v;
  }
  bool boolean(const char* key, bool dflt) const {
    if (!given(key)) return dflt;
    if (!obj_[key].is_boolean()) wrong_type(key, "true or false");
    return obj_[key].get<bool>();
  }
  std::optional<bool> opt_boolean(const char* key) const {
    if (!given(key)) return std::nullopt;
    return boolean(key, false);
  }
  std::string string(const char* key, const std::string& dflt) const {
    if (!given(key)) return dflt;
    if (!obj_[key].is_string()) wrong_type(key, "a string");
    return obj_[key].get<std::string>();
  }
  const std::string& origin() const { return origin_; }

 private:
  int64_t int_value(const char* key) const {
    const json& v = obj_[key];
    // JSON 4096.0 is a float in Python too, and HF would fail on it later; reject it here.
    if (v.is_number_unsigned()) {
      FTUNE_CHECK(v.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
                  "{}: key '{}' is out of range: {}", origin_, path(key), v.dump());
      return static_cast<int64_t>(v.get<uint64_t>());
    }
    if (!v.is_number_integer()) wrong_type(key, "an integer");
    return v.get<int64_t>();
  }

  const json& obj_;
  std::string origin_;
  std::string prefix_;
};

constexpr const char* kSupportedRope = "default, linear, llama3";

// Reads the scaling fields of one rope dict (4.x rope_scaling or v5 rope_parameters).
RopeScaling parse_rope_dict(const Keys& k, bool type_required) {
  RopeScaling r;
  const bool has_new = k.given("rope_type"), has_legacy = k.given("type");
  if (has_new) r.type = k.string("rope_type", "");
  if (has_legacy) {
    const std::string legacy = k.string("type", "");
    FTUNE_CHECK(!has_new || legacy == r.type,
                "{}: '{}' ({}) and its legacy alias '{}' ({}) disagree", k.origin(),
                k.path("rope_type"), r.type, k.path("type"), legacy);
    r.type = legacy;
  }
  FTUNE_CHECK(has_new || has_legacy || !type_required, "{}: missing required key '{}'",
              k.origin(), k.path("rope_type"));

  if (r.type == "default") return r;
  if (r.type == "linear") {
    r.factor = k.positive_number("factor");
    return r;
  }
  if (r.type == "llama3") {
    // transformers _compute_llama3_parameters reads all four; no defaults there.
    r.factor = k.positive_number("factor");
    r.low_freq_factor = k.positive_number("low_freq_factor");
    r.high_freq_factor = k.positive_number("high_freq_factor");
    r.original_max_position_embeddings = k.positive("original_max_position_embeddings");
    FTUNE_CHECK(r.high_freq_factor > r.low_freq_factor,
                "{}: '{}' ({}) must be greater than '{}' ({}) for llama3 rope scaling", k.origin(),
                k.path("high_freq_factor"), r.high_freq_factor, k.path("low_freq_factor"),
                r.low_freq_factor);
    return r;
  }
  fail("{}: unsupported rope type '{}' in '{}' (supported: {})", k.origin(), r.type,
       k.path(has_new ? "rope_type" : "type"), kSupportedRope);
}

void parse_rope(const Keys& top, HFModelConfig* c) {
  c->rope_theta = top.number("rope_theta", 10000.0);
  if (top.given("rope_parameters")) {  // transformers v5
    const json& rp = top.at("rope_parameters");
    if (!rp.is_object()) top.wrong_type("rope_parameters", "an object");
    // v5 may nest one dict per attention layer type (e.g. Gemma 3); Llama-family has one.
    FTUNE_CHECK(!rp.contains("full_attention") && !rp.contains("sliding_attention"),
                "{}: per-layer-type 'rope_parameters' are not supported", top.origin());
    Keys k(rp, top.origin(), "rope_parameters.");
    c->rope_theta = k.number("rope_theta", c->rope_theta);
    c->rope_scaling = parse_rope_dict(k, /*type_required=*/false);
  } else if (top.given("rope_scaling")) {  // transformers 4.x
    const json& rs = top.at("rope_scaling");
    if (!rs.is_object()) top.wrong_type("rope_scaling", "an object or null");
    c->rope_scaling = parse_rope_dict(Keys(rs, top.origin(), "rope_scaling."), true);
  }
  FTUNE_CHECK(std::isfinite(c->rope_theta) && c->rope_theta > 0,
              "{}: rope_theta must be a positive number, got {}", top.origin(), c->rope_theta);
}

}  // namespace

HFModelConfig parse_hf_config(const json& j, const std::string& origin) {
  FTUNE_CHECK(j.is_object(), "{}: config must be a JSON object, got {}", origin, j.type_name());
  const Keys k(j, origin);
  HFModelConfig c;
  c.raw = j;

  c.model_type = k.string("model_type", "");
  FTUNE_CHECK(!c.model_type.empty(), "{}: missing required key 'model_type'", origin);
  if (k.given("architectures")) {
    const json& a = k.at("architectures");
    if (!a.is_array()) k.wrong_type("architectures", "a list of strings");
    for (const json& s : a) {
      if (!s.is_string()) k.wrong_type("architectures", "a list of strings");
      c.architectures.push_back(s.get<std::string>());
    }
  }

  c.vocab_size = k.positive("vocab_size");
  c.hidden_size = k.positive("hidden_size");
  c.intermediate_size = k.positive("intermediate_size");
  c.num_hidden_layers = k.positive("num_hidden_layers");
  c.num_attention_heads = k.positive("num_attention_heads");
  c.num_key_value_heads = k.opt_positive("num_key_value_heads").value_or(c.num_attention_heads);
  FTUNE_CHECK(c.num_attention_heads % c.num_key_value_heads == 0,
              "{}: num_attention_heads ({}) is not divisible by num_key_value_heads ({})", origin,
              c.num_attention_heads, c.num_key_value_heads);
  if (auto hd = k.opt_positive("head_dim")) {
    c.head_dim = *hd;
  } else {
    FTUNE_CHECK(c.hidden_size % c.num_attention_heads == 0,
                "{}: hidden_size ({}) is not divisible by num_attention_heads ({}) and no "
                "head_dim is given",
                origin, c.hidden_size, c.num_attention_heads);
    c.head_dim = c.hidden_size / c.num_attention_heads;
  }
  FTUNE_CHECK(c.head_dim % 2 == 0, "{}: head_dim ({}) must be even for rotary embeddings", origin,
              c.head_dim);
  // Its default differs between config classes (2048 Llama, 32768 Qwen2, 131072 Mistral), and
  // every saved config states it, so it is required rather than guessed.
  c.max_position_embeddings = k.positive("max_position_embeddings");
  c.rms_norm_eps = k.number("rms_norm_eps", 1e-6);
  FTUNE_CHECK(std::isfinite(c.rms_norm_eps) && c.rms_norm_eps > 0,
              "{}: key 'rms_norm_eps' must be a positive number, got {}", origin, c.rms_norm_eps);

  parse_rope(k, &c);

  c.tie_word_embeddings = k.boolean("tie_word_embeddings", false);
  c.attention_bias = k.boolean("attention_bias", false);
  c.mlp_bias = k.boolean("mlp_bias", false);
  c.sliding_window = k.opt_positive("sliding_window");
  c.use_sliding_window = k.opt_boolean("use_sliding_window");
  c.bos_token_id = k.opt_integer("bos_token_id");
  c.pad_token_id = k.opt_integer("pad_token_id");
  if (k.given("eos_token_id")) {
    const json& e = k.at("eos_token_id");
    if (e.is_array()) {
      for (const json& id : e) {
        if (!id.is_number_integer()) k.wrong_type("eos_token_id", "an integer or a list of them");
        c.eos_token_ids.push_back(id.get<int64_t>());
      }
    } else {
      c.eos_token_ids.push_back(k.integer("eos_token_id"));
    }
  }
  // v5 renamed torch_dtype to dtype; either may appear.
  c.torch_dtype = k.string("torch_dtype", k.string("dtype", ""));

  c.hidden_act = k.string("hidden_act", "silu");
  FTUNE_CHECK(c.hidden_act == "silu",
              "{}: unsupported hidden_act '{}' (supported: silu)", origin, c.hidden_act);
  return c;
}

HFModelConfig load_hf_config(const std::string& config_json_path) {
  return parse_hf_config(read_json_file(config_json_path), config_json_path);
}

}  // namespace ftune
