// The planner behind `ftune plan` and `train.micro_batch_size: auto`: for a model shape, a LoRA
// config, a sequence length and the GPUs, which micro-batch, gradient accumulation,
// checkpointing mode and weight format fit in memory (model/memory_model.h), and which of those
// runs fastest (model/flop_model.h turned into time by the calibration below).
//
// Time model of one micro-batch of N tokens on one GPU:
//   t = N * (gemm_flops / R_gemm + attention_flops / R_attn + elementwise_bytes / B)
//       + kernels * t_launch  (+ NF4 dequantization when the base is 4-bit)
// and of one optimizer step: accumulation * t + AdamW traffic / B + the gradient all-reduce.
// R_attn is measured: ftune's flash kernels in the llama-3.2-1b profile (3.85 TFLOP in 26.5 ms);
// cuDNN's SDPA grows with the document length S as R_inf S / (S + S_half): 300 TFLOP/s at 2k
// (the llama-3-8b 2x2048 profile: 7.70 TFLOP of causal attention in 25.6 ms) and about 520 at
// 64k (what the llama-3-8b offload runs at 16k, 32k and 64k imply: 475, 504, 521), all in
// docs/BENCHMARKS.md; R_gemm and B are fitted by least squares to the three H200 measurements
// with cuDNN attention (llama-3.2-1b 4x2048 no checkpointing 82,390 tokens/s, llama-3-8b 2x2048
// checkpointing 12,280 and no checkpointing 16,504), which the model then reproduces within
// 0.5% (tests/unit/test_planner.cpp). t_launch, the NF4 dequantization and the
// all-reduce bandwidth are assumptions, not measured yet.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "model/flop_model.h"
#include "model/memory_model.h"

namespace ftune {

struct ThroughputCalibration {
  double gemm_flops_per_s = 674e12;       // fitted (H200, bf16, cuBLASLt)
  double attention_flops_per_s = 534e12;  // cuDNN SDPA's rate for long documents (H200, hd 128)
  double attention_half_rate_tokens = 1600;  // document length at half that rate (fitted)
  double flash_attention_flops_per_s = 145e12;  // measured (H200, ftune's flash kernels, hd 64)
  double elementwise_bytes_per_s = 1.915e12;  // fitted: effective, includes small-kernel losses
  double launch_s = 4e-6;                 // assumed minimum time per kernel
  double allreduce_bytes_per_s = 200e9;   // assumed NCCL bus bandwidth between GPUs
  const char* device = "H200";
};
const ThroughputCalibration& h200_calibration();

enum class PlanChoice : uint8_t { Auto, On, Off };

struct PlanRequest {
  ModelSpec spec;
  LoraSpec lora;
  int64_t seq_len = 2048;
  BackendKind backend = BackendKind::Cuda;
  DType dtype = DType::BF16;
  int gpus = 1;                 // data-parallel processes, one per GPU (each holds the model)
  int64_t device_memory = 0;    // bytes each device may use
  int64_t micro_batch = 0;      // > 0: fixed; 0: searched
  int64_t effective_batch = 0;  // sequences per optimizer step over all GPUs; 0: not fixed
  int64_t accumulation = 1;     // gradient accumulation when effective_batch is 0
  PlanChoice checkpointing = PlanChoice::Auto;
  bool offload = false;  // checkpointing means `offload` (saved inputs in pinned host memory)
  PlanChoice load_in_4bit = PlanChoice::Auto;
  // The base's decoder layers sharded over the GPUs (distributed.shard_base); only with gpus > 1.
  PlanChoice shard_base = PlanChoice::Off;
  // model.fp8_base: FP8 projections (memory only: the speed model stays the bf16 one, an upper
  // bound on the step time). Never with NF4 or a sharded base.
  bool fp8_base = false;
  // bf16/fp16 attention through cuDNN (its speed and workspace) rather than ftune's flash
  // kernels: gpu_attention_uses_cudnn() for this build.
  bool cudnn_attention = false;
  int64_t max_micro_batch = 1024;  // largest micro-batch searched
};

struct PlanCandidate {
  int64_t micro_batch = 1;
  int64_t accumulation = 1;
  bool checkpointing = false;
  bool load_in_4bit = false;
  bool fp8_base = false;
  bool shard_base = false;
  int gpus = 1;
  MemoryEstimate memory;
  bool fits = false;
  double step_s = 0;        // one optimizer step (predicted, calibration device)
  double tokens_per_s = 0;  // over all GPUs (predicted, calibration device)
};

struct Plan {
  PlanRequest request;
  std::vector<PlanCandidate> candidates;  // every configuration evaluated
  int best = -1;                          // fastest that fits; -1: nothing fits
  const PlanCandidate* best_candidate() const {
    return best < 0 ? nullptr : &candidates[static_cast<size_t>(best)];
  }
};

// Evaluates every allowed configuration. Throws ftune::Error for an impossible request (an
// effective batch not divisible by the GPU count, non-positive sizes).
Plan make_plan(const PlanRequest& req);

// Predicted seconds of one optimizer step of candidate c (memory not needed).
// The attention FLOP/s the time model uses for req (its seq_len, cuDNN or the flash kernels).
double attention_rate(const PlanRequest& req, const ThroughputCalibration& cal);
double predict_step_seconds(const PlanRequest& req, const PlanCandidate& c,
                            const ThroughputCalibration& cal = h200_calibration());

// The largest micro-batch that fits with the request's checkpointing and 4-bit settings (both
// must be On or Off), with its accumulation; throws ftune::Error naming the memory figures when
// even micro-batch 1 does not fit, and the knobs that would help.
PlanCandidate largest_fitting_micro_batch(const PlanRequest& req);

}  // namespace ftune
