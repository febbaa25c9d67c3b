// The `ftune` subcommands. Each returns the process exit code; errors are thrown as
// ftune::Error and turned into one-line messages by main().
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace ftune {

struct TrainArgs {
  std::string config;                  // YAML file; "" = the embedded default job
  std::vector<std::string> overrides;  // "section.key=value"
  bool resume = false;
  std::string gpus;                    // --gpus N|all|0,2,3 ("" = FTUNE_GPUS, else the config)
  int nproc = 0;                       // --nproc N CPU workers (0 = from the config)
  int nnodes = 0;                      // --nnodes (0 = from the config)
  int node_rank = -1;                  // --node-rank (-1 = from the config)
  std::string master_addr;             // --master-addr
  int master_port = -1;                // --master-port
  std::vector<std::string> argv;       // the whole command line (workers re-run it)
  std::string worker_exe;              // binary the workers exec ("" = this program)
};
int cmd_train(const TrainArgs& args);

struct EvalArgs {
  std::string model;    // HF folder
  std::string adapter;  // PEFT adapter folder, optional
  std::string data;     // JSON/JSONL file
  std::string format = "auto";
  std::string chat_template = "auto";
  int64_t max_seq_length = 2048;
  int64_t batch_size = 4;
  std::string device = "auto";
};
int cmd_eval(const EvalArgs& args);

struct GenerateArgs {
  std::string model;                  // HF folder (tokenizer.json, config.json, weights)
  std::string adapter;                // PEFT adapter folder, optional
  std::optional<std::string> prompt;  // --prompt TEXT (exclusive with chat)
  bool chat = false;                  // --chat: interactive, user lines from stdin
  int64_t max_new_tokens = 256;
  double temperature = 0.0;           // 0 = greedy
  double top_p = 1.0;
  int64_t top_k = 0;
  uint64_t seed = 0;
  std::string device = "auto";
  std::string chat_template;          // "" = raw --prompt / auto for --chat
  std::string system;                 // system message
  bool json = false;                  // one JSON object per reply (ids), no streaming
};
int cmd_generate(const GenerateArgs& args);

int cmd_doctor();

struct BenchArgs {
  std::string preset = "llama-3.2-1b";
  int64_t batch = 4;
  int64_t seq = 2048;
  int64_t steps = 10;
  int64_t warmup = 3;
  int64_t lora_r = 16;
  bool checkpointing = false;
  bool offload = false;  // checkpointing with the saved layer inputs in pinned host memory
  bool nf4 = false;      // QLoRA: projections in NF4 (double quantization)
  bool fp8 = false;      // model.fp8_base: projections in FP8 E4M3, GEMMs on FP8 tensor cores
  // > 0: the timed steps cycle over this many fixed batches (the adapter memorises them, so the
  // loss falls: a loss curve to compare precisions on); 0: a fresh random batch every step.
  int64_t repeat_batches = 0;
  double lr = 2e-4;
  bool profile = false;
  std::string dtype = "auto";
  std::string device = "auto";
  double peak_tflops = 790.0;  // dense bf16 rate the MFU is relative to (H200, measured)
};
int cmd_bench(const BenchArgs& args);

struct MergeArgs {
  std::string model;    // HF folder
  std::string adapter;  // PEFT adapter folder
  std::string out;      // output HF folder
  std::string dtype;    // bf16|fp16|fp32; "" = the base config's torch_dtype
  std::string max_shard_size = "5GB";
  bool overwrite = false;
};
int cmd_merge(const MergeArgs& args);

struct ExportArgs {
  std::string model;
  std::string adapter;  // optional, merged on the fly
  std::string out;      // FILE.gguf
  std::string format = "gguf";
  std::string type = "f16";  // f16|bf16|q8_0|q4_k_m
  bool overwrite = false;
};
int cmd_export(const ExportArgs& args);

struct PlanArgs {
  std::string config;            // YAML file (or preset)
  std::string preset;            // model preset (presets.h)
  std::string gpus;              // N, all, or ids ("" = 1)
  double gpu_memory_gib = 0;     // > 0: plan for GPUs of this size instead of querying
  int64_t seq = 0;               // 0 = data.max_seq_length (preset: 2048)
  int64_t batch = 0;             // micro-batch; 0 = searched
  int64_t lora_r = 16;           // preset: LoRA rank on all seven projections
  std::string checkpointing = "auto";  // auto, on, off
  std::string load_in_4bit = "auto";   // auto, on, off
  std::string shard_base = "auto";     // auto, on, off (several GPUs only)
  bool fp8 = false;                    // FP8 base (model.fp8_base; a config's value counts too)
  std::string device = "auto";   // auto/cuda: GPUs; cpu: the CPU backend
  bool json = false;
};
int cmd_plan(const PlanArgs& args);

}  // namespace ftune
