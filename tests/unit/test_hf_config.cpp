// HF config.json parsing (FORMATS.md §2): real-world shapes of Llama 3.1 (transformers 4.x,
// rope_scaling llama3), a transformers v5 file (rope_parameters, "dtype"), Mistral with an
// explicit head_dim, Qwen2, and broken configs whose errors must name the file and the key.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/hf_config.h"
#include "io/json_file.h"
#include "support/test_support.h"

using namespace ftune;
using json = nlohmann::json;

namespace {

// Meta-Llama-3.1-8B-Instruct/config.json as published (transformers 4.43).
const char* kLlama31 = R"({
  "architectures": ["LlamaForCausalLM"],
  "attention_bias": false,
  "attention_dropout": 0.0,
  "bos_token_id": 128000,
  "eos_token_id": [128001, 128008, 128009],
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 131072,
  "mlp_bias": false,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "pretraining_tp": 1,
  "rms_norm_eps": 1e-05,
  "rope_scaling": {
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_type": "llama3"
  },
  "rope_theta": 500000.0,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.43.0.dev0",
  "use_cache": true,
  "vocab_size": 128256
})";

// A Llama 3.2-style config as transformers v5 saves it: rope_parameters, "dtype", tied.
const char* kLlamaV5 = R"({
  "architectures": ["LlamaForCausalLM"],
  "bos_token_id": 128000,
  "dtype": "bfloat16",
  "eos_token_id": 128001,
  "head_dim": 64,
  "hidden_act": "silu",
  "hidden_size": 2048,
  "intermediate_size": 8192,
  "max_position_embeddings": 131072,
  "model_type": "llama",
  "num_attention_heads": 32,
  "num_hidden_layers": 16,
  "num_key_value_heads": 8,
  "pad_token_id": null,
  "rms_norm_eps": 1e-05,
  "rope_parameters": {
    "factor": 32.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
    "rope_theta": 500000.0,
    "rope_type": "llama3"
  },
  "tie_word_embeddings": true,
  "transformers_version": "5.0.0",
  "vocab_size": 128256
})";

// Mistral-Nemo-style: head_dim 128 while hidden/heads = 160; sliding_window null.
const char* kMistral = R"({
  "architectures": ["MistralForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 1,
  "eos_token_id": 2,
  "head_dim": 128,
  "hidden_act": "silu",
  "hidden_size": 5120,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 1024000,
  "model_type": "mistral",
  "num_attention_heads": 32,
  "num_hidden_layers": 40,
  "num_key_value_heads": 8,
  "rms_norm_eps": 1e-05,
  "rope_theta": 1000000.0,
  "sliding_window": null,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "vocab_size": 131072
})";

// Qwen2.5-0.5B-Instruct/config.json as published: no attention_bias key, sliding window off.
const char* kQwen2 = R"({
  "architectures": ["Qwen2ForCausalLM"],
  "attention_dropout": 0.0,
  "bos_token_id": 151643,
  "eos_token_id": 151645,
  "hidden_act": "silu",
  "hidden_size": 896,
  "initializer_range": 0.02,
  "intermediate_size": 4864,
  "max_position_embeddings": 32768,
  "max_window_layers": 21,
  "model_type": "qwen2",
  "num_attention_heads": 14,
  "num_hidden_layers": 24,
  "num_key_value_heads": 2,
  "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0,
  "sliding_window": 32768,
  "tie_word_embeddings": true,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.43.1",
  "use_cache": true,
  "use_sliding_window": false,
  "vocab_size": 151936
})";

// Smallest config the parser accepts: required keys only.
json minimal() {
  return json::parse(R"({"model_type": "llama", "vocab_size": 32, "hidden_size": 16,
    "intermediate_size": 40, "num_hidden_layers": 2, "num_attention_heads": 4,
    "max_position_embeddings": 64})");
}

std::string error_of(const json& j) {
  try {
    parse_hf_config(j, "/models/x/config.json");
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "parse succeeded for " << j.dump();
  return "";
}

#define EXPECT_ERR(j, part)                                                                \
  do {                                                                                    \
    const std::string m_ = error_of(j);                                                   \
    EXPECT_NE(m_.find("/models/x/config.json: "), std::string::npos) << m_;               \
    EXPECT_NE(m_.find(part), std::string::npos) << "expected \"" << (part) << "\" in: " << m_; \
  } while (0)

}  // namespace

