// The training job's configuration: typed structs filled from a YAML file plus command-line
// overrides ("train.learning_rate=1e-4"), validated against one schema table
// (config_schema.cpp). Every key, its type, default, range/choices and meaning live in that
// table; defaults, validation, the resolved dump and docs/CONFIG.md all come from it.
// Key names follow what HF TRL / PEFT / torchtune users know (lora.r, lora.alpha,
// train.gradient_accumulation_steps, ...); see docs/CONFIG.md for the full reference.
#pragma once
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace ftune {

// train.micro_batch_size: auto is held as this value (an Int key whose `choices` is "auto"
// accepts the word and stores 0); job setup replaces it with the planner's pick.
inline constexpr int64_t kAutoMicroBatch = 0;

// A value-initialized struct is NOT the defaults: get them from default_config() or
// load_config(), which fill every field from the schema.
// Choice-valued keys hold their (validated) string: e.g. train.lr_scheduler is one of
// "constant", "linear", "cosine". The choices are listed in the schema and docs/CONFIG.md.
struct ModelConfig {
  std::string path;           // HF model folder; empty = built-in tiny random model
  std::string dtype;          // auto|float32|bfloat16|float16
  std::string tokenizer;      // resolved: empty -> model.path
  std::string chat_template;  // auto (the model's Jinja template) or a preset name
  bool load_in_4bit = false;
  bool bnb_4bit_use_double_quant = true;
  bool fp8_base = false;      // projections in FP8 E4M3, their GEMMs on FP8 tensor cores
  int64_t seed = 0;           // weights of the built-in tiny random model

  bool operator==(const ModelConfig&) const = default;
};

struct LoraConfig {
  int64_t r = 0;
  double alpha = 0;  // PEFT lora_alpha; scaling = alpha / r (alpha / sqrt(r) with use_rslora)
  double dropout = 0;
  std::vector<std::string> target_modules;  // resolved: "all-linear" -> the seven projections
  bool use_rslora = false;
  int64_t init_seed = 0;  // resolved: -1 -> train.seed

  bool operator==(const LoraConfig&) const = default;
};

struct DataConfig {
  std::string train;       // empty = built-in debug dataset
  std::string validation;  // empty = none (or validation_split)
  double validation_split = 0;
  std::string format;      // auto|alpaca|sharegpt|messages|text|prompt_completion
  int64_t max_seq_length = 0;
  std::string truncation;  // truncate|drop
  bool packing = false;
  bool train_on_responses_only = false;
  bool shuffle = false;
  int64_t seed = 0;
  std::string cache_dir;  // resolved: empty -> <train.output_dir>/.cache

  bool operator==(const DataConfig&) const = default;
};

struct TrainSection {
  std::string output_dir;
  bool overwrite_output_dir = false;
  bool save_on_interrupt = false;
  int64_t max_steps = 0;  // -1 = run num_epochs
  int64_t num_epochs = 0;
  int64_t micro_batch_size = 0;  // kAutoMicroBatch = auto (resolved by cli/job_setup.h)
  int64_t gradient_accumulation_steps = 0;
  int64_t effective_batch_size = 0;  // 0 = not set
  double memory_budget_gib = 0;      // 0 = the device's memory
  double learning_rate = 0;
  std::string lr_scheduler;  // constant|linear|cosine
  int64_t warmup_steps = 0;
  double warmup_ratio = 0;
  double weight_decay = 0;
  double adam_beta1 = 0;
  double adam_beta2 = 0;
  double adam_epsilon = 0;
  double max_grad_norm = 0;  // 0 = no clipping
  std::string gradient_checkpointing;  // none | layer | offload (true = layer, false = none)
  int64_t seed = 0;
  int64_t eval_steps = 0;        // 0 = only at the end
  int64_t save_steps = 0;        // 0 = only at the end
  int64_t save_total_limit = 0;  // 0 = keep all
  bool save_merged = false;      // also write output_dir/merged at the end
  int64_t logging_steps = 0;
  std::string device;  // auto|cpu|cuda
  std::vector<std::string> sample_prompts;  // greedy samples shown at every evaluation
  int64_t sample_max_new_tokens = 0;

  bool operator==(const TrainSection&) const = default;
};

struct DistributedConfig {
  std::string gpus;                   // "1", a count "4", "all", or device ids "0,2,3"
  int64_t nproc = 0;                  // worker processes on the CPU backend
  std::string aggregation;            // token_mean|mean|weighted|median
  std::vector<double> rank_weights;   // weighted: one weight per rank
  std::vector<double> shard_weights;  // share of each window per rank; empty = equal
  int64_t auto_shard_steps = 0;       // > 0: shares from measured throughput after that many steps
  std::string backend;                // auto|nccl|gloo
  std::string master_addr;            // "" = MASTER_ADDR from the environment, else 127.0.0.1
  int64_t master_port = 0;            // 0 = MASTER_PORT(+1) from the environment, else a free port
  int64_t nnodes = 0;
  int64_t node_rank = 0;
  int64_t timeout_s = 0;
  bool check_consistency = false;
  int64_t verify_every = 0;           // 0 = never
  std::string shard_base;             // auto|true|false: the base's layers sharded over ranks
  std::vector<double> max_memory_gib; // per-rank memory cap (one value = all ranks); empty = none

  bool operator==(const DistributedConfig&) const = default;
};

struct LoggingConfig {
  bool tensorboard = false;
  bool jsonl = false;
  std::string console;  // auto|bar|plain|none
  std::string run_name;

  bool operator==(const LoggingConfig&) const = default;
};

struct TrainConfig {
  ModelConfig model;
  LoraConfig lora;
  DataConfig data;
  TrainSection train;
  DistributedConfig distributed;
  LoggingConfig logging;

  bool operator==(const TrainConfig&) const = default;
};

// ---- loading -------------------------------------------------------------------------------

// Derived values are resolved after loading, so consumers never see the "use the other key"
// sentinels: model.tokenizer "" -> model.path, data.cache_dir "" -> <train.output_dir>/.cache,
// lora.init_seed -1 -> train.seed, lora.target_modules [all-linear] -> the seven projections.

// All schema defaults, resolved.
TrainConfig default_config();

// Reads yaml_path (empty = no file: defaults only), then applies overrides in order, each
// "section.key=value" with value parsed as a YAML scalar or flow list ("[q_proj, v_proj]").
// Collects every problem and throws one ftune::Error with one line per problem:
//   "<file>:<line>: <section.key>: <problem>"  or  "<override>: <section.key>: <problem>".
TrainConfig load_config(const std::string& yaml_path,
                        const std::vector<std::string>& overrides = {});

// Same, from YAML text; `origin` stands for the file name in messages (e.g. "<default job>").
TrainConfig load_config_text(const std::string& yaml_text, const std::string& origin,
                             const std::vector<std::string>& overrides = {});

// The complete configuration as YAML (every key, schema order, each with its doc as a
// comment); load_config on it gives back an identical TrainConfig.
std::string to_resolved_yaml(const TrainConfig& cfg);

// train.gradient_checkpointing: whether layers are recomputed (layer, offload, true) and whether
// the saved layer inputs are parked in host memory (offload).
inline bool checkpointing_on(const TrainConfig& c) {
  const std::string& m = c.train.gradient_checkpointing;
  return m == "layer" || m == "offload" || m == "true";
}
inline bool checkpointing_offload(const TrainConfig& c) {
  return c.train.gradient_checkpointing == "offload";
}

// Writes to_resolved_yaml(cfg) to path atomically (temporary file + rename); creates the
// parent folder.
void write_resolved_config(const TrainConfig& cfg, const std::string& path);

// ---- the schema ----------------------------------------------------------------------------

enum class ConfigType { Bool, Int, Float, String, Path, Choice, List, Numbers, Strings };

// A pointer to the field of a TrainConfig that a schema entry fills.
using ConfigFieldPtr = std::variant<bool*, int64_t*, double*, std::string*,
                                    std::vector<std::string>*, std::vector<double>*>;

struct ConfigKey {
  std::string_view path;           // "train.learning_rate"
  ConfigType type;
  std::string_view default_value;  // YAML text, parsed like a user value
  double min;                      // Int/Float/Numbers items: inclusive lower bound (-inf = none)
  double max;                      // Int/Float: upper bound (+inf = none)
  bool max_exclusive;              // upper bound is open: [min, max)
  std::string_view choices;        // Choice, List items: "a|b|c"; Int: "auto" = also accepts auto (stored as 0)
  std::string_view doc;            // one line, shown in docs/CONFIG.md and the resolved dump
  ConfigFieldPtr (*field)(TrainConfig&);
};

// Every key, in section order (model, lora, data, train, distributed, logging).
std::span<const ConfigKey> config_schema();
// The section names, in order.
std::span<const std::string_view> config_sections();

// The Markdown reference table of one section (| key | type | default | allowed | meaning |);
// docs/CONFIG.md holds these tables verbatim (checked by test_config).
std::string config_reference_markdown(std::string_view section);

}  // namespace ftune
