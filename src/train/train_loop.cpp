#include "train/train_loop.h"

#include <chrono>
#include <csignal>
#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <memory>

#include "core/error.h"
#include "train/checkpoint.h"
#include "train/metrics_jsonl.h"
#include "train/progress.h"
#include "train/resume_logs.h"
#include "train/signals.h"
#include "train/tensorboard_writer.h"

namespace ftune {

namespace fs = std::filesystem;

namespace {

int64_t steps_per_epoch(int64_t batches, int64_t accum) { return (batches + accum - 1) / accum; }

}  // namespace

TrainSummary run_training(LlamaModel& model, const TrainLoopOptions& opts, const TrainData& data,
                          GradientSync* sync) {
  FTUNE_CHECK(opts.gradient_accumulation_steps >= 1, "train: gradient_accumulation_steps must be >= 1");
  const int64_t accum = opts.gradient_accumulation_steps;
  std::vector<Batch> epoch_batches = data.epoch_batches(0);
  FTUNE_CHECK(!epoch_batches.empty(), "train: the training set yields no batches");
  // Packing a new order each epoch may give a slightly different number of rows, so the plan
  // counts every epoch's windows.
  int64_t total = opts.max_steps;
  if (total <= 0) {
    total = steps_per_epoch(static_cast<int64_t>(epoch_batches.size()), accum);
    for (int64_t e = 1; e < opts.num_epochs; ++e)
      total += steps_per_epoch(static_cast<int64_t>(data.epoch_batches(e).size()), accum);
  }
  FTUNE_CHECK(total >= 1, "train: nothing to do (max_steps {}, num_epochs {})", opts.max_steps,
              opts.num_epochs);

  TrainerOptions topts = opts.trainer;
  topts.schedule.total_steps = total;
  topts.schedule.warmup_steps =
      opts.warmup_steps > 0 ? opts.warmup_steps
                            : static_cast<int64_t>(std::ceil(opts.warmup_ratio * static_cast<double>(total)));
  Trainer trainer(model, topts, sync);

  TrainerState state;
  state.config_fingerprint = opts.config_fingerprint;
  if (opts.resume) {
    auto ck = latest_checkpoint(opts.output_dir);
    FTUNE_CHECK(ck.has_value(), "--resume: no checkpoint in {}/checkpoints", opts.output_dir);
    const std::string fp = checkpoint_fingerprint(*ck);
    FTUNE_CHECK(opts.config_fingerprint.empty() || fp.empty() || fp == opts.config_fingerprint,
                "--resume: {} was written by a different configuration (model, data, LoRA or "
                "batch settings changed)",
                *ck);
    state = load_checkpoint(*ck, model.lora(), trainer.optimizer());
    model.set_forward_counter(state.forward_counter);
    if (state.epoch != 0) epoch_batches = data.epoch_batches(state.epoch);
  }

  const bool main = opts.is_main_process;
  std::unique_ptr<MetricsJsonl> jsonl;
  std::unique_ptr<TensorBoardWriter> tb;
  if (main) {
    fs::create_directories(opts.output_dir);
    remove_stale_checkpoint_temps(opts.output_dir);
    if (opts.resume) {  // the crashed run may have logged steps after its checkpoint
      truncate_metrics_jsonl(opts.output_dir + "/metrics.jsonl", state.global_step);
      truncate_tensorboard_events(opts.output_dir + "/tensorboard", state.global_step);
    }
    if (opts.jsonl) jsonl = std::make_unique<MetricsJsonl>(opts.output_dir, opts.resume);
    if (opts.tensorboard) tb = std::make_unique<TensorBoardWriter>(opts.output_dir + "/tensorboard");
  }
  ProgressPrinter progress(main ? opts.console : "none", total, state.global_step);

  const auto t0 = std::chrono::steady_clock::now();
  const double elapsed_before = state.elapsed_s;
  auto elapsed = [&] {
    return elapsed_before +
           std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  auto run_eval = [&](int64_t step, double epoch) -> double {
    if (data.validation.empty()) return -1;
    const StepLoss l = trainer.evaluate(data.validation);
    if (l.count == 0) return -1;
    const double loss = l.mean();
    if (main) {
      progress.message(fmt::format("eval step {}: loss {:.4f}, perplexity {:.3f}", step, loss,
                                   std::exp(loss)));
      if (jsonl) jsonl->log_eval({step, epoch, loss, elapsed()});
      if (tb) {
        tb->add_scalar("eval/loss", static_cast<float>(loss), step);
        tb->add_scalar("eval/perplexity", static_cast<float>(std::exp(loss)), step);
      }
    }
    return loss;
  };
  auto checkpoint = [&]() -> std::string {
    if (!main) return "";
    state.forward_counter = model.forward_counter();
    state.elapsed_s = elapsed();
    const std::string dir = save_checkpoint(opts.output_dir, model.lora(), trainer.optimizer(),
                                            state, opts.adapter_meta, opts.save_total_limit);
    progress.message("saved checkpoint " + dir);
    return dir;
  };
  // A stop request seen by any rank stops every rank at the same step boundary.
  auto stop_signal = [&]() -> int {
    int sig = interrupt_signal();
    if (sync) {
      const double any = sync->all_reduce_sum(sig != 0 ? 1.0 : 0.0);
      if (sig == 0 && any > 0) sig = SIGTERM;  // stopped by another rank's signal
    }
    return sig;
  };

  TrainSummary summary;
  double eval_loss = -1;
  bool evaluated_last = false, saved_last = false;
  while (state.global_step < total) {
    if (const int sig = stop_signal(); sig != 0) {
      summary.interrupted = sig;
      if (opts.save_on_interrupt && !saved_last && state.global_step > 0)
        summary.checkpoint_dir = checkpoint();
      else if (main && saved_last)
        summary.checkpoint_dir = latest_checkpoint(opts.output_dir).value_or("");
      progress.finish();
      if (tb) tb->flush();
      summary.seconds = elapsed();
      return summary;
    }
    if (state.batch_in_epoch >= static_cast<int64_t>(epoch_batches.size())) {
      ++state.epoch;
      state.batch_in_epoch = 0;
      epoch_batches = data.epoch_batches(state.epoch);
    }
    const int64_t begin = state.batch_in_epoch;
    const int64_t end = std::min<int64_t>(begin + accum, static_cast<int64_t>(epoch_batches.size()));
    std::vector<Batch> window(epoch_batches.begin() + begin, epoch_batches.begin() + end);
    const auto ts = std::chrono::steady_clock::now();
    const StepStats st = trainer.step(window);
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - ts).count();
    state.batch_in_epoch = end;
    state.global_step = st.step;
    const int64_t tokens = sync ? static_cast<int64_t>(sync->all_reduce_sum(static_cast<double>(st.input_tokens)))
                                : st.input_tokens;
    state.tokens_seen += tokens;
    summary.trained_tokens += st.trained_tokens;
    if (summary.steps == 0) summary.first_loss = st.loss;
    summary.final_loss = st.loss;
    ++summary.steps;
    const double epoch_f = static_cast<double>(state.epoch) +
                           static_cast<double>(state.batch_in_epoch) / static_cast<double>(epoch_batches.size());
    const double tps = dt > 0 ? static_cast<double>(tokens) / dt : 0;
    if (!std::isfinite(st.loss))
      fail("train: loss is {} at step {} (learning rate too high?); last checkpoint kept",
           st.loss, st.step);
    if (main) {
      progress.update(st.step, st.loss, st.lr, st.grad_norm, tps);
      if (opts.logging_steps > 0 && (st.step % opts.logging_steps == 0 || st.step == total)) {
        if (jsonl) jsonl->log_step({st.step, epoch_f, st.loss, st.lr, st.grad_norm, tokens, tps, elapsed()});
        if (tb) {
          tb->add_scalar("train/loss", static_cast<float>(st.loss), st.step);
          tb->add_scalar("train/learning_rate", static_cast<float>(st.lr), st.step);
          tb->add_scalar("train/grad_norm", static_cast<float>(st.grad_norm), st.step);
          tb->add_scalar("train/tokens_per_s", static_cast<float>(tps), st.step);
        }
      }
    }
    evaluated_last = saved_last = false;
    if (opts.eval_steps > 0 && st.step % opts.eval_steps == 0) {
      eval_loss = run_eval(st.step, epoch_f);
      evaluated_last = true;
    }
    if (opts.save_steps > 0 && st.step % opts.save_steps == 0 && st.step < total) {
      checkpoint();
      saved_last = true;
    }
  }
  if (summary.steps > 0) {  // (a resume of a finished run has nothing to add)
    if (!evaluated_last) eval_loss = run_eval(state.global_step, static_cast<double>(state.epoch));
    if (!saved_last) checkpoint();
  }
  progress.finish();
  if (tb) tb->flush();
  summary.eval_loss = eval_loss;
  summary.seconds = elapsed();
  if (main) {
    summary.adapter_dir = opts.output_dir + "/adapter";
    save_peft_adapter(summary.adapter_dir, model.lora(), opts.adapter_meta);
  }
  return summary;
}

}  // namespace ftune
