// The planner (planner.h): candidate configurations, their memory and their predicted speed.
#include "train/planner.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace ftune {

namespace {

double gib(int64_t b) { return static_cast<double>(b) / static_cast<double>(int64_t{1} << 30); }

std::vector<bool> choices(PlanChoice c) {
  if (c == PlanChoice::On) return {true};
  if (c == PlanChoice::Off) return {false};
  return {false, true};
}

// Micro-batches to try per GPU: the divisors of the per-GPU share of a fixed effective batch,
// else powers of two; a fixed micro-batch alone.
std::vector<int64_t> micro_batches(const PlanRequest& req) {
  if (req.micro_batch > 0) return {req.micro_batch};
  std::vector<int64_t> v;
  if (req.effective_batch > 0) {
    const int64_t per_gpu = req.effective_batch / req.gpus;
    for (int64_t m = 1; m <= std::min(per_gpu, req.max_micro_batch); ++m)
      if (per_gpu % m == 0) v.push_back(m);
    return v;
  }
  for (int64_t m = 1; m <= req.max_micro_batch; m *= 2) v.push_back(m);
  return v;
}

int64_t accumulation_for(const PlanRequest& req, int64_t micro) {
  if (req.effective_batch <= 0) return req.accumulation;
  return req.effective_batch / (static_cast<int64_t>(req.gpus) * micro);
}

void check_request(const PlanRequest& req) {
  FTUNE_CHECK(req.seq_len >= 1, "plan: sequence length must be >= 1, got {}", req.seq_len);
  FTUNE_CHECK(req.gpus >= 1, "plan: GPU count must be >= 1, got {}", req.gpus);
  FTUNE_CHECK(req.device_memory > 0, "plan: device memory must be positive, got {} bytes",
              req.device_memory);
  FTUNE_CHECK(req.micro_batch >= 0 && req.effective_batch >= 0 && req.accumulation >= 1,
              "plan: micro-batch {}, effective batch {}, accumulation {} (must be >= 0, >= 0, >= 1)",
              req.micro_batch, req.effective_batch, req.accumulation);
  if (req.effective_batch > 0) {
    FTUNE_CHECK(req.effective_batch % req.gpus == 0,
                "plan: an effective batch of {} sequences does not split over {} GPUs", req.effective_batch,
                req.gpus);
    FTUNE_CHECK(req.micro_batch == 0 || (req.effective_batch / req.gpus) % req.micro_batch == 0,
                "plan: an effective batch of {} sequences over {} GPUs is not a multiple of "
                "micro-batch {}", req.effective_batch, req.gpus, req.micro_batch);
  }
}

}  // namespace

const ThroughputCalibration& h200_calibration() {
  static const ThroughputCalibration c{};
  return c;
}

// Attention FLOP/s for rows of req.seq_len tokens (one document each).
double attention_rate(const PlanRequest& req, const ThroughputCalibration& cal) {
  if (!req.cudnn_attention) return cal.flash_attention_flops_per_s;
  const double s = static_cast<double>(req.seq_len);
  return cal.attention_flops_per_s * s / (s + cal.attention_half_rate_tokens);
}

double predict_step_seconds(const PlanRequest& req, const PlanCandidate& c,
                            const ThroughputCalibration& cal) {
  const StepCost cost = step_cost_per_token(req.spec, req.lora, req.seq_len, c.checkpointing,
                                            req.dtype);
  const double n = static_cast<double>(c.micro_batch * req.seq_len);
  double micro = n * (cost.gemm_flops() / cal.gemm_flops_per_s +
                      cost.attn_flops() / attention_rate(req, cal) +
                      cost.elementwise_bytes / cal.elementwise_bytes_per_s) +
                 static_cast<double>(kernels_per_micro_batch(req.spec, c.checkpointing)) * cal.launch_s;
  // Trainable parameters, for the optimizer and the all-reduce.
  double lora_params = 0, proj_params = 0, proj_nf4_bytes = 0;
  for (Proj p : kAllProj) {
    const auto sh = req.spec.proj_shape(p);
    const double w = static_cast<double>(sh[0] * sh[1]);
    proj_params += w;
    proj_nf4_bytes += static_cast<double>(nf4_bytes(sh[0] * sh[1]));
    if (req.lora.targets[static_cast<size_t>(p)])
      lora_params += static_cast<double>(req.lora.r * (sh[0] + sh[1]));
  }
  const double L = static_cast<double>(req.spec.num_layers);
  lora_params *= L;
  if (c.load_in_4bit) {
    // Assumed: every use of a projection (forward, input gradient, recompute) dequantizes it to
    // a bf16 buffer that the GEMM then reads: NF4 + absmax read, bf16 written and read.
    const double uses = c.checkpointing ? 3.0 : 2.0;
    micro += uses * L * (proj_nf4_bytes + 4.0 * proj_params) / cal.elementwise_bytes_per_s;
  }
  // AdamW: params, grads, m, v read, params, m, v written; the norm for clipping, zeroing the
  // grads, refreshing the compute copies: about 42 bytes per trainable parameter.
  const double optimizer = 42.0 * lora_params / cal.elementwise_bytes_per_s;
  const double g = static_cast<double>(c.gpus);
  if (c.shard_base && c.gpus > 1) {
    // Assumed: each pass (forward, backward) all-gathers every layer at the all-reduce bus
    // bandwidth, overlapped with compute (the next layer's gather runs during this one), so a
    // micro-batch takes the longer of the two.
    const double layer_bytes = c.load_in_4bit ? proj_nf4_bytes
                                              : proj_params * static_cast<double>(dtype_size(req.dtype));
    const double gather = 2.0 * L * (g - 1.0) / g * layer_bytes / cal.allreduce_bytes_per_s;
    micro = std::max(micro, gather);
  }
  const double allreduce =
      c.gpus > 1 ? 2.0 * (g - 1.0) / g * 4.0 * lora_params / cal.allreduce_bytes_per_s : 0.0;
  return static_cast<double>(c.accumulation) * micro + optimizer + allreduce;
}

