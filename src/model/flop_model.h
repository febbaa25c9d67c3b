// Work of one training step, per token: the GEMM FLOPs of the frozen base (forward and the input
// gradient only: no weight gradient), of LoRA (forward and backward: A, B and input
// gradients), of causal attention (forward, and backward at 2.5x: five products against two),
// the recomputed forward when checkpointing, and the bytes the non-GEMM kernels move (norms,
// RoPE, SwiGLU, residual adds, the cross-entropy chunks). The planner (train/planner.h) turns
// these into time with rates calibrated on measured runs.
#pragma once
#include <cstdint>

#include "core/dtype.h"
#include "model/lora.h"
#include "model/model_spec.h"

namespace ftune {

struct StepCost {
  double base_gemm_flops = 0;       // projections + lm_head: 2 (forward) + 2 (input grad) per weight
  double lora_gemm_flops = 0;       // 6 per LoRA parameter
  double attention_flops = 0;       // causal QK^T and PV, forward + backward
  double recompute_gemm_flops = 0;  // checkpointing: the layer forward again, less down_proj's base GEMM
  double recompute_attention_flops = 0;
  double elementwise_bytes = 0;     // read + written by the non-GEMM kernels

  double gemm_flops() const { return base_gemm_flops + lora_gemm_flops + recompute_gemm_flops; }
  double attn_flops() const { return attention_flops + recompute_attention_flops; }
  // The model's work without recomputation (what `ftune bench` reports as model TFLOP/s).
  double model_flops() const { return base_gemm_flops + lora_gemm_flops + attention_flops; }
  double total_flops() const { return gemm_flops() + attn_flops(); }
};

// Per token of rows of seq_len tokens, each row one causal document (packed shorter documents
// attend over fewer keys: this is the upper bound). dtype: the activations' (bytes moved).
StepCost step_cost_per_token(const ModelSpec& spec, const LoraSpec& lora, int64_t seq_len,
                             bool checkpointing, DType dtype);

// Kernels one micro-batch launches, roughly (per-launch costs matter for small micro-batches).
int64_t kernels_per_micro_batch(const ModelSpec& spec, bool checkpointing);

}  // namespace ftune
