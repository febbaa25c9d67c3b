#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "core/error.h"

namespace ftune {

Trainer::Trainer(LlamaModel& model, TrainerOptions opts, GradientSync* sync)
    : model_(model),
      opts_(std::move(opts)),
      sync_(sync),
      params_(model.lora().params()),
      optimizer_(model.ops(), params_, opts_.adamw, model.lora().flat_params,
                 model.lora().flat_grads),
      scaler_(opts_.loss_scaling) {
  opts_.schedule.validate();
  FTUNE_CHECK(opts_.max_grad_norm >= 0, "trainer: max_grad_norm must be >= 0, got {}",
              opts_.max_grad_norm);
}

StepStats Trainer::step(const std::vector<Batch>& window,
                         const std::function<bool()>& stop_request, int64_t passes) {
  FTUNE_CHECK(sync_ || !window.empty(), "trainer: empty accumulation window");
  LocalWindow local;
  for (const Batch& b : window) local.trained_tokens += count_trained_tokens(b);
  // Single process: the count is known from the labels before any forward, so each backward is
  // scaled by 1/count directly. Distributed: the GradientSync decides (aggregation modes).
  if (!sync_)
    FTUNE_CHECK(local.trained_tokens > 0, "trainer: the accumulation window has no trained "
                "tokens (every label is -100)");
  // float16: the loss gradient is scaled up so that small gradients survive in fp16, and the
  // gradients scaled back before clipping (train/loss_scaler.h).
  const double loss_scale = scaler_.scale();
  const float grad_scale = static_cast<float>(
      loss_scale * (sync_ ? sync_->backward_scale(local.trained_tokens)
                          : 1.0 / static_cast<double>(local.trained_tokens)));

  model_.lora().zero_grad();
  const auto t0 = std::chrono::steady_clock::now();
  // The window's loss stays on the device until the window ends (no synchronisation per batch);
  // reading it waits for the window's work, so compute_s covers the GPU time too.
  Tensor loss_dev = model_.loss_accumulator();
  const size_t total =
      model_.sharded() ? std::max(window.size(), static_cast<size_t>(std::max<int64_t>(passes, 0)))
                       : window.size();
  for (size_t i = 0; i < total; ++i) {
    // The last micro-batch's backward finishes each layer's gradients: a sync may reduce them
    // while the earlier layers' backward goes on.
    if (sync_ && i + 1 == total) model_.set_grads_ready_hook(sync_->grads_ready_hook());
    if (i >= window.size()) {  // sharded base: keep step with the ranks that have more
      model_.idle_pass(true);
      continue;
    }
    model_.forward_backward_accumulate(window[i], grad_scale, loss_dev);
    local.input_tokens += window[i].tokens();
  }
  model_.set_grads_ready_hook(nullptr);
  local.loss_sum = loss_dev.to(Device::cpu()).data<double>()[0];
  local.micro_batches = static_cast<int64_t>(window.size());
  local.compute_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  local.stop_request = stop_request && stop_request();
  StepStats st;
  GlobalWindow global{local.trained_tokens, local.loss_sum, local.input_tokens, {}, {}, {}, {}};
  global.stop_requests = local.stop_request ? 1 : 0;
  if (sync_) {
    global = sync_->finish_window(local);
    FTUNE_CHECK(global.trained_tokens > 0, "trainer: the accumulation window has no trained "
                "tokens on any rank (every label is -100)");
  }
  if (scaler_.enabled()) {
    FTUNE_CHECK(model_.lora().flat_grads.defined(), "trainer: loss scaling needs the flat "
                "gradient buffer");
    model_.ops().scale(model_.lora().flat_grads, static_cast<float>(1.0 / loss_scale));
  }
  st.grad_norm =
      clip_grad_norm(model_.ops(), params_, opts_.max_grad_norm, model_.lora().flat_grads);
  st.lr = opts_.schedule.lr(global_step());
  st.loss_scale = scaler_.enabled() ? loss_scale : 0.0;
  // Every rank holds the same gradients here, hence the same norm and the same decision.
  st.skipped = !scaler_.update(std::isfinite(st.grad_norm));
  if (!st.skipped) optimizer_.step(st.lr);
  st.step = global_step();
  st.loss = global.loss_sum / static_cast<double>(global.trained_tokens);
  st.trained_tokens = global.trained_tokens;
  st.input_tokens = global.input_tokens;
  st.stop_requested = global.stop_requests > 0;
  st.memory_mib = std::move(global.memory_mib);
  st.peak_memory_mib = std::move(global.peak_memory_mib);
  if (!sync_) {  // one process: the tensor memory of the model's device (allocator accounting)
    const MemoryStats m = memory_stats(model_.ops().device().type);
    st.memory_mib = {static_cast<double>(m.live_bytes) / 1048576.0};
    st.peak_memory_mib = {static_cast<double>(m.peak_bytes) / 1048576.0};
  }
  st.micro_batches = std::move(global.micro_batches);
  st.compute_s = std::move(global.compute_s);
  if (sync_) sync_->after_step(st.step, optimizer_);
  return st;
}

StepLoss Trainer::evaluate(const std::vector<Batch>& batches, int64_t passes) {
  StepLoss acc;
  for (const Batch& b : batches) {
    const StepLoss l = model_.forward(b);
    acc.loss_sum += l.loss_sum;
    acc.count += l.count;
  }
  if (model_.sharded())
    for (int64_t i = static_cast<int64_t>(batches.size()); i < passes; ++i) model_.idle_pass(false);
  return sync_ ? sync_->reduce_eval(acc) : acc;
}

}  // namespace ftune
