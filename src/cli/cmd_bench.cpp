// `ftune bench`: N training steps of a model preset (random weights made on the device, random
// token rows like the peer benchmark ../shared/peer/hf_lora_bench.py: one document per row,
// labels = ids), printing tokens/s, model TFLOP/s and MFU, peak device memory, and, with
// --profile, where a step's time goes (each op timed by ProfilingOps). One JSON line
// ("RESULT {...}") carries the numbers for scripts (bench/).
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>

#include "backend/gpu.h"
#include "backend/profiling_ops.h"
#include "cli/commands.h"
#include "cli/job_setup.h"
#include "core/error.h"
#include "model/presets.h"
#include "train/trainer.h"

namespace ftune {

namespace {

// FLOPs of one training step per token, counted as the model's work (recomputation excluded):
// the frozen base needs forward (2 flops per weight) and the input gradient (2 more), no weight
// gradient; LoRA needs all three (6 per parameter); causal attention over a row of S tokens
// averages S/2 keys per query: forward QKᵀ and PV are 2·2·(S/2)·hd per head, backward 2.5x that.
double flops_per_token(const ModelSpec& s, int64_t lora_params, int64_t seq) {
  double base = 0;
  for (Proj p : kAllProj) {
    const auto sh = s.proj_shape(p);
    base += static_cast<double>(sh[0]) * static_cast<double>(sh[1]);
  }
  base *= static_cast<double>(s.num_layers);
  base += static_cast<double>(s.vocab_size) * static_cast<double>(s.hidden_size);  // lm_head
  const double attn_fwd = 2.0 * static_cast<double>(seq) * static_cast<double>(s.num_heads) *
                          static_cast<double>(s.head_dim) * static_cast<double>(s.num_layers);
  return 4.0 * base + 6.0 * static_cast<double>(lora_params) + 3.5 * attn_fwd;
}

Batch random_batch(int64_t rows, int64_t seq, int64_t vocab, std::mt19937_64& rng) {
  Batch b;
  b.rows = rows;
  b.seq_len = seq;
  std::uniform_int_distribution<int32_t> u(0, static_cast<int32_t>(vocab - 1));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < seq; ++i) {
      const int32_t id = u(rng);
      b.input_ids.push_back(id);
      b.labels.push_back(id);
      b.position_ids.push_back(static_cast<int32_t>(i));
      b.doc_start.push_back(static_cast<int32_t>(r * seq));
    }
  }
  return b;
}

double gib(int64_t bytes) { return static_cast<double>(bytes) / (1024.0 * 1024.0 * 1024.0); }

}  // namespace

