// QLoRA on the GPU against the CPU reference: dequantize_nf4 bit for bit (F32, BF16, F16 out;
// single and double quantization; odd sizes), a bf16 NF4 model's forward/backward against the
// CPU fp32 NF4 model, and the GPU memory an NF4 model holds (packed weights and one workspace,
// never the dense bf16 projections). Skips without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "backend/cuda_ops.h"
#include "core/batch.h"
#include "core/nf4.h"
#include "cuda/cuda_test_support.h"
#include "model/llama_model.h"
#include "support/test_support.h"

using namespace ftune;

namespace {

class CudaNf4 : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::no_gpu_reason().empty()) GTEST_SKIP() << test::no_gpu_reason();
    gpu_ = make_cuda_ops(0);
    cpu_ = make_cpu_ops();
  }
  void TearDown() override {
    gpu_.reset();
    if (test::no_gpu_reason().empty()) release_cached_memory(DeviceType::CUDA);
  }
  std::unique_ptr<Ops> gpu_, cpu_;
};

TEST_F(CudaNf4, DequantizeMatchesCpuBitForBit) {
  const Shape shapes[] = {{3, 37}, {64, 128}, {96, 200}, {1024, 4096}};
  uint64_t seed = 1;
  for (const Shape& shape : shapes)
    for (bool dq : {false, true}) {
      Tensor x = test::random_tensor(shape, ++seed, 0.05f);
      const Nf4Weight w = quantize_nf4(x, dq);
      const Nf4Weight wg = w.to(Device::cuda(0));
      for (DType dt : {DType::F32, DType::BF16, DType::F16}) {
        Tensor ref = Tensor::empty(shape, dt);
        dequantize_nf4_cpu(w, ref);
        Tensor out = Tensor::empty(shape, dt, Device::cuda(0));
        cudaMemset(out.raw(), 0xff, out.nbytes());  // NaN poison: every element must be written
        gpu_->dequantize_nf4(wg, out);
        const Tensor back = out.to(Device::cpu());
        EXPECT_EQ(std::memcmp(back.raw(), ref.raw(), ref.nbytes()), 0)
            << shape_str(shape) << " dq " << dq << " " << dtype_name(dt);
      }
    }
}

TEST_F(CudaNf4, RejectsBadArguments) {
  const Nf4Weight w = quantize_nf4(test::random_tensor({4, 64}, 3), true);
  Tensor out = Tensor::empty({4, 64}, DType::BF16, Device::cuda(0));
  // The weight on the host: refused before any launch.
  EXPECT_NE(test::error_of([&] { gpu_->dequantize_nf4(w, out); }).find("dequantize_nf4"),
            std::string::npos);
  Tensor small = Tensor::empty({4, 63}, DType::BF16, Device::cuda(0));
  EXPECT_NE(test::error_of([&] { gpu_->dequantize_nf4(w.to(Device::cuda(0)), small); })
                .find("out is [4, 63] but the weight is [4, 64]"),
            std::string::npos);
}

ModelSpec spec() {
  ModelSpec s;
  s.arch = "llama";
  s.vocab_size = 64;
  s.hidden_size = 256;
  s.intermediate_size = 512;
  s.num_layers = 2;
  s.num_heads = 4;
  s.num_kv_heads = 2;
  s.head_dim = 64;
  s.max_position_embeddings = 64;
  return s;
}

Batch batch() {
  std::vector<int32_t> a, b;
  for (int i = 0; i < 24; ++i) a.push_back((i * 7 + 3) % 64);
  for (int i = 0; i < 20; ++i) b.push_back((i * 5 + 1) % 64);
  std::vector<int32_t> la = a, lb = b;
  la[0] = lb[0] = -100;
  return batch_from_documents({a, b}, {la, lb}, 24, 0);
}

TEST_F(CudaNf4, Bf16ModelMatchesCpuAndHoldsNoDenseProjections) {
  const ModelSpec s = spec();
  BaseWeights q = random_base_weights(s, 9, 0.05f);
  quantize_base_weights(q, true);
  int64_t dense_bf16 = 0;
  for (const auto& L : q.layers)
    for (const auto& w : L.nf4) dense_bf16 += w.numel() * 2;
  LoraSpec ls;
  ls.r = 8;
  ls.alpha = 16;
  LlamaModel cm(s, q, *cpu_);
  const int64_t before = memory_stats(DeviceType::CUDA).live_bytes;
  ModelOptions mo;
  mo.dtype = DType::BF16;
  LlamaModel gm(s, base_weights_to(q, s, Device::cuda(0)), *gpu_, mo);
  const int64_t held = memory_stats(DeviceType::CUDA).live_bytes - before;
  // Packed weights, bf16 embeddings/norms/lm_head and one workspace (the gate/up pair).
  const int64_t workspace = 2 * s.intermediate_size * s.hidden_size * 2;
  EXPECT_LE(held, base_weight_bytes(gm.base()) + workspace + 4096);
  int64_t proj_nf4 = 0;
  for (const auto& L : gm.base().layers)
    for (const auto& w : L.nf4) proj_nf4 += w.nbytes();
  EXPECT_LT(proj_nf4 * 3, dense_bf16);
  EXPECT_LT(held, dense_bf16);

  cm.attach_lora(LoraWeights::init(s, ls, Device::cpu()));
  gm.attach_lora(LoraWeights::init(s, ls, Device::cuda(0)));
  std::mt19937_64 rng(3);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  auto cp = cm.lora().params(), gp = gm.lora().params();
  for (size_t i = 0; i < cp.size(); ++i) {
    std::vector<float> v(static_cast<size_t>(cp[i].value->numel()));
    for (float& e : v) e = nd(rng);
    Tensor h = Tensor::from_vector(v, cp[i].value->shape());
    cp[i].value->copy_from(h);
    gp[i].value->copy_from(h.to(Device::cuda(0)));
  }
  const Batch b = batch();
  cm.lora().zero_grad();
  gm.lora().zero_grad();
  const StepLoss lc = cm.forward_backward(b, 1.0f), lg = gm.forward_backward(b, 1.0f);
  EXPECT_NEAR(lg.mean(), lc.mean(), 2e-2 * std::fabs(lc.mean()));
  for (size_t i = 0; i < cp.size(); ++i)
    EXPECT_LT(test::rel_l2(gp[i].grad->to(Device::cpu()).to_vector(), cp[i].grad->to_vector()), 5e-2)
        << cp[i].name;
}

}  // namespace
