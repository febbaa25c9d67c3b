#include "train/trainer.h"

#include "core/error.h"

namespace ftune {

Trainer::Trainer(LlamaModel& model, TrainerOptions opts, GradientSync* sync)
    : model_(model),
      opts_(std::move(opts)),
      sync_(sync),
      params_(model.lora().params()),
      optimizer_(model.ops(), params_, opts_.adamw, model.lora().flat_params,
                 model.lora().flat_grads) {
  opts_.schedule.validate();
  FTUNE_CHECK(opts_.max_grad_norm >= 0, "trainer: max_grad_norm must be >= 0, got {}",
              opts_.max_grad_norm);
}

StepStats Trainer::step(const std::vector<Batch>& window) {
  FTUNE_CHECK(!window.empty(), "trainer: empty accumulation window");
  int64_t local_count = 0;
  for (const Batch& b : window) local_count += count_trained_tokens(b);
  const double total = sync_ ? sync_->all_reduce_sum(static_cast<double>(local_count))
                             : static_cast<double>(local_count);
  FTUNE_CHECK(total > 0, "trainer: the accumulation window has no trained tokens (every label "
              "is -100)");
  const float grad_scale = static_cast<float>(1.0 / total);

  model_.lora().zero_grad();
  StepStats st;
  // The window's loss stays on the device until the step ends (no synchronisation per batch).
  Tensor loss_dev = model_.loss_accumulator();
  for (const Batch& b : window) {
    model_.forward_backward_accumulate(b, grad_scale, loss_dev);
    st.input_tokens += b.tokens();
  }
  double loss_sum = loss_dev.to(Device::cpu()).data<double>()[0];
  if (sync_) {
    std::vector<Tensor*> grads;
    for (auto& p : params_) grads.push_back(p.grad);
    sync_->all_reduce_grads(grads);
    loss_sum = sync_->all_reduce_sum(loss_sum);
  }
  st.grad_norm =
      clip_grad_norm(model_.ops(), params_, opts_.max_grad_norm, model_.lora().flat_grads);
  st.lr = opts_.schedule.lr(optimizer_.steps_taken());
  optimizer_.step(st.lr);
  st.step = optimizer_.steps_taken();
  st.loss = loss_sum / total;
  st.trained_tokens = static_cast<int64_t>(total);
  return st;
}

StepLoss Trainer::evaluate(const std::vector<Batch>& batches) {
  StepLoss acc;
  for (const Batch& b : batches) {
    const StepLoss l = model_.forward(b);
    acc.loss_sum += l.loss_sum;
    acc.count += l.count;
  }
  if (sync_) {
    acc.loss_sum = sync_->all_reduce_sum(acc.loss_sum);
    acc.count = static_cast<int64_t>(sync_->all_reduce_sum(static_cast<double>(acc.count)));
  }
  return acc;
}

}  // namespace ftune
