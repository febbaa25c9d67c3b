#include "cli/job_setup.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <unistd.h>
#include <fmt/format.h>

#include "backend/cuda_ops.h"
#include "backend/gpu.h"
#include "cli/embedded_assets.h"
#include "core/error.h"
#include "data/data_files.h"
#include "data/token_cache.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/memory_model.h"
#include "model/weights.h"
#include "train/planner.h"

namespace ftune {

namespace fs = std::filesystem;

std::unique_ptr<Ops> make_ops(const std::string& device) {
  if (device == "cpu") return make_cpu_ops();
  const GpuRuntimeInfo gpus = query_gpus();
  if (device == "cuda") {
    FTUNE_CHECK(gpus.built_with_cuda, "train.device=cuda, but this ftune was built without CUDA");
    FTUNE_CHECK(!gpus.devices.empty(), "train.device=cuda, but no GPU is usable: {}", gpus.error);
    return make_cuda_ops(0);
  }
  FTUNE_CHECK(device == "auto", "unknown device '{}' (auto, cpu, cuda)", device);
  if (gpus.built_with_cuda && !gpus.devices.empty()) return make_cuda_ops(0);
  return make_cpu_ops();
}

DType compute_dtype(const std::string& model_dtype, const Ops& ops) {
  const Device dev = ops.device();
  bool has_bf16 = false;
  if (!dev.is_cpu()) {
    const GpuRuntimeInfo info = query_gpus();
    for (const auto& d : info.devices)
      if (d.index == dev.index) has_bf16 = d.cc_major >= 8;
  }
  if (model_dtype == "auto") return has_bf16 ? DType::BF16 : DType::F32;
  if (model_dtype == "float32") return DType::F32;
  if (model_dtype == "bfloat16") {
    FTUNE_CHECK(!dev.is_cpu(), "model.dtype=bfloat16: the CPU backend computes in float32 (use "
                "model.dtype=auto or float32, or train.device=cuda)");
    FTUNE_CHECK(has_bf16, "model.dtype=bfloat16: {} has no bfloat16 support (compute capability "
                "8.0 or newer is needed); use model.dtype=float32", dev.str());
    return DType::BF16;
  }
  if (model_dtype == "float16") {
    // Weights and activations in fp16, trained with dynamic loss scaling (train/loss_scaler.h):
    // for GPUs without bfloat16.
    FTUNE_CHECK(!dev.is_cpu(), "model.dtype=float16: the CPU backend computes in float32 (use "
                "model.dtype=auto or float32, or train.device=cuda)");
    return DType::F16;
  }
  fail("model.dtype={}: expected auto, float32, bfloat16 or float16", model_dtype);
}

namespace {

// Written last into the built-in model's folder: its presence says the folder is complete and
// which seed made the weights.
constexpr const char* kBuiltinMarker = "ftune_builtin_model.json";

std::string builtin_marker_text(uint64_t seed) {
  return fmt::format("{{\"seed\": {}}}\n", seed);
}

}  // namespace

void write_builtin_model(const std::string& dir, uint64_t seed) {
  fs::create_directories(dir);
  const std::string_view tok_json = embedded_asset("tokenizer_json");
  write_file_atomic(dir + "/tokenizer.json", std::string(tok_json));
  write_file_atomic(dir + "/tokenizer_config.json", std::string(embedded_asset("tokenizer_config_json")));
  const Tokenizer tok = Tokenizer::from_json(std::string(tok_json), "<built-in tokenizer>");
  const ModelSpec spec = tiny_llama_spec(tok.vocab_size());
  // Weights std 0.05: a random model whose outputs are not uniform yet well conditioned.
  const BaseWeights w = random_base_weights(spec, seed, 0.05f);
  write_safetensors(dir + "/model.safetensors", named_base_weights(spec, w));
  const auto bos = tok.token_to_id("<|begin_of_text|>");
  const auto eos = tok.token_to_id("<|eot_id|>");
  const std::string config = fmt::format(
      R"({{
  "architectures": ["LlamaForCausalLM"],
  "model_type": "llama",
  "vocab_size": {},
  "hidden_size": {},
  "intermediate_size": {},
  "num_hidden_layers": {},
  "num_attention_heads": {},
  "num_key_value_heads": {},
  "head_dim": {},
  "max_position_embeddings": {},
  "rms_norm_eps": {},
  "rope_theta": {},
  "rope_scaling": null,
  "tie_word_embeddings": true,
  "attention_bias": false,
  "mlp_bias": false,
  "hidden_act": "silu",
  "bos_token_id": {},
  "eos_token_id": {},
  "torch_dtype": "float32"
}}
)",
      spec.vocab_size, spec.hidden_size, spec.intermediate_size, spec.num_layers, spec.num_heads,
      spec.num_kv_heads, spec.head_dim, spec.max_position_embeddings, spec.rms_norm_eps,
      spec.rope.theta, bos ? fmt::format("{}", *bos) : "null", eos ? fmt::format("{}", *eos) : "null");
  write_file_atomic(dir + "/config.json", config);
  write_file_atomic(dir + "/" + kBuiltinMarker, builtin_marker_text(seed));
}