TEST(HFConfig, Llama31TransformersV4) {
  const HFModelConfig c = parse_hf_config(json::parse(kLlama31), "llama31");
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.architectures, (std::vector<std::string>{"LlamaForCausalLM"}));
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 14336);
  EXPECT_EQ(c.num_hidden_layers, 32);
  EXPECT_EQ(c.num_attention_heads, 32);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.max_position_embeddings, 131072);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.low_freq_factor, 1.0);
  EXPECT_DOUBLE_EQ(c.rope_scaling.high_freq_factor, 4.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_FALSE(c.mlp_bias);
  EXPECT_FALSE(c.sliding_window.has_value());
  EXPECT_FALSE(c.use_sliding_window.has_value());
  EXPECT_EQ(c.bos_token_id, 128000);
  EXPECT_FALSE(c.pad_token_id.has_value());
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{128001, 128008, 128009}));
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  EXPECT_EQ(c.hidden_act, "silu");
  EXPECT_EQ(c.raw["pretraining_tp"], 1);
}

TEST(HFConfig, TransformersV5RopeParameters) {
  const HFModelConfig c = parse_hf_config(json::parse(kLlamaV5), "v5");
  EXPECT_DOUBLE_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 32.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 8192);
  EXPECT_EQ(c.torch_dtype, "bfloat16");
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{128001}));
  EXPECT_FALSE(c.pad_token_id.has_value());

  // v5 default rope: rope_type "default" with the theta inside the dict.
  json j = minimal();
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 1e6}};
  HFModelConfig d = parse_hf_config(j, "v5-default");
  EXPECT_EQ(d.rope_scaling.type, "default");
  EXPECT_DOUBLE_EQ(d.rope_theta, 1e6);
  // rope_type absent in rope_parameters means default (standardize_rope_params).
  j["rope_parameters"] = {{"rope_theta", 250000}};
  d = parse_hf_config(j, "v5-notype");
  EXPECT_EQ(d.rope_scaling.type, "default");
  EXPECT_DOUBLE_EQ(d.rope_theta, 250000);
}

TEST(HFConfig, MistralExplicitHeadDim) {
  const HFModelConfig c = parse_hf_config(json::parse(kMistral), "mistral");
  EXPECT_EQ(c.model_type, "mistral");
  EXPECT_EQ(c.head_dim, 128);  // not 5120 / 32 = 160
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_DOUBLE_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.rope_scaling.type, "default");
  EXPECT_FALSE(c.sliding_window.has_value());  // null
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{2}));
}

TEST(HFConfig, Qwen2) {
  const HFModelConfig c = parse_hf_config(json::parse(kQwen2), "qwen2");
  EXPECT_EQ(c.model_type, "qwen2");
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_FALSE(c.attention_bias);  // absent: q/k/v biases come from the architecture table
  EXPECT_EQ(c.sliding_window, 32768);
  EXPECT_EQ(c.use_sliding_window, false);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{151645}));
}

TEST(HFConfig, DefaultsForAbsentOptionalKeys) {
  const HFModelConfig c = parse_hf_config(minimal(), "min");
  EXPECT_EQ(c.num_key_value_heads, 4);
  EXPECT_EQ(c.head_dim, 4);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000);
  EXPECT_EQ(c.rope_scaling.type, "default");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 1);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.attention_bias);
  EXPECT_TRUE(c.eos_token_ids.empty());
  EXPECT_EQ(c.torch_dtype, "");
  EXPECT_EQ(c.hidden_act, "silu");
  EXPECT_TRUE(c.architectures.empty());
  // null kv heads / head_dim / rope_scaling read as absent.
  json j = minimal();
  j["num_key_value_heads"] = nullptr;
  j["head_dim"] = nullptr;
  j["rope_scaling"] = nullptr;
  const HFModelConfig n = parse_hf_config(j, "nulls");
  EXPECT_EQ(n.num_key_value_heads, 4);
  EXPECT_EQ(n.head_dim, 4);
  EXPECT_EQ(n.rope_scaling.type, "default");
}

TEST(HFConfig, LegacyRopeScalingTypeKey) {
  json j = minimal();
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2}};
  const HFModelConfig c = parse_hf_config(j, "linear");
  EXPECT_EQ(c.rope_scaling.type, "linear");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 2.0);
  j["rope_scaling"] = {{"type", "linear"}, {"rope_type", "llama3"}, {"factor", 2}};
  EXPECT_ERR(j, "'rope_scaling.rope_type' (llama3) and its legacy alias 'rope_scaling.type' "
                "(linear) disagree");
}

TEST(HFConfig, LoadFromFile) {
  const std::string dir = test::temp_dir("hf_config");
  const std::string path = dir + "/config.json";
  { std::ofstream(path) << kQwen2; }
  EXPECT_EQ(load_hf_config(path).hidden_size, 896);
  { std::ofstream(path) << "{\n  \"model_type\": \"llama\",\n  \"vocab_size\": 32,,\n}"; }
  try {
    load_hf_config(path);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find(path + ": invalid JSON: parse error at line 3, column 20"), std::string::npos)
        << m;
  }
  try {
    load_hf_config(dir + "/absent.json");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot open " + dir + "/absent.json"), std::string::npos)
        << e.what();
  }
  try {
    load_hf_config(dir);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot read " + dir + ": not a regular file"),
              std::string::npos)
        << e.what();
  }
  std::filesystem::remove_all(dir);
}

