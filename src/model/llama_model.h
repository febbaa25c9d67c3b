// The Llama-family decoder (llama, mistral, qwen2) with LoRA, forward and hand-written backward,
// layer by layer, over packed micro-batches (core/batch.h). HF reference: LlamaForCausalLM in
// transformers/models/llama/modeling_llama.py. With checkpointing only each layer's input is
// kept and the layer is recomputed during backward.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "backend/ops.h"
#include "core/batch.h"
#include "model/lora.h"
#include "model/model_spec.h"
#include "model/weights.h"

namespace ftune {

struct StepLoss {
  double loss_sum = 0.0;  // sum of token losses
  int64_t count = 0;      // trained tokens
  double mean() const { return count > 0 ? loss_sum / static_cast<double>(count) : 0.0; }
};

struct ModelOptions {
  bool gradient_checkpointing = false;
  int64_t ce_chunk_tokens = 1024;  // rows of logits computed at once by lm_head + CE
};

class LlamaModel {
 public:
  LlamaModel(ModelSpec spec, BaseWeights base, Ops& ops, ModelOptions opts = {});

  // Loads config.json + safetensors from an HF folder (sharded or not).
  static LlamaModel from_hf_folder(const std::string& dir, Ops& ops, ModelOptions opts = {});

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
  // Forward only (evaluation); logits [N, V] written when logits != nullptr.
  StepLoss forward(const Batch& batch, Tensor* logits = nullptr);


 private:
  struct LayerCache;
  struct BatchInputs;
  BatchInputs prepare(const Batch& batch);
  void layer_forward(int l, const Tensor& x, const BatchInputs& in, LayerCache& c, Tensor& out,
                     bool keep);
  void layer_backward(int l, const BatchInputs& in, LayerCache& c, Tensor& dx);
  StepLoss run(const Batch& batch, float grad_scale, bool backward, Tensor* logits);
  void ensure_rope(int64_t positions);
  float dropout() const;
  uint64_t dropout_seed(int layer, Proj p) const;

  ModelSpec spec_;
  BaseWeights base_;
  Ops& ops_;
  ModelOptions opts_;
  std::unique_ptr<LoraWeights> lora_;
  std::vector<float> inv_freq_;
  Tensor rope_cos_, rope_sin_;
  int64_t rope_positions_ = 0;
  // Dropout key of the batch being run (Batch::step, Batch::global_index): masks differ per
  // step and micro-batch yet repeat on recomputation, whatever the rank.
  int64_t dropout_step_ = 0;
  int64_t dropout_index_ = 0;
  bool training_ = false;  // dropout only while training
};

}  // namespace ftune
