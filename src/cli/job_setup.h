// Turns a validated TrainConfig into the pieces of a job: the backend, the tokenizer, the model
// (an HF folder or the built-in tiny model) with its LoRA adapter, the data options and the
// training-loop options. Shared by `ftune train` and `ftune eval`.
#pragma once
#include <memory>
#include <string>

#include "backend/ops.h"
#include "data/prepare_data.h"
#include "io/tokenizer.h"
#include "model/llama_model.h"
#include "train/config.h"
#include "train/train_loop.h"

namespace ftune {

// "auto" picks CUDA when built with it and a GPU is present, else the CPU.
std::unique_ptr<Ops> make_ops(const std::string& device);

// The dtype base weights and activations are stored in (model.dtype): auto = bfloat16 on GPUs
// that have it (compute capability 8.0+), float32 on the CPU and older GPUs. bfloat16 on the CPU
// and float16 throw ftune::Error with the reason (float16 training would need dynamic loss
// scaling, which ftune does not have; the error says to use bfloat16 or float32).
DType compute_dtype(const std::string& model_dtype, const Ops& ops);

// Writes the built-in tiny model as an HF folder (config.json, model.safetensors, tokenizer
// files) into dir, so it can be reloaded, evaluated and used as the adapter's base.
void write_builtin_model(const std::string& dir, uint64_t seed);

// The folder holding the base model of a config (model.path, or output_dir/base_model for the
// built-in model, written on first use).
std::string resolve_model_dir(const TrainConfig& cfg);

LoraSpec lora_spec_from_config(const TrainConfig& cfg);
DataOptions data_options_from_config(const TrainConfig& cfg, const std::string& tokenizer_dir);
TrainLoopOptions loop_options_from_config(const TrainConfig& cfg);

// The model shape a config trains: model.path's config.json, or the built-in tiny model's.
ModelSpec model_spec_of(const TrainConfig& cfg);

// Resolves train.micro_batch_size: auto to the planner's largest micro-batch that fits in
// `device_memory` bytes (or train.memory_budget_gib) per device with the config's
// checkpointing and weight format (train/planner.h), and train.effective_batch_size to
// gradient_accumulation_steps = effective / (micro x world). Prints one line saying what it
// chose when `log`. Throws ftune::Error with the memory figures when nothing fits, and when the
// effective batch does not split evenly. Returns cfg unchanged when neither key is in use.
TrainConfig resolve_batch_plan(const TrainConfig& cfg, int world, bool gpu, int64_t device_memory,
                               bool log);

// Whether the base's decoder layers are sharded across the `world` ranks
// (distributed.shard_base; auto: when the whole model's predicted need exceeds the rank's
// memory cap, distributed.max_memory_gib or else `device_memory` bytes, 0 = unknown), with one
// line saying why. Refuses a rank whose predicted need (in the chosen mode) exceeds its
// max_memory_gib, naming the figures, and combinations that cannot work (train.sample_prompts
// generate on rank 0 alone, which a sharded base cannot).
struct ShardDecision {
  bool shard = false;
  std::string note;  // "" when there is nothing to say
};
ShardDecision decide_shard_base(const TrainConfig& cfg, int world, int rank, bool gpu,
                                int64_t device_memory);
// Refuses what a sharded base cannot do (train.sample_prompts).
void check_sharded_base_config(const TrainConfig& cfg);

// A fingerprint of what must not change between a run and its resume (world_size: processes
// of the run; the global window accumulation x world_size is what counts).
std::string config_fingerprint(const TrainConfig& cfg, int world_size = 1);

}  // namespace ftune