TEST(HFConfig, MissingAndWrongTypes) {
  for (const char* key : {"model_type", "vocab_size", "hidden_size", "intermediate_size",
                          "num_hidden_layers", "num_attention_heads", "max_position_embeddings"}) {
    json j = minimal();
    j.erase(key);
    EXPECT_ERR(j, fmt::format("missing required key '{}'", key));
  }
  json j = minimal();
  j["hidden_size"] = "16";
  EXPECT_ERR(j, "key 'hidden_size' must be an integer, got string \"16\"");
  j = minimal();
  j["hidden_size"] = 16.0;
  EXPECT_ERR(j, "key 'hidden_size' must be an integer, got number 16.0");
  j = minimal();
  j["tie_word_embeddings"] = "false";
  EXPECT_ERR(j, "key 'tie_word_embeddings' must be true or false");
  j = minimal();
  j["rms_norm_eps"] = "1e-5";
  EXPECT_ERR(j, "key 'rms_norm_eps' must be a number");
  j = minimal();
  j["architectures"] = "LlamaForCausalLM";
  EXPECT_ERR(j, "key 'architectures' must be a list of strings");
  j = minimal();
  j["eos_token_id"] = {1, "2"};
  EXPECT_ERR(j, "key 'eos_token_id' must be an integer or a list of them");
  j = minimal();
  j["rope_scaling"] = "llama3";
  EXPECT_ERR(j, "key 'rope_scaling' must be an object or null");
  EXPECT_ERR(json::array(), "config must be a JSON object, got array");
}

TEST(HFConfig, NonPositiveSizes) {
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads", "num_key_value_heads", "head_dim",
                          "max_position_embeddings"}) {
    json j = minimal();
    j[key] = 0;
    EXPECT_ERR(j, fmt::format("key '{}' must be positive, got 0", key));
    j[key] = -3;
    EXPECT_ERR(j, fmt::format("key '{}' must be positive, got -3", key));
  }
  json j = minimal();
  j["rms_norm_eps"] = 0;
  EXPECT_ERR(j, "'rms_norm_eps' must be a positive number");
  j = minimal();
  j["rope_theta"] = -1;
  EXPECT_ERR(j, "rope_theta must be a positive number");
}

TEST(HFConfig, HeadCounts) {
  json j = minimal();
  j["num_key_value_heads"] = 3;
  EXPECT_ERR(j, "num_attention_heads (4) is not divisible by num_key_value_heads (3)");
  j = minimal();
  j["num_attention_heads"] = 3;
  EXPECT_ERR(j, "hidden_size (16) is not divisible by num_attention_heads (3) and no head_dim");
  j["head_dim"] = 6;  // explicit head_dim makes it valid
  EXPECT_EQ(parse_hf_config(j, "x").head_dim, 6);
}

TEST(HFConfig, UnsupportedRopeAndActivation) {
  for (const char* type : {"dynamic", "yarn", "longrope"}) {
    json j = minimal();
    j["rope_scaling"] = {{"rope_type", type}, {"factor", 4.0}};
    EXPECT_ERR(j, fmt::format("unsupported rope type '{}' in 'rope_scaling.rope_type' "
                              "(supported: default, linear, llama3)", type));
    j.erase("rope_scaling");
    j["rope_parameters"] = {{"rope_type", type}, {"factor", 4.0}, {"rope_theta", 1e4}};
    EXPECT_ERR(j, fmt::format("unsupported rope type '{}' in 'rope_parameters.rope_type'", type));
  }
  json j = minimal();
  j["rope_scaling"] = {{"factor", 4.0}};
  EXPECT_ERR(j, "missing required key 'rope_scaling.rope_type'");
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0}};
  EXPECT_ERR(j, "missing required key 'rope_scaling.original_max_position_embeddings'");
  j["rope_scaling"]["original_max_position_embeddings"] = 8192;
  j["rope_scaling"]["high_freq_factor"] = 1.0;
  EXPECT_ERR(j, "'rope_scaling.high_freq_factor' (1) must be greater than "
                "'rope_scaling.low_freq_factor' (1)");
  j = minimal();
  j["rope_scaling"] = {{"rope_type", "linear"}};
  EXPECT_ERR(j, "missing required key 'rope_scaling.factor'");
  j = minimal();
  j["hidden_act"] = "gelu_pytorch_tanh";
  EXPECT_ERR(j, "unsupported hidden_act 'gelu_pytorch_tanh' (supported: silu)");
}
