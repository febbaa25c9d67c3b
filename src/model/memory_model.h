// How much memory one training process needs, counted from what the code allocates: the frozen
// base weights (weights.cpp: fuse_base_weights), the LoRA state (lora.cpp flat buffers,
// train/optimizer.cpp), the activations LlamaModel::run keeps per layer with and without
// checkpointing (llama_model.cpp: LayerCache, layer_backward), and the backend's workspaces
// (backend/cuda: cuBLASLt, flash-attention backward, lm_head + cross-entropy chunks).
//
// The figure `tensor_peak()` is what ftune's allocator accounting reports as peak tensor memory
// (core/tensor.h memory_stats: `peak_memory_mib` in metrics.jsonl, `peak` of `ftune bench`).
// The peak of a step is reached in the backward of the last layer: every kept activation is
// still alive, plus the final norm's tensors, the running input gradient and the largest set
// of backward temporaries. Every tensor alive there is listed (MemoryItem), so the allocator's
// rounding can be counted tensor by tensor as well.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "model/lora.h"
#include "model/model_spec.h"

namespace ftune {

enum class BackendKind : uint8_t { Cpu, Cuda };

struct MemoryModelInput {
  ModelSpec spec;
  LoraSpec lora;                        // targets, r, dropout (dropout keeps more per layer)
  int64_t micro_batch = 1;              // rows per forward/backward
  int64_t seq_len = 2048;               // tokens per row (a full row: the worst case)
  bool checkpointing = false;           // keep only each layer's input, recompute in backward
  bool offload = false;                 // with checkpointing on CUDA: those inputs in pinned host
                                        // memory (train.gradient_checkpointing: offload)
  bool load_in_4bit = false;            // NF4 projections (embeddings, lm_head, norms stay dtype)
  bool fp8_base = false;                // FP8 projections (1 byte per weight) and their codes
  DType dtype = DType::F32;             // base weights and activations (F32 on the CPU)
  BackendKind backend = BackendKind::Cpu;
  int64_t ce_chunk_tokens = 0;          // ModelOptions::ce_chunk_tokens (0 = its default)
  int world_size = 1;                   // > 1: NCCL buffers on each GPU
  bool shard_base = false;              // decoder layers sharded over world_size ranks
                                        // (model/sharded_layers.h): 1/N of each + 2 gathered
  int64_t mlp_chunk_tokens = 0;         // ModelOptions::mlp_chunk_tokens (0 = its default)
  bool cudnn_attention = false;         // bf16/fp16 attention through cuDNN (its workspace
                                        // instead of the flash kernels'): gpu_attention_uses_cudnn()
};

// What a part of the memory is made of: `count` tensors (or buffers) of `bytes` each.
struct MemoryItem {
  std::string part;  // "base weights", "lora", "activations", "workspace", "host workspace"
  std::string name;  // e.g. "layer cache: gu [N, 2F]"
  int64_t bytes = 0;
  int64_t count = 1;
  int64_t total() const { return bytes * count; }
};

struct MemoryEstimate {
  std::vector<MemoryItem> items;  // every tensor alive at the peak (and host-side buffers)

  // Parts (bytes). Tensor-accounted parts first; their sum is tensor_peak().
  int64_t base_weights = 0;
  int64_t lora_params = 0;        // F32 masters + compute-dtype copies
  int64_t lora_grads = 0;         // F32
  int64_t optimizer_state = 0;    // AdamW m and v, F32
  int64_t activations = 0;        // kept + temporaries at the peak, batch inputs, RoPE tables
  int64_t attention_workspace = 0;
  int64_t lm_head_ce_workspace = 0;
  int64_t gemm_workspace = 0;     // cuBLASLt
  int64_t fp8_workspace = 0;      // FP8 base: a transposed weight and gradient codes in backward
  // Not in the tensor accounting:
  int64_t host_workspaces = 0;    // CPU backend: std::vector scratch of the CE and attention ops
  int64_t pinned_host = 0;        // CUDA offload: pinned host buffers of the saved layer inputs
                                  // (host memory, not in any device figure)
  int64_t allocator_overhead = 0; // CUDA caching allocator: size-class rounding + cached blocks
  int64_t cuda_context = 0;       // CUDA context, cuBLAS/cuBLASLt handles, kernels (+ NCCL)

  // Activation detail, bytes per token.
  int64_t layer_cache_per_token = 0;  // what one layer keeps besides its input (full cache)
  int64_t boundary_per_token = 0;     // one layer input (residual stream)
  int64_t kept_per_token = 0;         // everything kept across layers at the peak
  int64_t transient_per_token = 0;    // the largest set of backward temporaries

  int64_t tensor_peak() const;   // what memory_stats(...).peak_bytes reports
  int64_t device_total() const;  // what the device must hold: tensor_peak + the rest
};

MemoryEstimate estimate_memory(const MemoryModelInput& in);

// Constants of the parts that are not counted from ftune's own allocations (docs/CONFIG.md,
// "ftune plan"): assumptions until measured.
inline constexpr int64_t kCudaContextBytes = int64_t{768} << 20;  // context + cuBLAS(Lt) + kernels
inline constexpr int64_t kNcclBuffersBytes = int64_t{512} << 20;  // per GPU when world_size > 1
inline constexpr double kAllocatorCacheFraction = 0.05;  // cached blocks of other size classes
// NF4 (bitsandbytes layout): 64 weights per block, one F32 absmax per block.
inline constexpr int64_t kNf4BlockSize = 64;

// Bytes of one NF4-packed matrix of `numel` weights: two per byte plus the block absmax.
int64_t nf4_bytes(int64_t numel);

}  // namespace ftune
