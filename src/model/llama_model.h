// The Llama-family decoder (llama, mistral, qwen2) with LoRA, forward and hand-written backward,
// layer by layer, over packed micro-batches (core/batch.h). HF reference: LlamaForCausalLM in
// transformers/models/llama/modeling_llama.py. With checkpointing only each layer's input is
// kept and the layer is recomputed during backward.
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/ops.h"
#include "core/batch.h"
#include "model/lora.h"
#include "model/model_spec.h"
#include "model/sharded_layers.h"
#include "model/weights.h"

namespace ftune {

struct StepLoss {
  double loss_sum = 0.0;  // sum of token losses
  int64_t count = 0;      // trained tokens
  double mean() const { return count > 0 ? loss_sum / static_cast<double>(count) : 0.0; }
};

constexpr int64_t kCeChunkTokens = 1024;
constexpr int64_t kCeChunkTokensNf4 = 256;
inline int64_t ce_chunk_rows(int64_t configured, bool nf4) {
  return configured > 0 ? configured : nf4 ? kCeChunkTokensNf4 : kCeChunkTokens;
}

// With checkpointing, the MLP of a layer is recomputed and differentiated in chunks of this many
// tokens when a micro-batch has more (LoRA dropout draws each chunk's masks at its rows of the
// whole [N, in] input, so they are the unchunked ones): its [N, 2F] and [N, F] transients, the
// largest part of a long context's peak, then exist for one chunk at a time.
constexpr int64_t kMlpChunkTokens = 8192;
inline int64_t mlp_chunk_rows(int64_t configured) {
  return configured > 0 ? configured : kMlpChunkTokens;
}

struct ModelOptions {
  bool gradient_checkpointing = false;
  // Rows of logits computed at once by lm_head + CE; 0 = kCeChunkTokens, or kCeChunkTokensNf4
  // with an NF4 base (QLoRA is run for memory: the [chunk, vocab] F32 logits are 0.49 GiB at
  // 1024 rows of Llama-3's vocabulary, 0.12 GiB at 256).
  int64_t ce_chunk_tokens = 0;
  // Storage dtype of the frozen base weights and the activations (F32 on the CPU; BF16 or F16 on
  // GPUs). LoRA weights, their gradients and the optimizer state stay F32; every GEMM and
  // reduction accumulates in fp32.
  DType dtype = DType::F32;
  // With checkpointing: the saved layer inputs wait in host memory (Ops::make_activation_stash)
  // instead of on the device, copied out and back while the GPU computes.
  bool offload_checkpoints = false;
  // QLoRA (from_hf_folder): quantize an unquantized checkpoint's projections to NF4 on load
  // (bitsandbytes layout; double_quant = bnb_4bit_use_double_quant). A bitsandbytes 4-bit
  // checkpoint loads as NF4 whatever these say.
  bool load_in_4bit = false;
  bool double_quant = true;
  // FP8 base (model.fp8_base): the dense projection matrices are quantized to F8_E4M3 with one
  // scale per matrix when the model is built (quantize_base_fp8), and their GEMMs run on FP8
  // tensor cores (base_forward / base_backward in lora.h). LoRA stays in the compute dtype.
  bool fp8_base = false;
  // Tokens per MLP chunk in the checkpointed backward (kMlpChunkTokens above); 0 = that default.
  int64_t mlp_chunk_tokens = 0;
};

class LlamaModel {
 public:
  LlamaModel(ModelSpec spec, BaseWeights base, Ops& ops, ModelOptions opts = {});

  // Loads config.json + safetensors from an HF folder (sharded or not). With `shard`, the
  // decoder layers are sharded across its ranks as they load (see shard_base).
  static LlamaModel from_hf_folder(const std::string& dir, Ops& ops, ModelOptions opts = {},
                                   ShardGatherer* shard = nullptr);

  // Shards the decoder layers across g's ranks (model/sharded_layers.h): each rank keeps 1/N of
  // every layer and gathers a layer before using it. Embeddings, lm_head and the final norm
  // stay whole on every rank. From then on every rank must run the same number of passes:
  // a rank without a micro-batch runs idle_pass() instead.
  void shard_base(ShardGatherer& g);
  bool sharded() const { return sharded_ != nullptr; }
  const ShardedLayers* sharded_layers() const { return sharded_.get(); }
  // The gathers (and, with backward, the grads-ready hook calls) of one forward(+backward)
  // pass, without computing: a sharded rank with no micro-batch left keeps step with its peers.
  // No-op when the base is not sharded.
  void idle_pass(bool backward);
  // Layer l's weights (a sharded base gathers it, prefetching `next`; -1 = none).
  const LayerWeights& layer_weights(int l, int next = -1);
  // The layer a forward pass prefetches after l (-1 after the last). run() and idle_pass()
  // acquire layers through this one order, so every rank starts the same gathers.
  int next_in_forward(int l) const { return l + 1 < spec_.num_layers ? l + 1 : -1; }
  // Bytes of the base weights this process holds on its device (a sharded base: its shards and
  // gather buffers).
  int64_t base_bytes_held() const;
  bool base_is_nf4() const;

