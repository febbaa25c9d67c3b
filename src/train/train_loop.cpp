#include "train/train_loop.h"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cmath>
#include <filesystem>
#include <fmt/format.h>
#include <memory>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/shard.h"
#include "model/merge.h"
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

EpochBatches epoch_of(const TrainData& data, int64_t epoch) {
  if (data.epoch) return data.epoch(epoch);
  FTUNE_CHECK(static_cast<bool>(data.epoch_batches), "train: TrainData has no batches");
  auto all = std::make_shared<std::vector<Batch>>(data.epoch_batches(epoch));
  return {static_cast<int64_t>(all->size()), [all](int64_t i) { return (*all)[static_cast<size_t>(i)]; }};
}

}  // namespace

TrainSummary run_training(LlamaModel& model, const TrainLoopOptions& opts, const TrainData& data,
                          GradientSync* sync) {
  FTUNE_CHECK(opts.gradient_accumulation_steps >= 1, "train: gradient_accumulation_steps must be >= 1");
  const int rank = sync ? sync->rank() : 0;
  const int world = sync ? sync->world_size() : 1;
  // A window of the global micro-batch list: accumulation steps x ranks (HF's global batch).
  const int64_t accum = opts.gradient_accumulation_steps * world;
  (void)split_by_weights(0, opts.shard_weights, world);  // checks the weights up front
  std::vector<double> shard_weights = opts.shard_weights;
  // Auto shard weights: micro-batches and compute seconds per rank over the first steps.
  std::vector<double> measured_batches(static_cast<size_t>(world), 0.0),
      measured_s(static_cast<size_t>(world), 0.0);
  int64_t measured_steps = 0;
  EpochBatches epoch_batches = epoch_of(data, 0);
  FTUNE_CHECK(epoch_batches.size > 0, "train: the training set yields no batches");
  // Packing a new order each epoch may give a slightly different number of rows, so the plan
  // counts every epoch's windows.
  int64_t total = opts.max_steps;
  if (total <= 0) {
    total = steps_per_epoch(epoch_batches.size, accum);
    for (int64_t e = 1; e < opts.num_epochs; ++e) total += steps_per_epoch(epoch_of(data, e).size, accum);
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
  state.world_size = world;
  if (opts.resume) {
    auto ck = latest_checkpoint(opts.output_dir);
    FTUNE_CHECK(ck.has_value(), "--resume: no checkpoint in {}/checkpoints", opts.output_dir);
    const std::string fp = checkpoint_fingerprint(*ck);
    FTUNE_CHECK(opts.config_fingerprint.empty() || fp.empty() || fp == opts.config_fingerprint,
                "--resume: {} was written by a different configuration (model, data, LoRA or "
                "batch settings changed; it ran {} process(es), this run {}: with another process "
                "count keep train.gradient_accumulation_steps x processes the same)",
                *ck, checkpoint_world_size(*ck), world);
    state = load_checkpoint(*ck, model.lora(), trainer.optimizer());
    trainer.loss_scaler().load_state(state.loss_scaler);
    if (state.epoch != 0) epoch_batches = epoch_of(data, state.epoch);
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
    if (main && opts.samples) {
      for (const auto& [prompt, text] : opts.samples()) {
        progress.message(fmt::format("sample step {}: {} -> {}", step,
                                     nlohmann::json(prompt).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                                     nlohmann::json(text).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)));
        if (jsonl) jsonl->log_sample(step, prompt, text, elapsed());
      }
    }
    if (data.validation.empty()) return -1;
    const auto [vb, ve] = window_share(0, static_cast<int64_t>(data.validation.size()),
                                       shard_weights, rank, world);
    const StepLoss l = trainer.evaluate(
        std::vector<Batch>(data.validation.begin() + vb, data.validation.begin() + ve),
        most_share(0, static_cast<int64_t>(data.validation.size()), shard_weights, world));
    if (opts.on_progress) opts.on_progress(step);
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
    state.world_size = world;
    state.elapsed_s = elapsed();
    state.loss_scaler = trainer.loss_scaler().state();
    const std::string dir = save_checkpoint(opts.output_dir, model.lora(), trainer.optimizer(),
                                            state, opts.adapter_meta, opts.save_total_limit);
    progress.message("saved checkpoint " + dir);
    return dir;
  };
  // A stop request seen by any rank stops every rank at the same step boundary: with several
  // ranks the decision is the vote reduced with the last step's scalars (the same on every
  // rank; a signal arriving after it is seen one step later), alone the signal itself.
  bool stop_voted = false;
  auto stop_signal = [&]() -> int {
    const int sig = interrupt_signal();
    if (!sync) return sig;
    if (!stop_voted) return 0;
    return sig != 0 ? sig : SIGTERM;  // stopped by another rank's signal
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
    if (state.batch_in_epoch >= epoch_batches.size) {
      ++state.epoch;
      state.batch_in_epoch = 0;
      epoch_batches = epoch_of(data, state.epoch);
    }
    const int64_t begin = state.batch_in_epoch;
    const int64_t end = std::min<int64_t>(begin + accum, epoch_batches.size);
    const auto [mine_begin, mine_end] = window_share(begin, end, shard_weights, rank, world);
    std::vector<Batch> window;
    for (int64_t i = mine_begin; i < mine_end; ++i) {
      window.push_back(epoch_batches.at(i));
      window.back().step = state.global_step;  // the dropout key (core/batch.h)
      window.back().global_index = i;
    }
    const auto ts = std::chrono::steady_clock::now();
    const StepStats st = trainer.step(window, [] { return interrupt_signal() != 0; },
                                      most_share(begin, end, shard_weights, world));
    stop_voted = st.stop_requested;
    if (main && st.skipped)
      progress.message(fmt::format("step {}: gradients overflowed in float16 at loss scale {:g}; "
                                   "update skipped, scale now {:g}",
                                   st.step, st.loss_scale, trainer.loss_scaler().scale()));
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - ts).count();
    state.batch_in_epoch = end;
    state.global_step = st.step;
    if (opts.on_progress) opts.on_progress(st.step);
    if (opts.auto_shard_steps > 0 && measured_steps < opts.auto_shard_steps &&
        st.compute_s.size() == static_cast<size_t>(world)) {
      for (size_t r = 0; r < measured_s.size(); ++r) {
        measured_batches[r] += st.micro_batches[r];
        measured_s[r] += st.compute_s[r];
      }
      if (++measured_steps == opts.auto_shard_steps) {
        // Every rank computes the same weights from the same reduced numbers. A rank that got
        // no micro-batch keeps the mean throughput of the others.
        std::vector<double> w(static_cast<size_t>(world), 0.0);
        double sum = 0;
        int known = 0;
        for (size_t r = 0; r < w.size(); ++r)
          if (measured_batches[r] > 0 && measured_s[r] > 0) {
            w[r] = measured_batches[r] / measured_s[r];
            sum += w[r];
            ++known;
          }
        if (known > 0) {
          for (double& x : w)
            if (x == 0) x = sum / known;
          shard_weights = w;
          if (main)
            progress.message(fmt::format("auto shard weights after {} steps (micro-batches/s per "
                                         "rank): [{:.3g}]",
                                         measured_steps, fmt::join(w, ", ")));
        }
      }
    }
    const int64_t tokens = st.input_tokens;
    state.tokens_seen += tokens;
    summary.trained_tokens += st.trained_tokens;
    if (summary.steps == 0) summary.first_loss = st.loss;
    summary.final_loss = st.loss;
    ++summary.steps;
    const double epoch_f = static_cast<double>(state.epoch) +
                           static_cast<double>(state.batch_in_epoch) / static_cast<double>(epoch_batches.size);
    const double tps = dt > 0 ? static_cast<double>(tokens) / dt : 0;
    if (!std::isfinite(st.loss))
      fail("train: loss is {} at step {} (learning rate too high?); last checkpoint kept",
           st.loss, st.step);
    if (main) {
      const double mem = st.memory_mib.empty() ? -1 : *std::max_element(st.memory_mib.begin(), st.memory_mib.end());
      const double peak = st.peak_memory_mib.empty()
                              ? -1
                              : *std::max_element(st.peak_memory_mib.begin(), st.peak_memory_mib.end());
      progress.update(st.step, st.loss, st.lr, st.grad_norm, tps, mem, peak);
      summary.peak_memory_mib = std::max(summary.peak_memory_mib, peak);
      summary.memory_device = model.ops().device().is_cpu() ? "host tensor" : "GPU tensor";
      if (opts.logging_steps > 0 && (st.step % opts.logging_steps == 0 || st.step == total)) {
        if (jsonl) jsonl->log_step({st.step, epoch_f, st.loss, st.lr, st.grad_norm, tokens, tps,
                                    elapsed(), st.memory_mib, st.peak_memory_mib});
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
    if (opts.save_merged) {
      MergeOptions mo;
      mo.model_dir = opts.adapter_meta.base_model_name_or_path;
      mo.adapter_dir = summary.adapter_dir;
      mo.out_dir = opts.output_dir + "/merged";
      mo.overwrite = true;  // a resumed or overwritten run replaces its own merged model
      merge_lora(mo);
      summary.merged_dir = mo.out_dir;
    }
  }
  return summary;
}

}  // namespace ftune