std::string resolve_model_dir(const TrainConfig& cfg) {
  if (!cfg.model.path.empty()) return cfg.model.path;
  const std::string dir = cfg.train.output_dir + "/base_model";
  const auto seed = static_cast<uint64_t>(cfg.model.seed);
  std::error_code ec;
  if (fs::is_regular_file(dir + "/" + kBuiltinMarker, ec) &&
      read_file_bytes(dir + "/" + kBuiltinMarker) == builtin_marker_text(seed))
    return dir;
  // Missing, half written by a killed run, or made with another model.seed: written whole into
  // a temporary folder, then renamed into place.
  const std::string tmp = fmt::format("{}.tmp-{}", dir, ::getpid());
  fs::remove_all(tmp);
  write_builtin_model(tmp, seed);
  fs::remove_all(dir);
  fs::rename(tmp, dir);
  return dir;
}

LoraSpec lora_spec_from_config(const TrainConfig& cfg) {
  LoraSpec s;
  s.r = cfg.lora.r;
  s.alpha = cfg.lora.alpha;
  s.dropout = cfg.lora.dropout;
  s.use_rslora = cfg.lora.use_rslora;
  s.seed = static_cast<uint64_t>(cfg.lora.init_seed);
  s.targets.fill(false);
  for (const auto& name : cfg.lora.target_modules) {
    Proj p;
    FTUNE_CHECK(proj_from_name(name, &p), "lora.target_modules: unknown module '{}'", name);
    s.targets[static_cast<size_t>(p)] = true;
  }
  s.validate();
  return s;
}

DataOptions data_options_from_config(const TrainConfig& cfg, const std::string& tokenizer_dir) {
  DataOptions d;
  d.train = cfg.data.train;
  d.validation = cfg.data.validation;
  d.validation_split = cfg.data.validation_split;
  d.format = cfg.data.format;
  d.chat_template = cfg.model.chat_template;
  d.tokenizer_dir = tokenizer_dir;
  d.max_seq_length = cfg.data.max_seq_length;
  d.truncation = parse_truncation(cfg.data.truncation);
  d.train_on_responses_only = cfg.data.train_on_responses_only;
  d.packing = cfg.data.packing;
  d.shuffle = cfg.data.shuffle;
  d.seed = static_cast<uint64_t>(cfg.data.seed);
  d.cache_dir = cfg.data.cache_dir;
  d.micro_batch_rows = cfg.train.micro_batch_size;
  return d;
}

