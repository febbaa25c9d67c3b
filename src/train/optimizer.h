// AdamW over the LoRA parameters (fp32 moments, torch.optim.AdamW semantics) and clipping by
// global gradient norm (torch.nn.utils.clip_grad_norm_).
#pragma once
#include <string>
#include <vector>

#include "backend/ops.h"
#include "model/lora.h"

namespace ftune {

struct AdamWOptions {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

class AdamW {
 public:
  // When flat_params/flat_grads are given (LoraWeights' flat buffers, of which every param and
  // grad is a view), the moments are flat too and a step is one adamw_step over the whole buffer.
  AdamW(Ops& ops, std::vector<LoraWeights::Param> params, AdamWOptions opts,
        Tensor flat_params = {}, Tensor flat_grads = {});

  // One update with learning rate lr using the params' current gradients.
  void step(double lr);
  int64_t steps_taken() const { return step_; }

  // State for checkpoints: (name.exp_avg | name.exp_avg_sq, tensor) pairs, and the step count.
  std::vector<std::pair<std::string, Tensor>> state() const;
  void load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t steps);

 private:
  Ops& ops_;
  std::vector<LoraWeights::Param> params_;
  std::vector<Tensor> m_, v_;
  Tensor flat_params_, flat_grads_, flat_m_, flat_v_;
  AdamWOptions opts_;
  int64_t step_ = 0;
};

// sqrt(sum of squares of all gradients). flat_grads (optional): one buffer that every grad is a
// view of, reduced in one call.
double global_grad_norm(Ops& ops, const std::vector<LoraWeights::Param>& params,
                        const Tensor& flat_grads = {});
// Scales gradients by min(1, max_norm/(norm+1e-6)) like clip_grad_norm_; returns the pre-clip norm.
double clip_grad_norm(Ops& ops, const std::vector<LoraWeights::Param>& params, double max_norm,
                      const Tensor& flat_grads = {});

}  // namespace ftune
