// The training loop around Trainer: epochs of micro-batches grouped into accumulation windows,
// LR schedule over the planned total, logging (console, metrics.jsonl, TensorBoard), periodic
// evaluation, checkpoints and exact resume, and the final PEFT adapter in output_dir/adapter.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "core/batch.h"
#include "model/adapter_io.h"
#include "model/llama_model.h"
#include "train/trainer.h"

namespace ftune {

struct TrainLoopOptions {
  std::string output_dir = "outputs";
  int64_t max_steps = -1;  // > 0 wins over num_epochs
  int64_t num_epochs = 1;
  int64_t gradient_accumulation_steps = 1;
  int64_t warmup_steps = 0;
  double warmup_ratio = 0.0;
  int64_t logging_steps = 1;
  int64_t eval_steps = 0;  // 0 = at the end only
  int64_t save_steps = 0;  // 0 = at the end only
  int64_t save_total_limit = 0;
  // Also write output_dir/merged (model/merge.h) from adapter_meta.base_model_name_or_path.
  bool save_merged = false;
  bool resume = false;
  bool tensorboard = true;
  bool jsonl = true;
  std::string console = "auto";
  std::string config_fingerprint;
  TrainerOptions trainer;  // schedule.total_steps/warmup_steps are filled by the loop
  AdapterMeta adapter_meta;
  bool is_main_process = true;  // rank 0 writes logs, checkpoints and the adapter
  // Distributed runs: share of each global window per rank (empty = equal; data/shard.h).
  std::vector<double> shard_weights;
  // > 0: after this many steps, shard weights = each rank's measured micro-batches per second.
  int64_t auto_shard_steps = 0;
  // Called after every step and evaluation (the worker's heartbeat to its launcher).
  std::function<void(int64_t step)> on_progress;
  bool save_on_interrupt = true;  // SIGINT/SIGTERM: checkpoint at the step boundary (signals.h)
  // train.sample_prompts: called on the main process at every evaluation (and at the end);
  // returns (prompt, completion) pairs, printed and logged to metrics.jsonl.
  std::function<std::vector<std::pair<std::string, std::string>>()> samples;
};

// One epoch's GLOBAL micro-batches, built on demand: a rank builds only those it trains.
struct EpochBatches {
  int64_t size = 0;
  std::function<Batch(int64_t index)> at;
};

struct TrainData {
  // The GLOBAL micro-batches of one epoch (deterministic in the epoch number, the same on every
  // rank); with a GradientSync each rank trains its share of every window (data/shard.h):
  // windows hold gradient_accumulation_steps x world micro-batches. Set `epoch` (lazy), or
  // `epoch_batches` (the whole list, for small data and tests); `epoch` wins.
  std::function<EpochBatches(int64_t epoch)> epoch;
  std::function<std::vector<Batch>(int64_t epoch)> epoch_batches;
  std::vector<Batch> validation;  // global as well; each rank evaluates its share
};

struct TrainSummary {
  int64_t steps = 0;
  double first_loss = 0;
  double final_loss = 0;       // loss of the last step
  double eval_loss = -1;       // < 0: no validation data
  int64_t trained_tokens = 0;  // over the run (this session)
  double seconds = 0;
  std::string adapter_dir;
  std::string merged_dir;  // train.save_merged: output_dir/merged
  double peak_memory_mib = -1;   // largest tensor-memory peak of any rank (< 0: not measured)
  std::string memory_device;     // "GPU" or "host"
  int interrupted = 0;         // the signal that stopped the run at a step boundary, or 0
  std::string checkpoint_dir;  // the checkpoint written when interrupted ("" when none)
};

TrainSummary run_training(LlamaModel& model, const TrainLoopOptions& opts, const TrainData& data,
                          GradientSync* sync = nullptr);

}  // namespace ftune