TrainLoopOptions loop_options_from_config(const TrainConfig& cfg) {
  TrainLoopOptions o;
  const auto& t = cfg.train;
  o.output_dir = t.output_dir;
  o.max_steps = t.max_steps;
  o.num_epochs = t.num_epochs;
  o.gradient_accumulation_steps = t.gradient_accumulation_steps;
  o.warmup_steps = t.warmup_steps;
  o.warmup_ratio = t.warmup_ratio;
  o.logging_steps = t.logging_steps;
  o.eval_steps = t.eval_steps;
  o.save_steps = t.save_steps;
  o.save_total_limit = t.save_total_limit;
  o.save_merged = t.save_merged;
  o.tensorboard = cfg.logging.tensorboard;
  o.jsonl = cfg.logging.jsonl;
  o.console = cfg.logging.console;
  o.trainer.schedule.kind = t.lr_scheduler;
  o.trainer.schedule.base_lr = t.learning_rate;
  o.trainer.adamw.beta1 = t.adam_beta1;
  o.trainer.adamw.beta2 = t.adam_beta2;
  o.trainer.adamw.eps = t.adam_epsilon;
  o.trainer.adamw.weight_decay = t.weight_decay;
  o.trainer.max_grad_norm = t.max_grad_norm;
  o.config_fingerprint = config_fingerprint(cfg);
  o.save_on_interrupt = t.save_on_interrupt;
  return o;
}

ModelSpec model_spec_of(const TrainConfig& cfg) {
  if (cfg.model.path.empty()) {
    const Tokenizer tok = Tokenizer::from_json(std::string(embedded_asset("tokenizer_json")),
                                               "<built-in tokenizer>");
    return tiny_llama_spec(tok.vocab_size());
  }
  const std::string path = cfg.model.path + "/config.json";
  FTUNE_CHECK(fs::is_regular_file(path), "model.path: '{}' has no config.json (not a Hugging Face "
              "model folder)", cfg.model.path);
  return model_spec_from_hf(load_hf_config(path), path);
}

namespace {
// The storage dtype the planner and the memory model assume for a config (16-bit on a GPU).
DType planned_dtype(const TrainConfig& cfg, bool gpu) {
  return gpu && cfg.model.dtype != "float32" ? DType::BF16 : DType::F32;
}
}  // namespace

