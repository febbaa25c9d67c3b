// One optimizer step over an accumulation window of micro-batches, token-weighted:
// the window's loss is sum(token losses over all its micro-batches [and ranks]) divided by the
// total count of trained tokens there (not a mean of per-micro-batch means). The count is known
// before any forward (from the labels), so each backward is scaled by 1/count directly.
// A GradientSync (src/dist) hooks in between backward and the optimizer step.
#pragma once
#include <vector>

#include "core/batch.h"
#include "model/llama_model.h"
#include "train/lr_schedule.h"
#include "train/optimizer.h"

namespace ftune {

// Implemented by the distributed layer; the single-process trainer uses none.
class GradientSync {
 public:
  virtual ~GradientSync() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // Sum of `v` over all ranks.
  virtual double all_reduce_sum(double v) = 0;
  // Sums the gradients over all ranks in place.
  virtual void all_reduce_grads(const std::vector<Tensor*>& grads) = 0;
};

struct TrainerOptions {
  LrSchedule schedule;
  AdamWOptions adamw;
  double max_grad_norm = 1.0;  // 0 = no clipping
};

struct StepStats {
  int64_t step = 0;             // optimizer steps done after this one (1-based)
  double loss = 0.0;            // token-weighted mean over the window (all ranks)
  double grad_norm = 0.0;       // before clipping
  double lr = 0.0;              // used for this step
  int64_t trained_tokens = 0;   // over the window, all ranks
  int64_t input_tokens = 0;     // tokens fed through the model (this rank)
};

class Trainer {
 public:
  Trainer(LlamaModel& model, TrainerOptions opts, GradientSync* sync = nullptr);

  StepStats step(const std::vector<Batch>& window);
  // Mean loss over batches without gradients (evaluation), token-weighted, all ranks.
  StepLoss evaluate(const std::vector<Batch>& batches);

  AdamW& optimizer() { return optimizer_; }
  int64_t global_step() const { return optimizer_.steps_taken(); }
  const TrainerOptions& options() const { return opts_; }

 private:
  LlamaModel& model_;
  TrainerOptions opts_;
  GradientSync* sync_;
  std::vector<LoraWeights::Param> params_;
  AdamW optimizer_;
};

}  // namespace ftune
