// Training checkpoints: output_dir/checkpoints/step-N/ holding the PEFT adapter, the AdamW
// moments (optimizer.safetensors) and trainer_state.json. Written into a temporary folder and
// renamed into place, so a crash never leaves a half checkpoint under a step-N name; the newest
// complete one is what --resume continues from, exactly (same data order, dropout masks, LR).
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "model/adapter_io.h"
#include "model/llama_model.h"
#include "train/loss_scaler.h"
#include "train/optimizer.h"

namespace ftune {

struct TrainerState {
  int64_t global_step = 0;     // optimizer steps done
  int64_t epoch = 0;           // current epoch (0-based)
  int64_t batch_in_epoch = 0;  // micro-batches of that epoch's GLOBAL list already consumed
                               // (by all ranks): a resume may use another process count
  int64_t world_size = 1;      // processes of the run that wrote it (for information)
  int64_t tokens_seen = 0;
  double elapsed_s = 0;
  std::string config_fingerprint;  // refuses to resume a different job
  LossScalerState loss_scaler;     // float16 runs: the dynamic loss scale and skipped steps
};

// Writes checkpoints/step-N atomically and prunes to keep_last (0 = keep all). Returns its path.
std::string save_checkpoint(const std::string& output_dir, LoraWeights& lora, const AdamW& opt,
                            const TrainerState& state, const AdapterMeta& meta, int64_t keep_last);

// The newest complete checkpoint folder under output_dir/checkpoints, if any.
std::optional<std::string> latest_checkpoint(const std::string& output_dir);

// The config fingerprint a checkpoint was written with ("" when none).
std::string checkpoint_fingerprint(const std::string& dir);
// The number of processes of the run that wrote it (1 for checkpoints that do not say).
int64_t checkpoint_world_size(const std::string& dir);

// Loads adapter weights, optimizer moments and state from a checkpoint folder into `lora`/`opt`.
TrainerState load_checkpoint(const std::string& dir, LoraWeights& lora, AdamW& opt);

}  // namespace ftune
