// Generation on the CUDA backend against the CPU reference: Ops::attention_kv_cache in F32, BF16
// and F16 (GQA/MQA/MHA, head dims up to 256, prefill and one-token decode, cache rows past the
// sequence poisoned with NaN: never read), and a whole Generator (KV-cache prefill + decode with a
// LoRA adapter) on the GPU against the same model on the CPU: logits in F32 to 1e-4 and the same
// greedy tokens; in BF16 (the GPU default) logits to a bf16 tolerance.
// Skips, saying why, without a GPU.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "backend/cuda_ops.h"
#include "core/error.h"
#include "cuda/cuda_test_support.h"
#include "model/generator.h"
#include "model/llama_model.h"
#include "support/test_support.h"

using namespace ftune;

namespace {

using test::no_gpu_reason;

Tensor rounded(const Tensor& t, DType dt) {
  return dt == DType::F32 ? t.clone() : t.to_dtype(dt).to_dtype(DType::F32);
}
Tensor up_as(const Tensor& t, DType dt, Device dev) {
  return dt == DType::F32 ? t.to(dev) : t.to_dtype(dt).to(dev);
}
std::vector<float> host_values(const Tensor& t) {
  Tensor h = t.to(Device::cpu());
  return h.dtype() == DType::F32 ? h.to_vector() : h.to_dtype(DType::F32).to_vector();
}
float max_abs(const std::vector<float>& v) {
  float m = 0.0f;
  for (float x : v)
    if (std::isfinite(x)) m = std::max(m, std::fabs(x));
  return m;
}
// atol relative to the reference's largest magnitude, as tests/cuda/test_cuda_ops.cpp does.
std::string mismatch(const Tensor& got, const Tensor& want, float rtol, float atol_frac) {
  const std::vector<float> w = host_values(want);
  return test::compare(host_values(got), w, rtol, std::max(atol_frac * max_abs(w), 1e-30f));
}

class CudaGenerate : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!no_gpu_reason().empty()) GTEST_SKIP() << no_gpu_reason();
    gpu_ = make_cuda_ops(0);
    cpu_ = make_cpu_ops();
  }
  void TearDown() override {
    gpu_.reset();
    if (no_gpu_reason().empty()) release_cached_memory(DeviceType::CUDA);
  }
  static Device dev() { return Device::cuda(0); }
  std::unique_ptr<Ops> gpu_, cpu_;
};

struct KvCase {
  int64_t nh, nkv, hd, past, t;
};

TEST_F(CudaGenerate, AttentionKvCacheMatchesCpu) {
  const std::vector<KvCase> cases = {
      {8, 2, 16, 0, 13},   // prefill, GQA, hd < 32
      {8, 2, 64, 40, 1},   // decode after 40 cached tokens
      {6, 3, 40, 7, 5},    // a chunk after a prefix, hd not a multiple of 32
      {4, 4, 128, 300, 1}, // MHA, long cache (every warp walks many keys)
      {4, 1, 256, 3, 2},   // MQA, the widest head
      {2, 1, 8, 0, 1},     // a single token: fewer keys than warps
  };
  const DType dts[] = {DType::F32, DType::BF16, DType::F16};
  for (DType dt : dts) {
    uint64_t seed = 10;
    for (const KvCase& c : cases) {
      const std::string what = std::string(dtype_name(dt)) + " nh " + std::to_string(c.nh) +
                               " nkv " + std::to_string(c.nkv) + " hd " + std::to_string(c.hd) +
                               " past " + std::to_string(c.past) + " t " + std::to_string(c.t);
      const int64_t cap = c.past + c.t + 3;
      const Tensor q = rounded(test::random_tensor({c.t, c.nh, c.hd}, ++seed, 2.0f), dt);
      Tensor kc = rounded(test::random_tensor({cap, c.nkv, c.hd}, ++seed, 2.0f), dt);
      Tensor vc = rounded(test::random_tensor({cap, c.nkv, c.hd}, ++seed), dt);
      // Rows past the sequence hold NaN on the GPU: a kernel reading them fails the comparison.
      Tensor kg = kc.clone(), vg = vc.clone();
      for (int64_t i = (c.past + c.t) * c.nkv * c.hd; i < kg.numel(); ++i)
        kg.f32()[i] = vg.f32()[i] = std::numeric_limits<float>::quiet_NaN();
      const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
      Tensor want = Tensor::empty(q.shape());
      cpu_->attention_kv_cache(q, kc, vc, c.past, scale, want);
      Tensor nan = Tensor::empty(q.shape());
      nan.fill_(std::numeric_limits<float>::quiet_NaN());
      Tensor got = up_as(nan, dt, dev());
      gpu_->attention_kv_cache(up_as(q, dt, dev()), up_as(kg, dt, dev()), up_as(vg, dt, dev()),
                               c.past, scale, got);
      const float rtol = dt == DType::F32 ? 1e-4f : dt == DType::BF16 ? 1.6e-2f : 4e-3f;
      const float atol = dt == DType::F32 ? 1e-5f : dt == DType::BF16 ? 8e-3f : 2e-3f;
      EXPECT_EQ(mismatch(got, want, rtol, atol), "") << what;
    }
  }
}

