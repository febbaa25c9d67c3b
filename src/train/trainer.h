// One optimizer step over an accumulation window of micro-batches, token-weighted:
// the window's loss is sum(token losses over all its micro-batches [and ranks]) divided by the
// total count of trained tokens there (not a mean of per-micro-batch means). The count is known
// before any forward (from the labels), so each backward is scaled by 1/count directly.
// A GradientSync (src/dist) hooks in between backward and the optimizer step.
#pragma once
#include <functional>
#include <vector>

#include "core/batch.h"
#include "model/llama_model.h"
#include "train/loss_scaler.h"
#include "train/lr_schedule.h"
#include "train/optimizer.h"

namespace ftune {

// What one rank contributes to an optimizer step, known before any communication.
struct LocalWindow {
  int64_t trained_tokens = 0;  // targets that are not -100, this rank's micro-batches
  double loss_sum = 0.0;       // sum of their token losses
  int64_t input_tokens = 0;    // tokens fed through the model
  int64_t micro_batches = 0;   // micro-batches trained
  double compute_s = 0.0;      // seconds spent in forward/backward
  bool stop_request = false;   // this rank was asked to stop (SIGINT/SIGTERM: train/signals.h)
};

// The step over all ranks: the result of the step's one scalar reduction.
struct GlobalWindow {
  int64_t trained_tokens = 0;
  double loss_sum = 0.0;
  int64_t input_tokens = 0;
  std::vector<double> memory_mib;       // per rank: memory in use at the end of backward
  std::vector<double> peak_memory_mib;  // per rank: peak so far
  std::vector<double> micro_batches;    // per rank: micro-batches of this step
  std::vector<double> compute_s;        // per rank: forward/backward seconds of this step
  int64_t stop_requests = 0;            // ranks that asked to stop (the same on every rank)
};

// Implemented by the distributed layer (src/dist/gradient_sync.h); the single-process trainer
// uses none. The trainer calls, per step: backward_scale (local, no communication), backward
// of every micro-batch with that scale, finish_window (one scalar reduction + the gradient
// combination; afterwards every rank holds the same gradients), the optimizer, after_step.
class GradientSync {
 public:
  virtual ~GradientSync() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // The factor this rank's backward multiplies d(sum of token losses) by, from its own count.
  virtual double backward_scale(int64_t local_trained_tokens) = 0;
  // Called before the backward of the window's last micro-batch. A sync that reduces while
  // backward goes on returns the callback the model calls as each layer's gradients become
  // final (LlamaModel::set_grads_ready_hook); nullptr = everything happens in finish_window.
  virtual std::function<void(int layer)> grads_ready_hook() { return nullptr; }
  // Combines the gradients in place and returns the global totals.
  virtual GlobalWindow finish_window(const LocalWindow& local) = 0;
  // (loss_sum, count) summed over ranks, in one call.
  virtual StepLoss reduce_eval(const StepLoss& local) = 0;
  // After the optimizer update of step `step` (1-based): consistency checks.
  virtual void after_step(int64_t step, const AdamW& optimizer) {}
};

struct TrainerOptions {
  LrSchedule schedule;
  AdamWOptions adamw;
  double max_grad_norm = 1.0;  // 0 = no clipping
  LossScalerOptions loss_scaling;  // float16: dynamic loss scaling (train/loss_scaler.h)
};

struct StepStats {
  int64_t step = 0;             // optimizer steps done after this one (1-based)
  double loss = 0.0;            // token-weighted mean over the window (all ranks)
  double grad_norm = 0.0;       // before clipping
  double lr = 0.0;              // used for this step
  int64_t trained_tokens = 0;   // over the window, all ranks
  int64_t input_tokens = 0;     // tokens fed through the model, all ranks
  std::vector<double> memory_mib, peak_memory_mib;  // per rank (distributed runs only)
  std::vector<double> micro_batches, compute_s;     // per rank (distributed runs only)
  bool stop_requested = false;  // some rank asked to stop (decided alike on every rank)
  // Dynamic loss scaling (float16): the gradients overflowed and the update was skipped; the
  // scale used for this step.
  bool skipped = false;
  double loss_scale = 0.0;  // 0 = no scaling
};

class Trainer {
 public:
  Trainer(LlamaModel& model, TrainerOptions opts, GradientSync* sync = nullptr);

  // `window`: this rank's micro-batches of the step (may be empty on a rank of a distributed
  // run whose share of the global window is empty).
  // `stop_request` (may be empty) is asked once the window's compute is done; its answer
  // travels with the step's scalar reduction, so every rank learns whether any rank must stop
  // (StepStats::stop_requested) without a collective of its own.
  // `passes`: with a sharded base (LlamaModel::shard_base) every rank must run as many passes
  // as the rank with the most micro-batches: the missing ones run as idle passes (gathers
  // only), and the grads-ready hook goes with the last pass. Ignored otherwise.
  StepStats step(const std::vector<Batch>& window,
                 const std::function<bool()>& stop_request = nullptr, int64_t passes = 0);
  // Mean loss over batches without gradients (evaluation), token-weighted, all ranks
  // (`passes` as for step).
  StepLoss evaluate(const std::vector<Batch>& batches, int64_t passes = 0);

  AdamW& optimizer() { return optimizer_; }
  LossScaler& loss_scaler() { return scaler_; }
  // Steps taken: optimizer updates plus updates skipped for overflow (float16), which advance
  // the learning-rate schedule as in HF's Trainer.
  int64_t global_step() const { return optimizer_.steps_taken() + scaler_.skipped_steps(); }
  const TrainerOptions& options() const { return opts_; }

 private:
  LlamaModel& model_;
  TrainerOptions opts_;
  GradientSync* sync_;
  std::vector<LoraWeights::Param> params_;
  AdamW optimizer_;
  LossScaler scaler_;
};

}  // namespace ftune
