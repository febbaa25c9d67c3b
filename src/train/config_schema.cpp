// The one table of configuration keys: path, type, default, allowed range or choices, meaning,
// and the TrainConfig field it fills. Defaults, validation, the resolved dump and the
// docs/CONFIG.md reference all read this table (config.cpp); test_config loops over it.
// Names and defaults follow HF TrainingArguments / TRL SFTConfig / PEFT LoraConfig where those
// have the same knob (e.g. adam_beta2 0.999, adam_epsilon 1e-8, max_grad_norm 1.0, seed 42).
#include <array>
#include <limits>

#include "train/config.h"

namespace ftune {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

using T = ConfigType;

#define FTUNE_FIELD(sec, name) [](TrainConfig& c) -> ConfigFieldPtr { return &c.sec.name; }

// Columns: path, type, default, min, max, max_exclusive, choices, doc, field.
constexpr std::array kSchema = {
    // ---- model ----
    ConfigKey{"model.path", T::Path, "\"\"", 0, 0, false, "",
              "Hugging Face model folder (config.json, *.safetensors, tokenizer.json); empty = "
              "built-in tiny random model",
              FTUNE_FIELD(model, path)},
    ConfigKey{"model.dtype", T::Choice, "auto", 0, 0, false, "auto|float32|bfloat16|float16",
              "storage dtype of the frozen base weights and activations (math accumulates in float32; LoRA weights and optimizer state are float32): auto = bfloat16 on GPUs with compute capability 8.0+, float32 on the CPU and older GPUs; float16 (GPU) trains with dynamic loss scaling",
              FTUNE_FIELD(model, dtype)},
    ConfigKey{"model.tokenizer", T::Path, "\"\"", 0, 0, false, "",
              "tokenizer folder or tokenizer.json; empty = model.path",
              FTUNE_FIELD(model, tokenizer)},
    ConfigKey{"model.chat_template", T::Choice, "auto", 0, 0, false,
              "auto|llama-3|llama-2|mistral|chatml|alpaca",
              "chat template for conversations; auto = the model's own Jinja template "
              "(tokenizer_config.json chat_template, or chat_template.jinja beside it), any valid "
              "template renders; or a preset holding the official template of that family",
              FTUNE_FIELD(model, chat_template)},
    ConfigKey{"model.load_in_4bit", T::Bool, "false", 0, 0, false, "",
              "QLoRA: hold the seven projections of every layer in NF4 (bitsandbytes layout, blocks of 64), quantized on load; embeddings, norms and lm_head stay in model.dtype. A bitsandbytes 4-bit (nf4) checkpoint loads as NF4 either way",
              FTUNE_FIELD(model, load_in_4bit)},
    ConfigKey{"model.bnb_4bit_use_double_quant", T::Bool, "true", 0, 0, false, "",
              "with load_in_4bit: also quantize the block scales (8-bit, blocks of 256), as bitsandbytes' double quantization",
              FTUNE_FIELD(model, bnb_4bit_use_double_quant)},
    ConfigKey{"model.fp8_base", T::Bool, "false", 0, 0, false, "",
              "hold the projections of every layer in FP8 (E4M3, one scale per matrix) and run their GEMMs on FP8 tensor cores: activations quantized to E4M3 per tensor, gradients to E5M2; halves the base weights' memory; LoRA, norms, embeddings and lm_head stay in model.dtype. GPUs with FP8 tensor cores (Hopper, Ada, Blackwell) run it fast; elsewhere it is slow but correct. Not with load_in_4bit or distributed.shard_base",
              FTUNE_FIELD(model, fp8_base)},
    ConfigKey{"model.seed", T::Int, "0", 0, kInf, false, "",
              "seed of the built-in tiny random model's weights (used when model.path is empty)",
              FTUNE_FIELD(model, seed)},
    // ---- lora ----
    ConfigKey{"lora.r", T::Int, "16", 1, 4096, false, "", "LoRA rank (PEFT r)",
              FTUNE_FIELD(lora, r)},
    ConfigKey{"lora.alpha", T::Float, "16", 0, 1e6, false, "",
              "LoRA scaling numerator (PEFT lora_alpha): scale = alpha / r",
              FTUNE_FIELD(lora, alpha)},
    ConfigKey{"lora.dropout", T::Float, "0.0", 0, 1, true, "",
              "dropout on the LoRA input (PEFT lora_dropout)", FTUNE_FIELD(lora, dropout)},
    ConfigKey{"lora.target_modules", T::List,
              "[q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]", 0, 0, false,
              "q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj",
              "projections that get adapters; the string all-linear = all seven",
              FTUNE_FIELD(lora, target_modules)},
    ConfigKey{"lora.use_rslora", T::Bool, "false", 0, 0, false, "",
              "rank-stabilized LoRA: scale = alpha / sqrt(r) (PEFT use_rslora)",
              FTUNE_FIELD(lora, use_rslora)},
    ConfigKey{"lora.init_seed", T::Int, "-1", -1, kInf, false, "",
              "seed of the LoRA A initialization; -1 = train.seed", FTUNE_FIELD(lora, init_seed)},
    // ---- data ----
    ConfigKey{"data.train", T::Path, "\"\"", 0, 0, false, "",
              "training data, JSON or JSONL file; empty = built-in debug dataset",
              FTUNE_FIELD(data, train)},
    ConfigKey{"data.validation", T::Path, "\"\"", 0, 0, false, "",
              "validation data file; empty = none (or data.validation_split)",
              FTUNE_FIELD(data, validation)},
    ConfigKey{"data.validation_split", T::Float, "0.0", 0, 0.5, false, "",
              "fraction of data.train held out for validation when data.validation is empty",
              FTUNE_FIELD(data, validation_split)},
    ConfigKey{"data.format", T::Choice, "auto", 0, 0, false,
              "auto|alpaca|sharegpt|messages|text|prompt_completion",
              "record format; auto = detected from the keys of the first record",
              FTUNE_FIELD(data, format)},
    ConfigKey{"data.max_seq_length", T::Int, "2048", 8, 1048576, false, "",
              "longest sequence in tokens (TRL max_seq_length)",
              FTUNE_FIELD(data, max_seq_length)},
    ConfigKey{"data.truncation", T::Choice, "truncate", 0, 0, false, "truncate|drop",
              "what to do with an example longer than max_seq_length: cut it, or skip it",
              FTUNE_FIELD(data, truncation)},
    ConfigKey{"data.packing", T::Bool, "true", 0, 0, false, "",
              "pack several examples into each sequence (attention stays within each example)",
              FTUNE_FIELD(data, packing)},
    ConfigKey{"data.train_on_responses_only", T::Bool, "true", 0, 0, false, "",
              "compute the loss on assistant/response tokens only (prompt tokens masked)",
              FTUNE_FIELD(data, train_on_responses_only)},
    ConfigKey{"data.shuffle", T::Bool, "true", 0, 0, false, "",
              "shuffle the training examples every epoch", FTUNE_FIELD(data, shuffle)},
    ConfigKey{"data.seed", T::Int, "42", 0, kInf, false, "",
              "seed of the shuffle and of the validation split", FTUNE_FIELD(data, seed)},
    ConfigKey{"data.cache_dir", T::String, "\"\"", 0, 0, false, "",
              "where tokenized data is cached; empty = .cache inside train.output_dir",
              FTUNE_FIELD(data, cache_dir)},
    // ---- train ----
    ConfigKey{"train.output_dir", T::String, "outputs", 0, 0, false, "",
              "folder for the adapter, checkpoints, metrics.jsonl, tensorboard/",
              FTUNE_FIELD(train, output_dir)},
    ConfigKey{"train.overwrite_output_dir", T::Bool, "false", 0, 0, false, "",
              "allow writing into an output_dir that already holds a run",
              FTUNE_FIELD(train, overwrite_output_dir)},
    ConfigKey{"train.save_on_interrupt", T::Bool, "true", 0, 0, false, "",
              "on SIGINT/SIGTERM stop at the end of the step and write a checkpoint (exit 130/143)",
              FTUNE_FIELD(train, save_on_interrupt)},
    ConfigKey{"train.max_steps", T::Int, "-1", -1, kInf, false, "",
              "optimizer steps to run; -1 = train.num_epochs epochs", FTUNE_FIELD(train, max_steps)},
    ConfigKey{"train.num_epochs", T::Int, "1", 1, 1000000, false, "",
              "passes over the training data (when max_steps is -1)",
              FTUNE_FIELD(train, num_epochs)},
    ConfigKey{"train.micro_batch_size", T::Int, "2", 1, 65536, false, "auto",
              "sequences per device per forward/backward (HF per_device_train_batch_size); auto "
              "= the largest that fits in the device's memory (ftune plan's memory model)",
              FTUNE_FIELD(train, micro_batch_size)},
    ConfigKey{"train.gradient_accumulation_steps", T::Int, "1", 1, 65536, false, "",
              "micro-batches accumulated per optimizer step",
              FTUNE_FIELD(train, gradient_accumulation_steps)},
    ConfigKey{"train.effective_batch_size", T::Int, "0", 0, kInf, false, "",
              "sequences per optimizer step over all devices (micro_batch_size x "
              "gradient_accumulation_steps x devices); when set, gradient_accumulation_steps "
              "follows from it; 0 = not set",
              FTUNE_FIELD(train, effective_batch_size)},
    ConfigKey{"train.memory_budget_gib", T::Float, "0.0", 0, kInf, false, "",
              "memory per device that micro_batch_size auto plans for; 0 = the GPU's total "
              "memory (CPU: the machine's physical memory)",
              FTUNE_FIELD(train, memory_budget_gib)},
    ConfigKey{"train.learning_rate", T::Float, "2e-4", 0, 10, false, "",
              "peak learning rate of AdamW", FTUNE_FIELD(train, learning_rate)},
    ConfigKey{"train.lr_scheduler", T::Choice, "linear", 0, 0, false, "constant|linear|cosine",
              "learning-rate decay after warmup (HF lr_scheduler_type)",
              FTUNE_FIELD(train, lr_scheduler)},
    ConfigKey{"train.warmup_steps", T::Int, "0", 0, kInf, false, "",
              "linear warmup from 0 over this many steps", FTUNE_FIELD(train, warmup_steps)},
    ConfigKey{"train.warmup_ratio", T::Float, "0.0", 0, 1, false, "",
              "warmup as a fraction of the total steps (instead of warmup_steps)",
              FTUNE_FIELD(train, warmup_ratio)},
    ConfigKey{"train.weight_decay", T::Float, "0.0", 0, 10, false, "",
              "AdamW decoupled weight decay on the LoRA weights", FTUNE_FIELD(train, weight_decay)},
    ConfigKey{"train.adam_beta1", T::Float, "0.9", 0, 1, true, "", "AdamW beta1",
              FTUNE_FIELD(train, adam_beta1)},
    ConfigKey{"train.adam_beta2", T::Float, "0.999", 0, 1, true, "", "AdamW beta2",
              FTUNE_FIELD(train, adam_beta2)},
    ConfigKey{"train.adam_epsilon", T::Float, "1e-8", 0, 1, false, "", "AdamW epsilon",
              FTUNE_FIELD(train, adam_epsilon)},
    ConfigKey{"train.max_grad_norm", T::Float, "1.0", 0, kInf, false, "",
              "clip the global gradient L2 norm to this; 0 = no clipping",
              FTUNE_FIELD(train, max_grad_norm)},
    ConfigKey{"train.gradient_checkpointing", T::Choice, "layer", 0, 0, false,
              "none|layer|offload|true|false",
              "layer = keep only each layer's input and recompute the layer in backward; offload "
              "= the same with those inputs parked in pinned host memory (copied out and back "
              "while the GPU computes; longest contexts); none = keep all activations (fastest, "
              "most memory); true = layer, false = none. With layer or offload, a micro-batch of "
              "more than 8192 tokens runs each layer's MLP in "
              "chunks of 8192 tokens (forward, recompute and backward; same result), so its "
              "[tokens, 2 x intermediate] transients never exist whole",
              FTUNE_FIELD(train, gradient_checkpointing)},
    ConfigKey{"train.seed", T::Int, "42", 0, kInf, false, "",
              "seed of the trainer (LoRA dropout masks; LoRA init when lora.init_seed is -1)",
              FTUNE_FIELD(train, seed)},
    ConfigKey{"train.eval_steps", T::Int, "0", 0, kInf, false, "",
              "evaluate every this many steps; 0 = only at the end", FTUNE_FIELD(train, eval_steps)},
    ConfigKey{"train.save_steps", T::Int, "0", 0, kInf, false, "",
              "save a checkpoint every this many steps; 0 = only at the end",
              FTUNE_FIELD(train, save_steps)},
    ConfigKey{"train.save_total_limit", T::Int, "0", 0, kInf, false, "",
              "keep at most this many checkpoints (oldest deleted first); 0 = keep all",
              FTUNE_FIELD(train, save_total_limit)},
    ConfigKey{"train.save_merged", T::Bool, "false", 0, 0, false, "",
              "at the end also write output_dir/merged: the base model with the adapter folded in "
              "(an HF folder in the base model's dtype, as ftune merge writes it)",
              FTUNE_FIELD(train, save_merged)},
    ConfigKey{"train.logging_steps", T::Int, "1", 1, kInf, false, "",
              "log metrics every this many steps", FTUNE_FIELD(train, logging_steps)},
    ConfigKey{"train.device", T::Choice, "auto", 0, 0, false, "auto|cpu|cuda",
              "where to train; auto = cuda when a GPU is present, else cpu",
              FTUNE_FIELD(train, device)},
    ConfigKey{"train.sample_prompts", T::Strings, "[]", 0, 0, false, "",
              "prompts answered greedily at every evaluation and at the end (printed and logged "
              "to metrics.jsonl as sample lines); chat data renders each as a user turn",
              FTUNE_FIELD(train, sample_prompts)},
    ConfigKey{"train.sample_max_new_tokens", T::Int, "64", 1, 4096, false, "",
              "most tokens generated per sample prompt", FTUNE_FIELD(train, sample_max_new_tokens)},
    // ---- distributed ----
    ConfigKey{"distributed.gpus", T::String, "\"1\"", 0, 0, false, "",
              "GPUs to train on, one worker process each: a count (4), all, or device ids "
              "(0,2,3); --gpus and FTUNE_GPUS set it too",
              FTUNE_FIELD(distributed, gpus)},
    ConfigKey{"distributed.nproc", T::Int, "1", 1, 1024, false, "",
              "worker processes on the CPU backend (--nproc); each gets cores/nproc threads",
              FTUNE_FIELD(distributed, nproc)},
    ConfigKey{"distributed.aggregation", T::Choice, "token_mean", 0, 0, false,
              "token_mean|mean|weighted|median",
              "how the ranks' gradients combine: by the global count of trained tokens (the "
              "one-process result), mean of per-rank means, weighted by rank_weights, or "
              "coordinate-wise median",
              FTUNE_FIELD(distributed, aggregation)},
    ConfigKey{"distributed.rank_weights", T::Numbers, "[]", 0, kInf, false, "",
              "aggregation weighted: one weight per rank (normalized over ranks with data)",
              FTUNE_FIELD(distributed, rank_weights)},
    ConfigKey{"distributed.shard_weights", T::Numbers, "[]", 0, kInf, false, "",
              "share of each step's micro-batches per rank, e.g. [1, 1, 2, 2]; empty = equal",
              FTUNE_FIELD(distributed, shard_weights)},
    ConfigKey{"distributed.auto_shard_steps", T::Int, "0", 0, kInf, false, "",
              "shard weights from measured throughput: after this many steps each rank's share "
              "follows its micro-batches per second (token_mean only); 0 = off",
              FTUNE_FIELD(distributed, auto_shard_steps)},
    ConfigKey{"distributed.backend", T::Choice, "auto", 0, 0, false, "auto|nccl|gloo",
              "communication library; auto = nccl on GPU, gloo on CPU",
              FTUNE_FIELD(distributed, backend)},
    ConfigKey{"distributed.master_addr", T::String, "\"\"", 0, 0, false, "",
              "host of rank 0 (--master-addr); empty = MASTER_ADDR from the environment, else "
              "127.0.0.1",
              FTUNE_FIELD(distributed, master_addr)},
    ConfigKey{"distributed.master_port", T::Int, "0", 0, 65535, false, "",
              "TCP port of the rendezvous (--master-port); 0 = MASTER_PORT+1 from the "
              "environment, else a free port",
              FTUNE_FIELD(distributed, master_port)},
    ConfigKey{"distributed.nnodes", T::Int, "1", 1, 65536, false, "",
              "machines of a multi-node job started by ftune's own launcher (--nnodes)",
              FTUNE_FIELD(distributed, nnodes)},
    ConfigKey{"distributed.node_rank", T::Int, "0", 0, 65535, false, "",
              "index of this machine in a multi-node job (--node-rank)",
              FTUNE_FIELD(distributed, node_rank)},
    ConfigKey{"distributed.timeout_s", T::Int, "1800", 1, 604800, false, "",
              "seconds a worker may go without progress (or a collective may wait) before "
              "the job is stopped",
              FTUNE_FIELD(distributed, timeout_s)},
    ConfigKey{"distributed.check_consistency", T::Bool, "true", 0, 0, false, "",
              "check at start that every rank has the same config, model and data (hashes)",
              FTUNE_FIELD(distributed, check_consistency)},
    ConfigKey{"distributed.verify_every", T::Int, "0", 0, kInf, false, "",
              "every this many steps compare a checksum of the LoRA weights and optimizer "
              "state across ranks; 0 = never",
              FTUNE_FIELD(distributed, verify_every)},
    ConfigKey{"distributed.shard_base", T::Choice, "auto", 0, 0, false, "auto|true|false",
              "shard the frozen base's decoder layers across the ranks (each keeps 1/N and "
              "gathers a layer before using it); auto = when the whole model would not fit the "
              "device (or distributed.max_memory_gib)",
              FTUNE_FIELD(distributed, shard_base)},
    ConfigKey{"distributed.max_memory_gib", T::Numbers, "[]", 0, kInf, false, "",
              "memory cap per rank in GiB, one value for all or one per rank (e.g. [40, 40, 80, "
              "80]); the planner and shard_base auto respect it, and a rank whose predicted "
              "need exceeds it is refused before loading; empty = the device's memory",
              FTUNE_FIELD(distributed, max_memory_gib)},
    // ---- logging ----
    ConfigKey{"logging.tensorboard", T::Bool, "true", 0, 0, false, "",
              "write TensorBoard event files to tensorboard/ inside train.output_dir",
              FTUNE_FIELD(logging, tensorboard)},
    ConfigKey{"logging.jsonl", T::Bool, "true", 0, 0, false, "",
              "write one JSON line per logged step to metrics.jsonl inside train.output_dir",
              FTUNE_FIELD(logging, jsonl)},
    ConfigKey{"logging.console", T::Choice, "auto", 0, 0, false, "auto|bar|plain|none",
              "console progress: live bar, one line per log, or nothing; auto = bar on a "
              "terminal, plain otherwise",
              FTUNE_FIELD(logging, console)},
    ConfigKey{"logging.run_name", T::String, "\"\"", 0, 0, false, "",
              "name shown in the logs; empty = the base name of train.output_dir",
              FTUNE_FIELD(logging, run_name)},
};

#undef FTUNE_FIELD

constexpr std::array<std::string_view, 6> kSections = {"model", "lora",        "data",
                                                       "train", "distributed", "logging"};

// A new TrainConfig field needs a schema row: the row count is pinned here and test_config
// checks that every row fills a distinct field.
static_assert(kSchema.size() == 73, "update the schema count when adding a config key");

}  // namespace

std::span<const ConfigKey> config_schema() { return kSchema; }
std::span<const std::string_view> config_sections() { return kSections; }

}  // namespace ftune