TEST_F(CudaGenerate, AttentionKvCacheRejectsBadArguments) {
  Tensor q = Tensor::empty({2, 4, 512}, DType::BF16, dev());
  Tensor kc = Tensor::empty({8, 2, 512}, DType::BF16, dev());
  Tensor o = Tensor::empty({2, 4, 512}, DType::BF16, dev());
  EXPECT_NE(test::error_of([&] { gpu_->attention_kv_cache(q, kc, kc, 0, 1.0f, o); })
                .find("attention_kv_cache: head_dim 512 is not supported"),
            std::string::npos);
  Tensor q2 = Tensor::empty({2, 4, 64}, DType::BF16, dev());
  Tensor kc2 = Tensor::empty({8, 2, 64}, DType::BF16, dev());
  Tensor o2 = Tensor::empty({2, 4, 64}, DType::BF16, dev());
  EXPECT_NE(test::error_of([&] { gpu_->attention_kv_cache(q2, kc2, kc2, 7, 1.0f, o2); })
                .find("7 cached + 2 new tokens do not fit the cache of 8 rows"),
            std::string::npos);
}

ModelSpec gen_spec() {
  ModelSpec s;
  s.vocab_size = 96;
  s.hidden_size = 128;
  s.intermediate_size = 160;
  s.num_layers = 2;
  s.num_heads = 4;
  s.num_kv_heads = 2;
  s.head_dim = 32;
  s.max_position_embeddings = 256;
  s.rope.type = "llama3";
  s.rope.theta = 500000.0;
  s.rope.factor = 8.0;
  s.rope.original_max_position_embeddings = 32;
  return s;
}

LoraWeights gen_lora(const ModelSpec& s, Device d) {
  LoraSpec ls;
  ls.r = 8;
  ls.alpha = 16;
  LoraWeights w = LoraWeights::init(s, ls, d);
  uint64_t k = 50;
  for (auto& p : w.params()) {
    const Tensor r = test::random_tensor(p.value->shape(), ++k, 0.1f);
    p.value->copy_from(d.is_cpu() ? r : r.to(d));
  }
  return w;
}

TEST_F(CudaGenerate, GeneratorMatchesCpuInFloat32AndBfloat16) {
  const ModelSpec s = gen_spec();
  const BaseWeights base = random_base_weights(s, 3, 0.1f);
  LlamaModel cpu_model(s, base, *cpu_);
  cpu_model.attach_lora(gen_lora(s, Device::cpu()));
  const std::vector<int32_t> prompt = {5, 17, 88, 3, 41, 41, 60, 2, 9, 77};
  Generator cg(cpu_model);
  const std::vector<float> want_prefill = cg.forward(prompt, true).to_vector();
  const std::vector<float> want_step = cg.forward({12}).to_vector();
  GenerationOptions o;
  o.max_new_tokens = 20;
  const std::vector<int32_t> want_ids = Generator(cpu_model).generate(prompt, o).ids;

  for (DType dt : {DType::F32, DType::BF16}) {
    SCOPED_TRACE(dtype_name(dt));
    ModelOptions mo;
    mo.dtype = dt;
    LlamaModel gpu_model(s, base_weights_to(base, s, dev()), *gpu_, mo);
    gpu_model.attach_lora(gen_lora(s, dev()));
    Generator gg(gpu_model, 4);  // grows on the GPU too
    const Tensor prefill = gg.forward(prompt, true);
    const Tensor step = gg.forward({12});
    const float rtol = dt == DType::F32 ? 1e-4f : 5e-2f, atol = dt == DType::F32 ? 1e-4f : 3e-2f;
    EXPECT_EQ(test::compare(prefill.to_vector(), want_prefill, rtol,
                            atol * max_abs(want_prefill)), "");
    EXPECT_EQ(test::compare(step.to_vector(), want_step, rtol, atol * max_abs(want_step)), "");
    if (dt == DType::F32) {
      EXPECT_EQ(Generator(gpu_model).generate(prompt, o).ids, want_ids);
    }
  }
}

}  // namespace