TrainConfig resolve_batch_plan(const TrainConfig& cfg, int world, bool gpu, int64_t device_memory,
                               bool log) {
  const bool auto_micro = cfg.train.micro_batch_size == kAutoMicroBatch;
  const int64_t eff = cfg.train.effective_batch_size;
  if (!auto_micro && eff == 0) return cfg;
  TrainConfig out = cfg;
  const int64_t w = std::max(world, 1);
  FTUNE_CHECK(eff == 0 || eff % w == 0, "train.effective_batch_size: {} sequences do not split "
              "over {} processes", eff, w);
  int64_t micro = cfg.train.micro_batch_size;
  std::string how;
  if (auto_micro) {
    double budget = cfg.train.memory_budget_gib > 0
                        ? cfg.train.memory_budget_gib * static_cast<double>(int64_t{1} << 30)
                        : static_cast<double>(device_memory);
    // Every rank trains the same micro-batch: the smallest per-rank cap decides.
    for (double cap : cfg.distributed.max_memory_gib)
      if (cap > 0) budget = std::min(budget > 0 ? budget : 1e300, cap * static_cast<double>(int64_t{1} << 30));
    FTUNE_CHECK(budget > 0, "train.micro_batch_size: auto: the device's memory is unknown; set "
                "train.memory_budget_gib");
    PlanRequest req;
    req.spec = model_spec_of(cfg);
    req.lora = lora_spec_from_config(cfg);
    req.seq_len = cfg.data.max_seq_length;
    req.backend = gpu ? BackendKind::Cuda : BackendKind::Cpu;
    req.dtype = planned_dtype(cfg, gpu);
    req.cudnn_attention = gpu && gpu_attention_uses_cudnn();
    req.gpus = static_cast<int>(w);
    req.device_memory = static_cast<int64_t>(budget);
    req.effective_batch = eff;
    req.accumulation = cfg.train.gradient_accumulation_steps;
    req.checkpointing = checkpointing_on(cfg) ? PlanChoice::On : PlanChoice::Off;
    req.offload = checkpointing_offload(cfg);
    req.load_in_4bit = cfg.model.load_in_4bit ? PlanChoice::On : PlanChoice::Off;
    req.fp8_base = cfg.model.fp8_base;
    const std::string& sb = cfg.distributed.shard_base;
    req.shard_base = sb == "true" ? PlanChoice::On : sb == "auto" ? PlanChoice::Auto : PlanChoice::Off;
    req.max_micro_batch = 1024;
    const PlanCandidate c = largest_fitting_micro_batch(req);
    micro = c.micro_batch;
    how = fmt::format("train.micro_batch_size: auto -> {} (the largest that fits: {:.2f} of "
                      "{:.2f} GiB per {} predicted for {} tokens per row{})",
                      micro, static_cast<double>(c.memory.device_total()) / (1 << 30),
                      budget / (1 << 30), gpu ? "GPU" : "process", req.seq_len,
                      checkpointing_offload(cfg) ? ", offloaded checkpointing"
                      : checkpointing_on(cfg)      ? ", checkpointing"
                                                   : "");
  }
  out.train.micro_batch_size = micro;
  if (eff > 0) {
    FTUNE_CHECK(eff % (micro * w) == 0, "train.effective_batch_size: {} sequences are not a "
                "multiple of micro_batch_size {} x {} processes", eff, micro, w);
    const int64_t accum = eff / (micro * w);
    FTUNE_CHECK(cfg.train.gradient_accumulation_steps == 1 ||
                    cfg.train.gradient_accumulation_steps == accum,
                "train.gradient_accumulation_steps: {} contradicts train.effective_batch_size {} "
                "(= micro_batch_size {} x {} x {} processes); set only one",
                cfg.train.gradient_accumulation_steps, eff, micro, accum, w);
    out.train.gradient_accumulation_steps = accum;
    how += fmt::format("{}gradient_accumulation_steps {} keeps the effective batch of {} "
                       "sequences", how.empty() ? "train." : "; ", accum, eff);
  }
  if (log) std::fprintf(stderr, "%s\n", how.c_str());
  return out;
}

void check_sharded_base_config(const TrainConfig& cfg) {
  FTUNE_CHECK(cfg.train.sample_prompts.empty(),
              "train.sample_prompts generate on rank 0 alone, which needs the whole model there; "
              "with distributed.shard_base the layers are spread over the ranks (set "
              "distributed.shard_base: false or drop the sample prompts)");
}

