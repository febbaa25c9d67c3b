// The data-parallel GradientSync (train/trainer.h): combines the ranks' LoRA gradients through
// a Communicator according to distributed.aggregation, and reduces a step's scalars (trained
// tokens, loss, input tokens, per-rank memory) in ONE collective.
//
// With S_r = d(sum of rank r's token losses)/dθ, n_r its trained tokens, N = Σ n_r and A the
// ranks with n_r > 0, every rank ends the step holding
//   token_mean  Σ_r S_r / N                      (= one process on the union of the windows)
//   mean        (1/|A|) Σ_{r∈A} S_r / n_r        (mean of per-rank mean gradients)
//   weighted    Σ_{r∈A} w_r S_r / n_r / Σ_{r∈A} w_r    (w = distributed.rank_weights)
//   median      coordinate-wise median over r∈A of S_r / n_r (all-gather; for an even count
//               the mean of the two middle values)
// Each rank's backward is scaled by what it can know alone (1, 1/n_r or w_r/n_r); the global
// factor is applied after the reduction. The gradient norm is then computed on identical
// gradients, so the logged norm is the global one.
//
// Gradients are reduced in per-layer buckets, last layer first (the order backward finishes
// them). A bucket is a layer's element range of the flat gradient buffer (LoraWeights keeps it
// in reverse layer order), so nothing is staged or copied. For token_mean, mean and weighted the
// sum is linear, so each bucket's all-reduce starts as soon as the backward of the window's last
// micro-batch has finished that layer (Communicator::all_reduce_sum_async, while the earlier
// layers' backward goes on); finish_window waits for them and applies the global factor to the
// whole buffer at once. median needs the step's counts first and runs in finish_window.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "model/lora.h"
#include "train/trainer.h"

namespace ftune {

enum class Aggregation { token_mean, mean, weighted, median };
// "token_mean" | "mean" | "weighted" | "median"; throws for anything else.
Aggregation parse_aggregation(std::string_view name);

// One layer's gradients, reduced as one message: a view of its range of lora.flat_grads.
struct GradBucket {
  int layer = 0;
  Tensor grads;  // F32 [numel]
};

// Buckets of `lora`'s gradients, one per layer with trainable parameters, last layer first.
// Needs the flat layout (LoraWeights::allocate/init).
std::vector<GradBucket> layer_buckets(LoraWeights& lora);

struct SyncOptions {
  Aggregation aggregation = Aggregation::token_mean;
  std::vector<double> rank_weights;  // weighted: one per rank
  int64_t verify_every = 0;          // consistency checksum every this many steps (0 = never)
  bool overlap_reduce = true;        // reduce buckets during backward (not for median)
  // Non-empty: trace the communication of every step (Communicator::set_tracing) and append it
  // to this file as one JSON line per step: the spans, and how much of the reduce time fell
  // before the backward ended (FTUNE_COMM_TRACE in ftune train).
  std::string trace_path;
};

// The overlap of one traced step: `reduce_ms` of async collectives in total, of which
// `overlapped_ms` ran before the last compute mark (the end of backward).
struct OverlapSummary {
  double reduce_ms = 0, overlapped_ms = 0, backward_end_ms = 0;
  int reduces = 0, marks = 0;
};
OverlapSummary summarize_overlap(const std::vector<CommSpan>& spans);

// Memory of this process in MiB: (in use, peak). Host RSS by default.
using MemoryProbe = std::function<std::pair<double, double>()>;
std::pair<double, double> host_memory_mib();

class DataParallelSync : public GradientSync {
 public:
  DataParallelSync(Communicator& comm, Ops& ops, LoraWeights& lora, SyncOptions opts,
                   MemoryProbe memory = host_memory_mib);

  int rank() const override { return comm_.rank(); }
  int world_size() const override { return comm_.world_size(); }
  double backward_scale(int64_t local_trained_tokens) override;
  std::function<void(int layer)> grads_ready_hook() override;
  GlobalWindow finish_window(const LocalWindow& local) override;
  StepLoss reduce_eval(const StepLoss& local) override;
  void after_step(int64_t step, const AdamW& optimizer) override;

 private:
  bool overlaps() const {
    return opts_.overlap_reduce && opts_.aggregation != Aggregation::median;
  }
  // Starts the reductions of every bucket up to (and including) layer `layer`, in bucket order.
  void start_buckets_through(int layer);
  void median_bucket(GradBucket& b, const std::vector<double>& counts);

  Communicator& comm_;
  Ops& ops_;
  LoraWeights& lora_;
  SyncOptions opts_;
  MemoryProbe memory_;
  std::vector<GradBucket> buckets_;
  size_t started_ = 0;  // buckets whose reduction started in this window
  std::vector<CommSpan> trace_;  // the last window's (trace_path set)
};

}  // namespace ftune
