// The memory model, the FLOP model and the planner (model/memory_model.h, model/flop_model.h,
// train/planner.h): a small shape counted by hand here, tensor by tensor and GEMM by GEMM; the
// three H200 measurements of docs/BENCHMARKS.md; the planner's choices.
#include <gtest/gtest.h>

#include <cmath>

#include "model/flop_model.h"
#include "support/test_support.h"
#include "model/memory_model.h"
#include "model/presets.h"
#include "train/planner.h"

namespace ftune {
namespace {

// V 32, H 16, F 24, 2 layers, 4 heads of 4, 2 kv heads, tied embeddings, no biases.
ModelSpec small_spec() {
  ModelSpec s;
  s.vocab_size = 32;
  s.hidden_size = 16;
  s.intermediate_size = 24;
  s.num_layers = 2;
  s.num_heads = 4;
  s.num_kv_heads = 2;
  s.head_dim = 4;
  s.max_position_embeddings = 2048;
  s.tie_word_embeddings = true;
  return s;
}

LoraSpec lora_r2() {
  LoraSpec l;
  l.r = 2;
  l.alpha = 2;
  return l;
}

MemoryModelInput small_input(bool checkpointing) {
  MemoryModelInput in;
  in.spec = small_spec();
  in.lora = lora_r2();
  in.micro_batch = 2;
  in.seq_len = 8;
  in.checkpointing = checkpointing;
  in.dtype = DType::F32;
  in.backend = BackendKind::Cpu;
  return in;
}

TEST(MemoryModel, SmallShapeCountedByHand) {
  // Weights (F32): embed 32x16, final norm 16, 2x2 layer norms of 16; per layer q 16x16,
  // k 8x16, v 8x16, o 16x16, gate 24x16, up 24x16, down 16x24.
  const int64_t per_layer = 256 + 128 + 128 + 256 + 384 + 384 + 384;
  const int64_t weights = 4 * (512 + 16 + 4 * 16 + 2 * per_layer);
  // LoRA r=2: r (in + out) per projection: q 2(16+16), k 2(16+8), v 2(16+8), o 2(16+16),
  // gate 2(16+24), up 2(16+24), down 2(24+16); params, grads, m, v in F32.
  const int64_t lora = 2 * (64 + 48 + 48 + 64 + 80 + 80 + 80);
  const int64_t lora_bytes = 16 * lora;
  // Activations for N = 2 x 8 = 16 tokens, 4 bytes each.
  const int64_t N = 16;
  const int64_t batch = 4 * 4 * N + 8;               // ids, positions, doc_start, targets; loss
  const int64_t rope = 2 * 2048 * 2 * 4;             // cos, sin [2048, hd/2] F32
  const int64_t inputs = 3 * N * 16 * 4;             // embedding output + 2 layer outputs
  const int64_t finals = 3 * N * 16 * 4 + N * 4;     // final norm out, its grad, dx; rstd
  // One layer's cache: n1, h, n2 (3 x 16), rstd1, rstd2, q and attn (2 x 16), k and v (2 x 8),
  // lse (4 heads), gu (48), m (24), LoRA x A^T: q/k/v 6, o 2, gate/up 4, down 2.
  const int64_t cache = N * 4 * (3 * 16 + 2 + 2 * 16 + 2 * 8 + 4 + 48 + 24 + 6 + 2 + 4 + 2);
  // The largest backward step here is the RoPE merge: dn2 (16) + dq, dk, dv (32) + dqkv (32).
  const int64_t temporaries = N * 4 * (16 + 32 + 32);

  const MemoryEstimate full = estimate_memory(small_input(false));
  EXPECT_EQ(full.base_weights, weights);
  EXPECT_EQ(full.lora_params + full.lora_grads + full.optimizer_state, lora_bytes);
  EXPECT_EQ(full.activations, batch + rope + inputs + finals + 2 * cache + temporaries);
  EXPECT_EQ(full.layer_cache_per_token, cache / N);
  EXPECT_EQ(full.transient_per_token, temporaries / N);
  EXPECT_EQ(full.tensor_peak(), weights + lora_bytes + batch + rope + inputs + finals + 2 * cache + temporaries);
  EXPECT_EQ(full.allocator_overhead, 0);  // the CPU backend allocates with malloc
  EXPECT_EQ(full.cuda_context, 0);
  // The CPU's lm_head+CE chunk and attention scratch are host vectors, outside the tensor peak.
  EXPECT_EQ(full.host_workspaces, N * 32 * 4 + N * 8 + N * 4 * 4 + N * 8);

  const MemoryEstimate ckpt = estimate_memory(small_input(true));
  EXPECT_EQ(ckpt.activations, full.activations - cache);  // one layer's cache instead of two
  EXPECT_EQ(ckpt.base_weights, full.base_weights);
}

TEST(MemoryModel, DropoutAndPartialTargets) {
  MemoryModelInput in = small_input(false);
  in.lora.targets = {true, false, true, false, false, false, true};  // q, v, down
  in.lora.dropout = 0.1;
  const MemoryEstimate e = estimate_memory(in);
  const MemoryModelInput plain = [&] {
    MemoryModelInput p = in;
    p.lora.dropout = 0.0;
    return p;
  }();
  const MemoryEstimate no_drop = estimate_memory(plain);
  // Dropout keeps nothing more per layer: dropout(x) and its mask are regenerated from the seed
  // in backward (Ops::dropout_apply), one [N, in] buffer for the projection being
  // differentiated: a backward temporary, which can only grow.
  EXPECT_EQ(e.layer_cache_per_token, no_drop.layer_cache_per_token);
  EXPECT_GE(e.transient_per_token, no_drop.transient_per_token);
  EXPECT_EQ(e.activations - no_drop.activations,
            (e.transient_per_token - no_drop.transient_per_token) * 16);
  // LoRA params: q 2(16+16), v 2(16+8), down 2(24+16) per layer.
  EXPECT_EQ(e.lora_params, 4 * 2 * (64 + 48 + 80));
}

TEST(MemoryModel, Nf4Bytes) {
  // Two weights per byte plus one F32 absmax per 64 weights.
  EXPECT_EQ(nf4_bytes(64), 32 + 4);
  EXPECT_EQ(nf4_bytes(4096 * 4096), 4096 * 4096 / 2 + 4096 * 4096 / 64 * 4);
  MemoryModelInput in = small_input(false);
  in.backend = BackendKind::Cuda;
  in.dtype = DType::BF16;
  in.load_in_4bit = true;
  const MemoryEstimate e = estimate_memory(in);
  // Embedding and norms stay bf16; the four fused projection matrices per layer are NF4.
  const int64_t expect = 2 * (512 + 16 + 4 * 16) +
                         2 * (nf4_bytes(32 * 16) + nf4_bytes(16 * 16) + nf4_bytes(48 * 16) + nf4_bytes(16 * 24));
  EXPECT_EQ(e.base_weights, expect);
}

TEST(MemoryModel, OffloadKeepsThreeLayerInputsOnTheGpu) {
  // llama-3-8b shape, 1 x 32768 tokens, bf16 on CUDA: with offload the device keeps the last
  // layer's input, the prefetched one and the final output instead of all L + 1, and the other
  // inputs go to pinned host memory (L of them).
  MemoryModelInput in;
  in.spec = preset_spec("llama-3-8b");
  in.lora.r = 16;
  in.micro_batch = 1;
  in.seq_len = 32768;
  in.checkpointing = true;
  in.dtype = DType::BF16;
  in.backend = BackendKind::Cuda;
  const MemoryEstimate layer = estimate_memory(in);
  in.offload = true;
  const MemoryEstimate off = estimate_memory(in);
  const int64_t input = int64_t{32768} * 4096 * 2;  // [N, H] bf16
  const int64_t L = in.spec.num_layers;
  EXPECT_EQ(layer.activations - off.activations, (L + 1 - 3) * input);
  EXPECT_EQ(off.pinned_host, L * input);
  EXPECT_EQ(layer.pinned_host, 0);
  EXPECT_EQ(off.base_weights, layer.base_weights);
  // The CPU keeps host copies: offload changes nothing there.
  in.backend = BackendKind::Cpu;
  in.dtype = DType::F32;
  const MemoryEstimate cpu_off = estimate_memory(in);
  in.offload = false;
  EXPECT_EQ(estimate_memory(in).activations, cpu_off.activations);
  EXPECT_EQ(cpu_off.pinned_host, 0);
}

TEST(FlopModel, SmallShapeCountedByHand) {
  const ModelSpec s = small_spec();
  const StepCost c = step_cost_per_token(s, lora_r2(), 8, false, DType::F32);
  // Frozen GEMMs: 2 flops per weight forward and 2 for the input gradient, per token; lm_head too.
  const double proj = 2 * (256 + 128 + 128 + 256 + 384 + 384 + 384);
  EXPECT_DOUBLE_EQ(c.base_gemm_flops, 4 * proj + 4 * 32 * 16);
  // LoRA: x A^T, t B^T forward; dB, dt, dA, dx backward: 6 r (in + out).
  EXPECT_DOUBLE_EQ(c.lora_gemm_flops, 2 * 6 * 2 * (32 + 24 + 24 + 32 + 40 + 40 + 40));
  // Attention over a causal row of 8: token i sees i + 1 keys, 36 in all, 4.5 on average;
  // QK^T and PV cost 2 hd each per key and head; backward 2.5x forward.
  const double fwd = 2 * 4.5 * 4 * (2 * 4 + 2 * 4);
  EXPECT_DOUBLE_EQ(c.attention_flops, 3.5 * fwd);
  EXPECT_DOUBLE_EQ(c.recompute_gemm_flops, 0);

  const StepCost k = step_cost_per_token(s, lora_r2(), 8, true, DType::F32);
  // The recomputed forward: every base GEMM but down_proj's, and every LoRA forward GEMM but
  // down_proj's B product.
  EXPECT_DOUBLE_EQ(k.recompute_gemm_flops,
                   2 * (2 * (256 + 128 + 128 + 256 + 384 + 384) +
                        2 * 2 * (32 + 24 + 24 + 32 + 40 + 40) + 2 * 2 * 24));
  EXPECT_DOUBLE_EQ(k.recompute_attention_flops, fwd);
  EXPECT_DOUBLE_EQ(k.model_flops(), c.model_flops());
}

// docs/BENCHMARKS.md, one H200, attention through cuDNN: (preset, rows, seq, checkpointing,
// tokens/s, peak GiB).
struct Measured {
  const char* preset;
  int64_t rows, seq;
  bool checkpointing;
  double tokens_per_s, peak_gib;
};
constexpr Measured kH200[] = {
    {"llama-3.2-1b", 4, 2048, false, 82390, 13.24},
    {"llama-3-8b", 2, 2048, true, 12280, 18.57},
    {"llama-3-8b", 2, 2048, false, 16504, 34.11},
};

TEST(Planner, ReproducesTheH200Measurements) {
  for (const Measured& m : kH200) {
    PlanRequest req;
    req.spec = preset_spec(m.preset);
    req.lora.r = 16;
    req.lora.alpha = 16;
    req.seq_len = m.seq;
    req.device_memory = int64_t{140} << 30;
    req.micro_batch = m.rows;
    req.checkpointing = m.checkpointing ? PlanChoice::On : PlanChoice::Off;
    req.load_in_4bit = PlanChoice::Off;
    req.cudnn_attention = true;
    const Plan plan = make_plan(req);
    ASSERT_EQ(plan.candidates.size(), 1u);
    const PlanCandidate& c = plan.candidates[0];
    const double peak = static_cast<double>(c.memory.tensor_peak()) / (1 << 30);
    // The memory model counts ftune's allocations: it should hit the measured tensor peak
    // (printed to 2 decimals) to within 0.5%.
    EXPECT_NEAR(peak, m.peak_gib, 0.005 * m.peak_gib) << m.preset << " gc=" << m.checkpointing;
    // The time model was fitted to these three points (two rates for three measurements).
    EXPECT_NEAR(c.tokens_per_s, m.tokens_per_s, 0.006 * m.tokens_per_s) << m.preset << " gc=" << m.checkpointing;
  }
}

// The FP8 base (model.fp8_base) on llama-3-8b, 2 x 2048 (docs/BENCHMARKS.md, session 6, call C):
// the memory model's tensor peak within 1% of the measured one. (Its tokens/s stay the bf16
// prediction, which the FP8 runs beat by 1.29-1.34x: an upper bound on the step time.)
TEST(Planner, PredictsTheFp8BasePeakOnTheH200) {
  const std::pair<bool, double> measured[] = {{false, 27.75}, {true, 12.21}};
  for (const auto& [ckpt, peak_gib] : measured) {
    PlanRequest req;
    req.spec = preset_spec("llama-3-8b");
    req.lora.r = 16;
    req.lora.alpha = 16;
    req.seq_len = 2048;
    req.device_memory = int64_t{140} << 30;
    req.micro_batch = 2;
    req.checkpointing = ckpt ? PlanChoice::On : PlanChoice::Off;
    req.load_in_4bit = PlanChoice::Auto;  // an FP8 base is never NF4
    req.shard_base = PlanChoice::Auto;
    req.fp8_base = true;
    req.cudnn_attention = true;
    const Plan plan = make_plan(req);
    ASSERT_EQ(plan.candidates.size(), 1u);
    const PlanCandidate& c = plan.candidates[0];
    EXPECT_TRUE(c.fp8_base);
    EXPECT_FALSE(c.load_in_4bit);
    const double peak = static_cast<double>(c.memory.tensor_peak()) / (1 << 30);
    EXPECT_NEAR(peak, peak_gib, 0.01 * peak_gib) << "gc=" << ckpt;
    EXPECT_GT(c.memory.fp8_workspace, 0);
  }
}

// Long contexts with offload (llama-3-8b, bf16, one row, docs/BENCHMARKS.md): the cuDNN
// attention rate grows with the document length; the model was fitted with the 64k point.
TEST(Planner, PredictsLongContextsWithinTenPercent) {
  const std::pair<int64_t, double> measured[] = {{16384, 8935}, {32768, 6771}, {65536, 4562}};
  for (const auto& [seq, tok_s] : measured) {
    PlanRequest req;
    req.spec = preset_spec("llama-3-8b");
    req.lora.r = 16;
    req.lora.alpha = 16;
    req.seq_len = seq;
    req.device_memory = int64_t{140} << 30;
    req.micro_batch = 1;
    req.checkpointing = PlanChoice::On;
    req.offload = true;
    req.load_in_4bit = PlanChoice::Off;
    req.cudnn_attention = true;
    const Plan plan = make_plan(req);
    ASSERT_EQ(plan.candidates.size(), 1u);
    EXPECT_NEAR(plan.candidates[0].tokens_per_s, tok_s, 0.1 * tok_s) << seq;
  }
  PlanRequest flash;
  flash.seq_len = 65536;
  EXPECT_EQ(attention_rate(flash, h200_calibration()), h200_calibration().flash_attention_flops_per_s);
}

PlanRequest small_request() {
  PlanRequest req;
  req.spec = small_spec();
  req.lora = lora_r2();
  req.seq_len = 8;
  req.backend = BackendKind::Cpu;
  req.dtype = DType::F32;
  req.device_memory = int64_t{1} << 30;
  return req;
}

TEST(Planner, KeepsTheEffectiveBatch) {
  PlanRequest req = small_request();
  req.backend = BackendKind::Cuda;
  req.dtype = DType::BF16;
  req.gpus = 2;
  req.effective_batch = 8;
  req.device_memory = int64_t{80} << 30;
  const Plan plan = make_plan(req);
  ASSERT_FALSE(plan.candidates.empty());
  for (const PlanCandidate& c : plan.candidates)
    EXPECT_EQ(c.micro_batch * c.accumulation * c.gpus, 8) << c.micro_batch;
  ASSERT_NE(plan.best_candidate(), nullptr);
  // Everything fits: fewer, larger micro-batches amortize per-kernel costs; bf16, no recompute.
  EXPECT_EQ(plan.best_candidate()->micro_batch, 4);
  EXPECT_EQ(plan.best_candidate()->accumulation, 1);
  EXPECT_FALSE(plan.best_candidate()->checkpointing);
  EXPECT_FALSE(plan.best_candidate()->load_in_4bit);

  req.effective_batch = 7;
  EXPECT_NE(test::error_of([&] { make_plan(req); }).find("does not split over 2 GPUs"),
            std::string::npos);
}

TEST(Planner, LargestFittingMicroBatch) {
  PlanRequest req = small_request();
  req.checkpointing = PlanChoice::Off;
  req.load_in_4bit = PlanChoice::Off;
  auto total_at = [&](int64_t m) {
    MemoryModelInput in = small_input(false);
    in.micro_batch = m;
    return estimate_memory(in).device_total();
  };
  req.device_memory = total_at(4);
  EXPECT_EQ(largest_fitting_micro_batch(req).micro_batch, 4);
  req.device_memory = total_at(4) - 1;
  EXPECT_EQ(largest_fitting_micro_batch(req).micro_batch, 2);
  req.device_memory = total_at(1) - 1;
  const std::string err = test::error_of([&] { largest_fitting_micro_batch(req); });
  EXPECT_NE(err.find("nothing fits, not even micro-batch 1"), std::string::npos) << err;
  EXPECT_NE(err.find("turn on train.gradient_checkpointing"), std::string::npos) << err;
}

TEST(Planner, FourBitOnlyWhenSixteenBitDoesNotFit) {
  PlanRequest req;
  req.spec = preset_spec("llama-3-8b");
  req.lora.r = 16;
  req.lora.alpha = 16;
  req.seq_len = 2048;
  req.device_memory = int64_t{80} << 30;
  Plan p = make_plan(req);
  ASSERT_NE(p.best_candidate(), nullptr);
  EXPECT_FALSE(p.best_candidate()->load_in_4bit);
  // 12 GiB: the bf16 base alone (15 GiB) cannot fit.
  req.device_memory = int64_t{12} << 30;
  p = make_plan(req);
  ASSERT_NE(p.best_candidate(), nullptr);
  EXPECT_TRUE(p.best_candidate()->load_in_4bit);
}

TEST(MemoryModel, ShardedBaseHoldsAShardOfEveryLayerAndTwoWholeLayers) {
  for (bool nf4 : {false, true}) {
    MemoryModelInput in;
    in.spec = preset_spec("llama-3-8b");
    in.lora.r = 16;
    in.seq_len = 2048;
    in.dtype = DType::BF16;
    in.backend = BackendKind::Cuda;
    in.load_in_4bit = nf4;
    in.world_size = 4;
    const MemoryEstimate whole = estimate_memory(in);
    in.shard_base = true;
    const MemoryEstimate sharded = estimate_memory(in);
    // The parts other than the layers: embeddings, lm_head and the final norm, whole.
    const int64_t H = in.spec.hidden_size, V = in.spec.vocab_size, L = in.spec.num_layers;
    const int64_t rest = (2 * V * H + H) * 2;
    const int64_t layers = whole.base_weights - rest;
    const int64_t per_layer = layers / L;
    // rest + L shards of ~per_layer/4 + 2 buffers of ~per_layer, within the 256-byte alignment.
    const double want = static_cast<double>(rest + layers / 4 + 2 * per_layer);
    EXPECT_NEAR(static_cast<double>(sharded.base_weights), want, 256.0 * 12 * (L + 8))
        << (nf4 ? "nf4" : "bf16");
    EXPECT_LT(sharded.device_total(), whole.device_total());
    // Everything but the base is unchanged.
    EXPECT_EQ(sharded.activations, whole.activations);
    EXPECT_EQ(sharded.lora_params + sharded.optimizer_state, whole.lora_params + whole.optimizer_state);
  }
}

TEST(Planner, ShardsTheBaseOnlyWhenTheWholeModelDoesNotFit) {
  PlanRequest req;
  req.spec = preset_spec("llama-3-8b");
  req.lora.r = 16;
  req.lora.alpha = 16;
  req.seq_len = 2048;
  req.gpus = 4;
  req.load_in_4bit = PlanChoice::Off;
  req.checkpointing = PlanChoice::On;
  req.shard_base = PlanChoice::Auto;
  req.device_memory = int64_t{80} << 30;
  Plan p = make_plan(req);
  ASSERT_NE(p.best_candidate(), nullptr);
  EXPECT_FALSE(p.best_candidate()->shard_base);
  // 10 GiB per GPU: the bf16 base alone (15 GiB) does not fit, a quarter of it does.
  req.device_memory = int64_t{10} << 30;
  p = make_plan(req);
  ASSERT_NE(p.best_candidate(), nullptr);
  EXPECT_TRUE(p.best_candidate()->shard_base);
  EXPECT_LE(p.best_candidate()->memory.device_total(), req.device_memory);
  // One GPU: nothing to shard over, so nothing fits.
  req.gpus = 1;
  p = make_plan(req);
  EXPECT_EQ(p.best_candidate(), nullptr);
  for (const auto& c : p.candidates) EXPECT_FALSE(c.shard_base);
}

}  // namespace
}  // namespace ftune