  const ModelSpec& spec() const { return spec_; }
  const BaseWeights& base() const { return base_; }
  Ops& ops() { return ops_; }
  ModelOptions& options() { return opts_; }

  // LoRA adapters (none until attached).
  void attach_lora(LoraWeights lora);
  bool has_lora() const { return lora_ != nullptr; }
  LoraWeights& lora();

  // Forward + backward of sum(token losses) * grad_scale; LoRA grads are accumulated.
  // Returns the unscaled loss sum and count.
  StepLoss forward_backward(const Batch& batch, float grad_scale);
  // The same without a host synchronisation: the loss sum is added to loss_sum (F64 [1] on the
  // model's device, see loss_accumulator()); returns the count of trained tokens.
  int64_t forward_backward_accumulate(const Batch& batch, float grad_scale, Tensor& loss_sum);
  // A zeroed F64 [1] tensor on the model's device for forward_backward_accumulate.
  Tensor loss_accumulator() const;
  // Called by the backward of every forward_backward* as soon as layer l's LoRA gradients are
  // final for that batch (layers in backward order, last first); nullptr = none.
  void set_grads_ready_hook(std::function<void(int layer)> hook) { grads_ready_ = std::move(hook); }
  // Forward only (evaluation); logits [N, V] written when logits != nullptr.
  StepLoss forward(const Batch& batch, Tensor* logits = nullptr);


 private:
  struct LayerCache;
  struct BatchInputs;
  BatchInputs prepare(const Batch& batch);
  // recompute: the forward re-run by checkpointing during backward, which needs only what the
  // backward reads: the layer output (the down projection's base GEMM and the residual add) is
  // skipped, only the down projection's LoRA input cache is made.
  void layer_forward(int l, const LayerWeights& W, const Tensor& x, const BatchInputs& in,
                     LayerCache& c, Tensor& out, bool keep, bool recompute = false);
  void layer_backward(int l, const LayerWeights& W, const BatchInputs& in, LayerCache& c,
                      Tensor& dx);
  // The MLP's backward (with its recompute) over chunks of mlp_chunk_rows() tokens: dn2 =
  // d/d(n2) from dout = d/d(layer output); LoRA gradients accumulated.
  void mlp_backward_in_chunks(int l, const LayerWeights& W, LayerCache& c, const Tensor& dout,
                              Tensor& dn2);
  // The NF4 dequantization workspace (NF4 bases) once the weights are in place.
  void setup_nf4_workspace();
  std::vector<LoraGroupMember> group_members(int l, int group) const;
  // The base weight of a projection group as one [rows, in] matrix: the dense (fused) tensor, or
  // the NF4 weights dequantized into nf4_workspace_ (valid until the next call).
  BaseMatrix group_weight(const LayerWeights& W, int l, int group);
  // Adds the batch's loss sum to loss_sum (F64 [1] on the device); returns the trained count.
  int64_t run(const Batch& batch, float grad_scale, bool backward, Tensor* logits,
              Tensor& loss_sum);
  void ensure_rope(int64_t positions);
  float dropout() const;
  uint64_t dropout_seed(int layer, Proj p) const;

  ModelSpec spec_;
  BaseWeights base_;
  Ops& ops_;
  ModelOptions opts_;
  std::unique_ptr<LoraWeights> lora_;
  Tensor nf4_workspace_;  // NF4 models: the largest group's weight in opts_.dtype, reused
  std::vector<float> inv_freq_;
  Tensor rope_cos_, rope_sin_;
  int64_t rope_positions_ = 0;
  // Dropout key of the batch being run (Batch::step, Batch::global_index): masks differ per
  // step and micro-batch yet repeat on recomputation, whatever the rank.
  int64_t dropout_step_ = 0;
  int64_t dropout_index_ = 0;
  bool training_ = false;  // dropout only while training
  std::function<void(int)> grads_ready_;
  std::unique_ptr<ActivationStash> stash_;  // checkpointing offload (made on first use)
  std::unique_ptr<ShardedLayers> sharded_;  // shard_base: the decoder layers (base_ has none)
};

}  // namespace ftune