Plan make_plan(const PlanRequest& req) {
  check_request(req);
  Plan plan;
  plan.request = req;
  std::vector<bool> shard_choices = choices(req.shard_base);
  if (req.gpus <= 1 || req.fp8_base) shard_choices = {false};  // nothing to shard over
  std::vector<bool> nf4_choices = choices(req.load_in_4bit);
  if (req.fp8_base) nf4_choices = {false};  // one base format
  for (bool ckpt : choices(req.checkpointing)) {
    for (bool nf4 : nf4_choices) {
      for (bool shard : shard_choices) {
        for (int64_t m : micro_batches(req)) {
          PlanCandidate c;
          c.micro_batch = m;
          c.accumulation = accumulation_for(req, m);
          c.checkpointing = ckpt;
          c.load_in_4bit = nf4;
          c.fp8_base = req.fp8_base;
          c.shard_base = shard;
          c.gpus = req.gpus;
          MemoryModelInput mi;
          mi.spec = req.spec;
          mi.lora = req.lora;
          mi.micro_batch = m;
          mi.seq_len = req.seq_len;
          mi.checkpointing = ckpt;
          mi.offload = ckpt && req.offload;
          mi.load_in_4bit = nf4;
          mi.fp8_base = req.fp8_base;
          mi.dtype = req.dtype;
          mi.backend = req.backend;
          mi.world_size = req.gpus;
          mi.shard_base = shard;
          mi.cudnn_attention = req.cudnn_attention && req.backend == BackendKind::Cuda;
          c.memory = estimate_memory(mi);
          c.fits = c.memory.device_total() <= req.device_memory;
          c.step_s = predict_step_seconds(req, c);
          c.tokens_per_s =
              static_cast<double>(m * c.accumulation * req.gpus * req.seq_len) / c.step_s;
          plan.candidates.push_back(std::move(c));
        }
      }
    }
  }
  // Fastest that fits; within 0.5% of each other, the simpler one (bf16 before 4-bit, no
  // checkpointing before checkpointing, then the smaller micro-batch: less memory, same speed).
  for (size_t i = 0; i < plan.candidates.size(); ++i) {
    const PlanCandidate& c = plan.candidates[i];
    if (!c.fits) continue;
    if (plan.best < 0) {
      plan.best = static_cast<int>(i);
      continue;
    }
    const PlanCandidate& b = plan.candidates[static_cast<size_t>(plan.best)];
    const bool clearly_faster = c.tokens_per_s > b.tokens_per_s * 1.005;
    const bool tie = !clearly_faster && c.tokens_per_s >= b.tokens_per_s / 1.005;
    auto key = [](const PlanCandidate& x) {
      return std::make_tuple(x.shard_base, x.load_in_4bit, x.checkpointing, x.micro_batch);
    };
    if (clearly_faster || (tie && key(c) < key(b))) plan.best = static_cast<int>(i);
  }
  return plan;
}

PlanCandidate largest_fitting_micro_batch(const PlanRequest& req) {
  FTUNE_CHECK(req.checkpointing != PlanChoice::Auto && req.load_in_4bit != PlanChoice::Auto,
              "largest_fitting_micro_batch: checkpointing and 4-bit must be decided");
  const Plan plan = make_plan(req);
  const PlanCandidate* best = nullptr;
  for (const PlanCandidate& c : plan.candidates)
    if (c.fits && (best == nullptr || c.micro_batch > best->micro_batch)) best = &c;
  if (best != nullptr) return *best;
  // Nothing fits: the figures of the smallest micro-batch, and what else could help.
  const PlanCandidate& first = plan.candidates.front();
  const MemoryEstimate& m = first.memory;
  std::string hint;
  if (req.checkpointing == PlanChoice::Off) hint += "turn on train.gradient_checkpointing, ";
  hint += "lower data.max_seq_length";
  if (req.load_in_4bit == PlanChoice::Off) hint += ", set model.load_in_4bit";
  hint += " or use a device with more memory";
  fail("train.micro_batch_size: auto: nothing fits, not even micro-batch {} of {} tokens{}: it "
       "needs {:.2f} GiB per device (base weights {:.2f}, LoRA + AdamW {:.2f}, activations "
       "{:.2f}, workspaces {:.2f}, allocator + CUDA context {:.2f}) and {:.2f} GiB are "
       "available; {}",
       first.micro_batch, req.seq_len, first.checkpointing ? " with checkpointing" : "",
       gib(m.device_total()), gib(m.base_weights), gib(m.lora_params + m.lora_grads + m.optimizer_state),
       gib(m.activations), gib(m.attention_workspace + m.lm_head_ce_workspace + m.gemm_workspace + m.host_workspaces),
       gib(m.allocator_overhead + m.cuda_context), gib(req.device_memory), hint);
}

}  // namespace ftune