int cmd_bench(const BenchArgs& a) {
  FTUNE_CHECK(a.batch >= 1 && a.seq >= 2 && a.steps >= 1 && a.warmup >= 0,
              "bench: --batch >= 1, --seq >= 2, --steps >= 1 and --warmup >= 0 are required");
  const ModelSpec spec = preset_spec(a.preset);
  auto ops = make_ops(a.device);
  const bool gpu = !ops->device().is_cpu();
  DType dt = DType::F32;
  if (a.dtype == "auto") {
    if (gpu) {
      const GpuRuntimeInfo info = query_gpus();
      const int idx = ops->device().index;
      dt = (idx < static_cast<int>(info.devices.size()) && info.devices[idx].cc_major >= 8)
               ? DType::BF16
               : DType::F32;
    }
  } else if (a.dtype == "bfloat16") {
    dt = DType::BF16;
  } else if (a.dtype == "float16") {
    dt = DType::F16;
  } else {
    FTUNE_CHECK(a.dtype == "float32", "bench: --dtype {} (auto, bfloat16, float16, float32)",
                a.dtype);
  }
  ModelOptions mo;
  mo.dtype = dt;
  mo.gradient_checkpointing = a.checkpointing || a.offload;
  mo.offload_checkpoints = a.offload;
  mo.fp8_base = a.fp8;
  FTUNE_CHECK(!(a.fp8 && a.nf4), "bench: --fp8 and --4bit exclude each other (one base format)");
  const auto t_load = std::chrono::steady_clock::now();
  LlamaModel model(spec, random_base_weights_on(spec, 1234, 0.02f, ops->device(), dt, a.nf4), *ops, mo);
  LoraSpec ls;
  ls.r = a.lora_r;
  ls.alpha = static_cast<double>(a.lora_r);
  model.attach_lora(LoraWeights::init(spec, ls, ops->device()));
  ops->synchronize();
  const double init_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();

  TrainerOptions to;
  to.schedule.base_lr = a.lr;
  to.schedule.total_steps = a.warmup + a.steps + 1;
  to.max_grad_norm = 0.0;  // as the peer: no clipping
  Trainer trainer(model, to);
  std::mt19937_64 rng(99);
  for (int64_t i = 0; i < a.warmup; ++i)
    trainer.step({random_batch(a.batch, a.seq, spec.vocab_size, rng)});
  ops->synchronize();
  reset_peak_memory(ops->device().type);
  std::vector<Batch> batches;
  for (int64_t i = 0; i < a.steps; ++i) {
    if (a.repeat_batches > 0 && i >= a.repeat_batches)
      batches.push_back(batches[static_cast<size_t>(i % a.repeat_batches)]);
    else
      batches.push_back(random_batch(a.batch, a.seq, spec.vocab_size, rng));
  }
  const int64_t cudnn_calls = gpu_cudnn_attention_calls();
  const auto t0 = std::chrono::steady_clock::now();
  StepStats last;
  std::vector<double> losses;
  for (const Batch& b : batches) {
    last = trainer.step({b});
    if (a.repeat_batches > 0) losses.push_back(last.loss);  // (reads the loss back: a sync)
  }
  ops->synchronize();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const MemoryStats mem = memory_stats(ops->device().type);
  // Which attention the timed steps ran: cuDNN counts its calls; the rest is ftune's own.
  const char* attention = !gpu                                     ? "cpu"
                          : gpu_cudnn_attention_calls() > cudnn_calls ? "cudnn"
                          : dt == DType::F32                       ? "cuda-fp32"
                                                                   : "flash";

  const double tokens = static_cast<double>(a.batch * a.seq * a.steps);
  const double tok_s = tokens / secs;
  const double tflops = flops_per_token(spec, model.lora().num_params(), a.seq) * tok_s / 1e12;
  const double mfu = gpu ? tflops / a.peak_tflops : 0.0;
  std::printf("bench: %s%s %s batch %lld x %lld, %s, %lld steps: %.0f tokens/s, %.1f TFLOP/s "
              "(MFU %.1f%% of %.0f), peak %.2f GiB, loss %.4f, init %.1f s, attention %s\n",
              a.preset.c_str(), a.nf4 ? " (NF4)" : a.fp8 ? " (FP8 base)" : "", dtype_name(dt).data(),
              static_cast<long long>(a.batch), static_cast<long long>(a.seq),
              a.offload ? "offloaded checkpointing" : a.checkpointing ? "checkpointing" : "no checkpointing",
              static_cast<long long>(a.steps), tok_s, tflops, 100 * mfu, a.peak_tflops,
              gib(mem.peak_bytes), last.loss, init_s, attention);

  std::string profile_json;
  if (a.profile) {
    ProfilingOps prof(*ops);
    // The same model, timed op by op: rebuild the trainer over a model bound to the decorator.
    LlamaModel pm(spec, model.base(), prof, mo);
    pm.attach_lora(LoraWeights::init(spec, ls, ops->device()));
    Trainer pt(pm, to);
    pt.step({batches[0]});
    prof.reset();
    const auto p0 = std::chrono::steady_clock::now();
    pt.step({batches[0]});
    prof.synchronize();
    const double total =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - p0).count();
    double in_ops = 0;
    std::string parts;
    for (size_t c = 0; c < static_cast<size_t>(OpCategory::kCount); ++c) {
      const double s = prof.totals().seconds[c];
      in_ops += s;
      std::printf("  %-12s %8.2f ms  %5.1f%%  (%lld calls)\n",
                  op_category_name(static_cast<OpCategory>(c)), 1e3 * s, 100 * s / total,
                  static_cast<long long>(prof.totals().calls[c]));
      parts += fmt::format("{}\"{}_ms\": {:.3f}", parts.empty() ? "" : ", ",
                           op_category_name(static_cast<OpCategory>(c)), 1e3 * s);
    }
    std::printf("  %-12s %8.2f ms  %5.1f%%  (host work, uploads, launches between ops)\n",
                "other", 1e3 * (total - in_ops), 100 * (total - in_ops) / total);
    std::printf("  profiled step %.2f ms (ops synchronized one by one; plain step %.2f ms)\n",
                1e3 * total, 1e3 * secs / static_cast<double>(a.steps));
    profile_json = fmt::format(", \"profile\": {{{}, \"other_ms\": {:.3f}, \"step_ms\": {:.3f}}}",
                               parts, 1e3 * (total - in_ops), 1e3 * total);
  }
  std::string losses_json;
  if (!losses.empty())
    losses_json = fmt::format(", \"losses\": [{:.5f}]", fmt::join(losses, ", "));
  profile_json += losses_json;
  std::printf("RESULT {\"engine\": \"ftune\", \"shape\": \"%s\", \"dtype\": \"%s\", \"batch\": %lld, "
              "\"seq\": %lld, \"gc\": %s, \"offload\": %s, \"nf4\": %s, \"fp8\": %s, \"steps\": %lld, \"tok_s\": %.0f, \"tflops\": %.1f, "
              "\"mfu\": %.4f, \"peak_gib\": %.2f, \"peak_reserved_gib\": %.2f, \"loss\": %.4f, \"step_s\": %.4f, \"init_s\": %.1f, \"attention\": \"%s\"%s}\n",
              a.preset.c_str(), dtype_name(dt).data(), static_cast<long long>(a.batch),
              static_cast<long long>(a.seq), a.checkpointing || a.offload ? "true" : "false",
              a.offload ? "true" : "false", a.nf4 ? "true" : "false", a.fp8 ? "true" : "false",
              static_cast<long long>(a.steps), tok_s, tflops, mfu, gib(mem.peak_bytes),
              gib(mem.peak_reserved_bytes), last.loss,
              secs / static_cast<double>(a.steps), init_s, attention, profile_json.c_str());
  return 0;
}

}  // namespace ftune
