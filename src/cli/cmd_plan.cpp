// `ftune plan CONFIG|--preset NAME [--gpus N|all|0,2,3] [--gpu-memory-gib G] [--seq S]
// [--batch B] [--shard-base auto|on|off] [--json]`: the memory a training process needs, part by part, and the
// configuration (micro-batch, accumulation, checkpointing, 4-bit, GPUs) that fits and runs
// fastest, from the planner (train/planner.h). Nothing is loaded but config.json: it runs on a
// machine without the GPU when --gpu-memory-gib says how much memory each GPU has.
#include <fmt/format.h>

#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "backend/gpu.h"
#include "cli/commands.h"
#include "cli/job_setup.h"
#include "cli/memory_check.h"
#include "core/error.h"
#include "dist/rendezvous.h"
#include "model/llama_model.h"
#include "model/presets.h"
#include "train/planner.h"

namespace ftune {

namespace {

double gib(int64_t b) { return static_cast<double>(b) / static_cast<double>(int64_t{1} << 30); }

PlanChoice parse_choice(const std::string& v, const char* flag) {
  if (v == "auto") return PlanChoice::Auto;
  if (v == "on") return PlanChoice::On;
  if (v == "off") return PlanChoice::Off;
  fail("{}: expected auto, on or off, got '{}'", flag, v);
}

// GPUs named by a distributed.gpus-style selection, when it can be counted without a query.
int count_of_selection(const std::string& spec, int visible) {
  return static_cast<int>(parse_gpu_selection(spec, visible).size());
}

struct Target {
  std::string what;  // "2 x NVIDIA H200 (139.8 GiB)", "CPU (62.6 GiB)"
  BackendKind backend = BackendKind::Cuda;
  int count = 1;
  int64_t memory = 0;  // per device
};

Target find_target(const PlanArgs& a) {
  Target t;
  if (a.device == "cpu") {
    t.backend = BackendKind::Cpu;
    t.memory = a.gpu_memory_gib > 0 ? static_cast<int64_t>(a.gpu_memory_gib * (1 << 30))
                                    : static_cast<int64_t>(physical_memory_bytes());
    FTUNE_CHECK(t.memory > 0, "plan: this machine's memory is unknown; give --gpu-memory-gib");
    t.what = fmt::format("CPU process ({:.1f} GiB)", gib(t.memory));
    return t;
  }
  FTUNE_CHECK(a.device == "cuda" || a.device == "auto", "--device: expected auto, cuda or cpu, got '{}'",
              a.device);
  const std::string sel = a.gpus.empty() ? "1" : a.gpus;
  if (a.gpu_memory_gib > 0) {
    t.count = count_of_selection(sel, -1);
    t.memory = static_cast<int64_t>(a.gpu_memory_gib * static_cast<double>(int64_t{1} << 30));
    t.what = fmt::format("{} x GPU of {:.1f} GiB (given)", t.count, a.gpu_memory_gib);
    return t;
  }
  const GpuRuntimeInfo g = query_gpus();
  FTUNE_CHECK(!g.devices.empty(), "plan: no GPU found ({}); give --gpu-memory-gib G to plan for "
              "GPUs of G GiB, or --device cpu", g.error);
  const std::vector<int> ids = parse_gpu_selection(sel, static_cast<int>(g.devices.size()));
  t.count = static_cast<int>(ids.size());
  std::string name;
  for (int id : ids) {
    FTUNE_CHECK(id < static_cast<int>(g.devices.size()), "--gpus {}: device {} is not visible", sel, id);
    const GpuDevice& d = g.devices[static_cast<size_t>(id)];
    if (t.memory == 0 || d.total_bytes < t.memory) {
      t.memory = d.total_bytes;
      name = d.name;
    }
  }
  t.what = fmt::format("{} x {} ({:.1f} GiB{})", t.count, name, gib(t.memory),
                       t.count > 1 ? ", the smallest selected" : "");
  return t;
}

// Effective batch a config asks for: train.effective_batch_size, else micro x accumulation x
// the config's GPU count when the micro-batch is a number (0 when free: micro-batch auto).
int64_t config_effective_batch(const TrainConfig& cfg) {
  if (cfg.train.effective_batch_size > 0) return cfg.train.effective_batch_size;
  if (cfg.train.micro_batch_size == kAutoMicroBatch) return 0;
  int gpus = 1;
  if (cfg.distributed.gpus != "all") gpus = count_of_selection(cfg.distributed.gpus, -1);
  return cfg.train.micro_batch_size * cfg.train.gradient_accumulation_steps * gpus;
}

nlohmann::json memory_json(const MemoryEstimate& m) {
  nlohmann::json j;
  j["base_weights"] = m.base_weights;
  j["lora_params"] = m.lora_params;
  j["lora_grads"] = m.lora_grads;
  j["optimizer_state"] = m.optimizer_state;
  j["activations"] = m.activations;
  j["attention_workspace"] = m.attention_workspace;
  j["lm_head_ce_workspace"] = m.lm_head_ce_workspace;
  j["gemm_workspace"] = m.gemm_workspace;
  j["fp8_workspace"] = m.fp8_workspace;
  j["host_workspaces"] = m.host_workspaces;
  j["pinned_host"] = m.pinned_host;
  j["tensor_peak"] = m.tensor_peak();
  j["allocator_overhead"] = m.allocator_overhead;
  j["cuda_context"] = m.cuda_context;
  j["total"] = m.device_total();
  j["per_token"] = {{"layer_input", m.boundary_per_token},
                    {"layer_cache", m.layer_cache_per_token},
                    {"kept", m.kept_per_token},
                    {"backward_temporaries", m.transient_per_token}};
  return j;
}

nlohmann::json candidate_json(const PlanCandidate& c, bool gpu) {
  nlohmann::json j;
  j["micro_batch"] = c.micro_batch;
  j["gradient_accumulation_steps"] = c.accumulation;
  j["gradient_checkpointing"] = c.checkpointing;
  j["load_in_4bit"] = c.load_in_4bit;
  j["fp8_base"] = c.fp8_base;
  j["shard_base"] = c.shard_base;
  j["gpus"] = c.gpus;
  j["fits"] = c.fits;
  j["tensor_peak_bytes"] = c.memory.tensor_peak();
  j["total_bytes"] = c.memory.device_total();
  if (gpu) {
    j["tokens_per_s"] = c.tokens_per_s;
    j["step_s"] = c.step_s;
  } else {
    j["tokens_per_s"] = nullptr;
  }
  return j;
}

std::string mode_text(const PlanCandidate& c) {
  return fmt::format("{}, {}{}", c.checkpointing ? "checkpointing" : "no checkpointing",
                     c.load_in_4bit ? "NF4 base" : c.fp8_base ? "FP8 base" : "16-bit base",
                     c.shard_base ? fmt::format(" sharded /{}", c.gpus) : "");
}

void print_memory(const MemoryEstimate& m, const Plan& plan) {
  const PlanRequest& r = plan.request;
  const char* dt = r.dtype == DType::F32 ? "F32" : "bf16";
  auto line = [](const char* what, int64_t b, const std::string& note) {
    std::printf("  %-24s %9.2f GiB  %s\n", what, gib(b), note.c_str());
  };
  const PlanCandidate& c = *plan.best_candidate();
  line("base weights", m.base_weights,
       (c.load_in_4bit ? fmt::format("NF4 projections (0.5 byte/param + F32 absmax per {}), "
                                     "embeddings/lm_head/norms {}", kNf4BlockSize, dt)
        : c.fp8_base   ? fmt::format("FP8 E4M3 projections (1 byte/param + an F32 scale per "
                                     "matrix), embeddings/lm_head/norms {}", dt)
                       : std::string(dt)) +
           (c.shard_base ? fmt::format("; layers sharded over {} GPUs + 2 gathered", c.gpus) : ""));
  line("LoRA params", m.lora_params, r.dtype == DType::F32 ? "F32" : "F32 masters + bf16 copies");
  line("LoRA grads", m.lora_grads, "F32");
  line("AdamW state", m.optimizer_state, "m and v, F32");
  line("activations", m.activations,
       fmt::format("{} B/token kept ({} layer inputs of {} B, {} x {} B layer cache), {} B/token "
                   "backward temporaries",
                   m.kept_per_token, m.pinned_host > 0 ? 3 : r.spec.num_layers + 1,
                   m.boundary_per_token,
                   c.checkpointing ? 1 : r.spec.num_layers, m.layer_cache_per_token,
                   m.transient_per_token));
  if (m.attention_workspace > 0)
    line("attention workspace", m.attention_workspace,
         r.cudnn_attention ? "cuDNN SDPA backward" : "flash backward");
  if (m.fp8_workspace > 0)
    line("FP8 workspace", m.fp8_workspace, "transposed weight codes + gradient codes");
  if (m.lm_head_ce_workspace > 0) line("lm_head+CE workspace", m.lm_head_ce_workspace,
                                       fmt::format("logits chunks of {} rows",
                                                   ce_chunk_rows(0, c.load_in_4bit)));
  if (m.gemm_workspace > 0) line("GEMM workspace", m.gemm_workspace, "cuBLASLt");
  line("= tensor peak", m.tensor_peak(), "what ftune reports as peak memory");
  if (m.host_workspaces > 0) line("host workspaces", m.host_workspaces, "CPU backend scratch (not tensors)");
  if (m.pinned_host > 0) line("pinned host memory", m.pinned_host, "offloaded layer inputs (host RAM, not GPU)");
  if (m.allocator_overhead > 0)
    line("allocator overhead", m.allocator_overhead, "size-class rounding + cached blocks (estimate)");
  if (m.cuda_context > 0) line("CUDA context", m.cuda_context, r.gpus > 1 ? "+ NCCL buffers (estimate)" : "(estimate)");
  line("= total per device", m.device_total(), "");
}

}  // namespace

int cmd_plan(const PlanArgs& a) {
  FTUNE_CHECK(a.config.empty() != a.preset.empty(),
              "plan: give a CONFIG.yaml or --preset NAME (one of them)");
  FTUNE_CHECK(a.gpu_memory_gib >= 0 && std::isfinite(a.gpu_memory_gib),
              "--gpu-memory-gib: must be a positive number of GiB, got {}", a.gpu_memory_gib);
  FTUNE_CHECK(a.seq >= 0 && a.batch >= 0, "plan: --seq and --batch must be positive");
  PlanRequest req;
  std::string model_name;
  if (!a.preset.empty()) {
    req.spec = preset_spec(a.preset);
    req.lora.r = a.lora_r;
    req.lora.alpha = static_cast<double>(a.lora_r);
    req.seq_len = a.seq > 0 ? a.seq : 2048;
    model_name = a.preset;
  } else {
    const TrainConfig cfg = load_config(a.config);
    req.spec = model_spec_of(cfg);
    req.lora = lora_spec_from_config(cfg);
    req.seq_len = a.seq > 0 ? a.seq : cfg.data.max_seq_length;
    req.effective_batch = config_effective_batch(cfg);
    req.accumulation = cfg.train.gradient_accumulation_steps;
    model_name = cfg.model.path.empty() ? "built-in tiny model" : cfg.model.path;
  }
  const Target t = find_target(a);
  req.backend = t.backend;
  req.dtype = t.backend == BackendKind::Cpu ? DType::F32 : DType::BF16;
  req.cudnn_attention = t.backend == BackendKind::Cuda && gpu_attention_uses_cudnn();
  req.gpus = t.backend == BackendKind::Cpu ? 1 : t.count;
  req.device_memory = t.memory;
  req.micro_batch = a.batch;
  req.offload = a.checkpointing == "offload";
  req.checkpointing =
      req.offload ? PlanChoice::On : parse_choice(a.checkpointing, "--checkpointing");
  req.load_in_4bit = parse_choice(a.load_in_4bit, "--4bit");
  req.fp8_base = a.fp8 || (!a.config.empty() && load_config(a.config).model.fp8_base);
  FTUNE_CHECK(!(req.fp8_base && req.load_in_4bit == PlanChoice::On),
              "plan: --fp8 (or model.fp8_base) and --4bit on exclude each other (one base format)");
  req.shard_base = parse_choice(a.shard_base, "--shard-base");
  if (req.effective_batch > 0 && req.effective_batch % req.gpus != 0) {
    // The config's effective batch does not split over these GPUs: keep micro x accumulation.
    req.effective_batch = 0;
  }
  if (req.effective_batch > 0 && req.micro_batch > 0 &&
      (req.effective_batch / req.gpus) % req.micro_batch != 0)
    req.effective_batch = 0;  // --batch decides; accumulation as configured
  const Plan plan = make_plan(req);
  const PlanCandidate* best = plan.best_candidate();
  const bool gpu = t.backend == BackendKind::Cuda;
  int64_t lora_params = 0;
  for (Proj p : kAllProj)
    if (req.lora.targets[static_cast<size_t>(p)]) {
      const auto sh = req.spec.proj_shape(p);
      lora_params += req.lora.r * (sh[0] + sh[1]);
    }
  lora_params *= req.spec.num_layers;

  if (a.json) {
    nlohmann::json j;
    j["model"] = {{"name", model_name},
                  {"arch", req.spec.arch},
                  {"layers", req.spec.num_layers},
                  {"hidden_size", req.spec.hidden_size},
                  {"intermediate_size", req.spec.intermediate_size},
                  {"vocab_size", req.spec.vocab_size},
                  {"lora_r", req.lora.r},
                  {"trainable_params", lora_params}};
    j["device"] = {{"backend", gpu ? "cuda" : "cpu"},
                   {"description", t.what},
                   {"count", req.gpus},
                   {"memory_bytes", t.memory}};
    j["seq_len"] = req.seq_len;
    j["effective_batch"] = req.effective_batch;
    j["calibration"] = fmt::format("{}: GEMM {:.0f} TFLOP/s, attention {:.0f} TFLOP/s, "
                                   "elementwise {:.2f} TB/s", h200_calibration().device,
                                   h200_calibration().gemm_flops_per_s / 1e12,
                                   attention_rate(req, h200_calibration()) / 1e12,
                                   h200_calibration().elementwise_bytes_per_s / 1e12);
    if (best != nullptr) {
      j["best"] = candidate_json(*best, gpu);
      j["best"]["memory"] = memory_json(best->memory);
    } else {
      j["best"] = nullptr;
      j["smallest"] = candidate_json(plan.candidates.front(), gpu);
      j["smallest"]["memory"] = memory_json(plan.candidates.front().memory);
    }
    nlohmann::json cs = nlohmann::json::array();
    for (const auto& c : plan.candidates) cs.push_back(candidate_json(c, gpu));
    j["candidates"] = cs;
    std::printf("%s\n", j.dump(2).c_str());
    return best != nullptr ? 0 : 1;
  }

  std::printf("model: %s (%s, %lld layers, hidden %lld, intermediate %lld, vocab %lld); LoRA r=%lld: %lld trainable parameters\n",
              model_name.c_str(), req.spec.arch.c_str(), static_cast<long long>(req.spec.num_layers),
              static_cast<long long>(req.spec.hidden_size),
              static_cast<long long>(req.spec.intermediate_size),
              static_cast<long long>(req.spec.vocab_size), static_cast<long long>(req.lora.r),
              static_cast<long long>(lora_params));
  std::printf("device: %s, %s; rows of %lld tokens", t.what.c_str(), gpu ? "bf16" : "F32",
              static_cast<long long>(req.seq_len));
  if (req.effective_batch > 0)
    std::printf("; effective batch %lld sequences per optimizer step", static_cast<long long>(req.effective_batch));
  std::printf("\n");
  if (best == nullptr) {
    const PlanCandidate& c = plan.candidates.front();
    std::printf("nothing fits: the smallest configuration (micro-batch %lld, %s) needs:\n",
                static_cast<long long>(c.micro_batch), mode_text(c).c_str());
    Plan p = plan;
    p.best = 0;
    print_memory(c.memory, p);
    fail("plan: nothing fits in {:.2f} GiB per device (micro-batch {} needs {:.2f} GiB); lower "
         "--seq, use --4bit on or more memory",
         gib(t.memory), c.micro_batch, gib(c.memory.device_total()));
  }
  std::printf("\nbest: micro-batch %lld, gradient accumulation %lld, %s, %d %s",
              static_cast<long long>(best->micro_batch), static_cast<long long>(best->accumulation),
              mode_text(*best).c_str(), best->gpus, gpu ? (best->gpus > 1 ? "GPUs" : "GPU") : "process");
  if (gpu) std::printf(": %.0f tokens/s predicted (%s-calibrated)", best->tokens_per_s, h200_calibration().device);
  std::printf("; %.2f of %.2f GiB per device\n\n", gib(best->memory.device_total()), gib(t.memory));
  std::printf("memory per device:\n");
  print_memory(best->memory, plan);
  // Per mode: the largest micro-batch that fits, and the first that does not.
  std::printf("\nby mode (largest micro-batch that fits):\n");
  std::printf("  %-40s %6s %6s %11s %11s %12s\n", "mode", "micro", "accum", "peak GiB", "total GiB",
              gpu ? "tokens/s" : "");
  for (int mode = 0; mode < 8; ++mode) {
    const bool ckpt = (mode & 2) != 0, nf4 = (mode & 1) != 0, shard = (mode & 4) != 0;
    {
      auto same_mode = [&](const PlanCandidate& c) {
        return c.checkpointing == ckpt && c.load_in_4bit == nf4 && c.shard_base == shard;
      };
      const PlanCandidate* fit = nullptr;
      for (const auto& c : plan.candidates)
        if (same_mode(c) && c.fits && (fit == nullptr || c.micro_batch > fit->micro_batch))
          fit = &c;
      bool evaluated = false;
      for (const auto& c : plan.candidates) evaluated |= same_mode(c);
      if (!evaluated) continue;
      PlanCandidate shown;
      shown.checkpointing = ckpt;
      shown.load_in_4bit = nf4;
      shown.shard_base = shard;
      shown.gpus = req.gpus;
      if (fit == nullptr) {
        std::printf("  %-40s %6s\n", mode_text(shown).c_str(), "none");
        continue;
      }
      std::printf("  %-40s %6lld %6lld %11.2f %11.2f %12s\n", mode_text(*fit).c_str(),
                  static_cast<long long>(fit->micro_batch), static_cast<long long>(fit->accumulation),
                  gib(fit->memory.tensor_peak()), gib(fit->memory.device_total()),
                  gpu ? fmt::format("{:.0f}", fit->tokens_per_s).c_str() : "");
    }
  }
  return 0;
}

}  // namespace ftune