ShardDecision decide_shard_base(const TrainConfig& cfg, int world, int rank, bool gpu,
                                int64_t device_memory) {
  const DistributedConfig& dc = cfg.distributed;
  const auto& caps = dc.max_memory_gib;
  FTUNE_CHECK(caps.empty() || caps.size() == 1 || static_cast<int>(caps.size()) == world,
              "distributed.max_memory_gib has {} entries for {} processes (give one value for "
              "all, or one per rank)", caps.size(), world);
  for (size_t i = 0; i < caps.size(); ++i)
    FTUNE_CHECK(caps[i] > 0, "distributed.max_memory_gib: entry {} is {}; caps must be positive",
                i, caps[i]);
  const double gib = static_cast<double>(int64_t{1} << 30);
  const int64_t cap = !caps.empty() ? static_cast<int64_t>(caps[caps.size() == 1 ? 0 : static_cast<size_t>(rank)] * gib)
                                    : device_memory;
  MemoryModelInput mi;
  mi.spec = model_spec_of(cfg);
  mi.lora = lora_spec_from_config(cfg);
  mi.micro_batch = std::max<int64_t>(cfg.train.micro_batch_size, 1);
  mi.seq_len = cfg.data.max_seq_length;
  mi.checkpointing = checkpointing_on(cfg);
  mi.offload = gpu && checkpointing_offload(cfg);
  mi.load_in_4bit = cfg.model.load_in_4bit;
  mi.fp8_base = cfg.model.fp8_base;
  mi.backend = gpu ? BackendKind::Cuda : BackendKind::Cpu;
  mi.dtype = planned_dtype(cfg, gpu);
  mi.world_size = world;
  mi.cudnn_attention = gpu && gpu_attention_uses_cudnn();
  auto need = [&](bool shard) {
    MemoryModelInput m = mi;
    m.shard_base = shard;
    return estimate_memory(m).device_total();
  };
  ShardDecision d;
  const int64_t whole = need(false);
  // Sharding holds 1/N of the layers plus two whole ones: it helps only with enough layers.
  const int64_t sharded = world > 1 ? need(true) : whole;
  if (dc.shard_base == "true") {
    d.shard = world > 1;
    if (world == 1) d.note = "distributed.shard_base: true has no effect with one process";
  } else if (dc.shard_base == "auto") {
    // (An FP8 base is never sharded: config.cpp refuses shard_base true with it.)
    d.shard = !cfg.model.fp8_base && world > 1 && cap > 0 && whole > cap && sharded < whole;
    if (d.shard)
      d.note = fmt::format("distributed.shard_base: auto -> true (the whole model needs {:.2f} "
                           "GiB per rank, more than the {:.2f} GiB available)",
                           static_cast<double>(whole) / gib, static_cast<double>(cap) / gib);
  }
  if (d.shard) check_sharded_base_config(cfg);
  if (!caps.empty()) {
    const int64_t n = d.shard ? sharded : whole;
    FTUNE_CHECK(n <= cap,
                "rank {}: the job needs {:.2f} GiB on its device{}, more than its "
                "distributed.max_memory_gib {:.2f}; {}lower train.micro_batch_size or "
                "data.max_seq_length, turn on train.gradient_checkpointing or model.load_in_4bit",
                rank, static_cast<double>(n) / gib,
                d.shard ? fmt::format(" with the base sharded over {} ranks", world) : "",
                static_cast<double>(cap) / gib,
                !d.shard && world > 1 && sharded < whole ? "set distributed.shard_base: true, "
                                                         : "");
  }
  return d;
}

std::string config_fingerprint(const TrainConfig& cfg, int world_size) {
  TrainConfig c = cfg;
  // What a step trains on is the global window (accumulation x processes), so a run may
  // resume with another process count when the window stays the same; how the processes are
  // placed and checked does not change the result. (Evaluation no longer shifts the dropout
  // masks, so train.eval_steps need not be fingerprinted.)
  c.train.gradient_accumulation_steps *= world_size;
  const std::string aggregation = c.distributed.aggregation;
  c.distributed = DistributedConfig{};
  c.distributed.aggregation = aggregation;
  // Keys that may change on resume: how long to train, how often to log/eval/save, logging.
  c.train.max_steps = 0;
  c.train.num_epochs = 0;
  c.train.eval_steps = c.train.save_steps = c.train.save_total_limit = c.train.logging_steps = 0;
  c.train.overwrite_output_dir = false;
  c.train.save_on_interrupt = false;
  c.train.sample_prompts.clear();  // what is shown at evaluations, not what is trained
  c.train.sample_max_new_tokens = 0;
  c.train.save_merged = false;
  // Where the run lives is not what it computes: a run copied to another folder resumes there.
  c.train.output_dir.clear();
  c.data.cache_dir.clear();
  c.logging = LoggingConfig{};
  Fnv1a64 h;
  h.field(to_resolved_yaml(c));
  return fmt::format("{:016x}", h.value());
}

std::string_view embedded_asset(std::string_view name) {
  for (const auto& a : embedded_assets())
    if (a.name == name) return a.bytes;
  fail("embedded asset '{}' is missing from this build", name);
}

}  // namespace ftune
