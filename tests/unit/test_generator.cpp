// Generation with a KV cache (model/generator.h): the logits of a prefill followed by one-token
// decode steps equal a full forward over the whole sequence at every position (fp32 CPU, 1e-5),
// with and without a LoRA adapter, with GQA, llama3 RoPE scaling and qwen2 biases; the cache is
// reused across prompts sharing a prefix; greedy generation equals argmax decoding by full
// forwards and is deterministic; seeded sampling repeats; stop tokens and max_new_tokens end it.
#include <gtest/gtest.h>

#include <cmath>

#include "backend/ops.h"
#include "model/generator.h"
#include "model/llama_model.h"
#include "support/test_support.h"

using namespace ftune;

namespace {

struct Case {
  std::string name;
  std::string arch = "llama";
  bool adapter = false;
  bool llama3_rope = false;
  int64_t kv_heads = 2;  // of 4 query heads: GQA when < 4
};

ModelSpec spec_for(const Case& c) {
  ModelSpec s;
  s.arch = c.arch;
  s.vocab_size = 41;
  s.hidden_size = 32;
  s.intermediate_size = 40;
  s.num_layers = 3;
  s.num_heads = 4;
  s.num_kv_heads = c.kv_heads;
  s.head_dim = 8;
  s.max_position_embeddings = 128;
  if (c.arch == "qwen2") s.proj_bias[0] = s.proj_bias[1] = s.proj_bias[2] = true;
  if (c.llama3_rope) {
    s.rope.theta = 500000.0;
    s.rope.type = "llama3";
    s.rope.factor = 8.0;
    s.rope.low_freq_factor = 1.0;
    s.rope.high_freq_factor = 4.0;
    s.rope.original_max_position_embeddings = 16;
  }
  return s;
}

// A model with random weights and, when asked, a random non-zero adapter on every projection
// (alpha != r, so the scaling matters).
LlamaModel make_model(const Case& c, Ops& ops) {
  const ModelSpec s = spec_for(c);
  LlamaModel m(s, random_base_weights(s, 7, 0.3f), ops);
  if (c.adapter) {
    LoraSpec ls;
    ls.r = 4;
    ls.alpha = 6;
    LoraWeights w = LoraWeights::init(s, ls, Device::cpu());
    uint64_t k = 100;
    for (auto& p : w.params()) p.value->copy_from(test::random_tensor(p.value->shape(), ++k, 0.3f));
    m.attach_lora(std::move(w));
  }
  return m;
}

// Logits [N, V] of a full forward over one document.
std::vector<float> full_logits(LlamaModel& m, const std::vector<int32_t>& ids) {
  const int64_t n = static_cast<int64_t>(ids.size());
  Batch b = batch_from_documents({ids}, {ids}, n, 0);
  Tensor logits = Tensor::empty({n, m.spec().vocab_size});
  m.forward(b, &logits);
  return logits.to_vector();
}

const std::vector<int32_t> kSeq = {3, 17, 5, 40, 22, 9, 9, 1, 30, 12, 6, 27, 35, 2};

class CachedDecode : public ::testing::TestWithParam<Case> {};

TEST_P(CachedDecode, LogitsEqualFullForwardAtEveryPosition) {
  auto ops = make_cpu_ops();
  LlamaModel m = make_model(GetParam(), *ops);
  const int64_t V = m.spec().vocab_size;
  const std::vector<float> want = full_logits(m, kSeq);
  // Prefill 5 tokens (all logits), then one token at a time; a capacity of 4 makes the cache
  // grow (and copy what it holds) twice on the way.
  Generator g(m, 4);
  const size_t prefill = 5;
  std::vector<float> got =
      g.forward(std::vector<int32_t>(kSeq.begin(), kSeq.begin() + prefill), true).to_vector();
  for (size_t i = prefill; i < kSeq.size(); ++i) {
    const std::vector<float> row = g.forward({kSeq[i]}).to_vector();
    ASSERT_EQ(static_cast<int64_t>(row.size()), V);
    got.insert(got.end(), row.begin(), row.end());
  }
  EXPECT_EQ(g.cache().length(), static_cast<int64_t>(kSeq.size()));
  EXPECT_GE(g.cache().capacity(), static_cast<int64_t>(kSeq.size()));
  // fp32 with another summation order (one query row against the cache vs the full causal
  // attention; OpenBLAS picks its kernels by CPU): 1.6e-5 apart on AMD EPYC, while a wrong cache
  // entry or position moves logits by 1e-2 and more.
  EXPECT_EQ(test::compare(got, want, 3e-5f, 3e-5f), "");
  // Logits are not degenerate: positions differ.
  EXPECT_GT(std::abs(got[0] - got[static_cast<size_t>(V)]), 1e-4);
}

INSTANTIATE_TEST_SUITE_P(
    Models, CachedDecode,
    ::testing::Values(Case{"gqa"}, Case{"gqa_adapter", "llama", true},
                      Case{"mha_adapter", "llama", true, false, 4},
                      Case{"mqa_llama3_rope", "llama", false, true, 1},
                      Case{"llama3_rope_adapter", "llama", true, true},
                      Case{"qwen2_bias_adapter", "qwen2", true}),
    [](const auto& info) { return info.param.name; });

TEST(Generator, DecodesWithAnFp8Base) {
  // model.fp8_base: decoding runs the FP8 GEMMs on one row at a time. Each GEMM input is scaled
  // per tensor, so a cached one-token step and the full forward quantize differently: their
  // logits agree to FP8's precision (a few percent), not to fp32's, and both stay near the
  // dense model's.
  auto ops = make_cpu_ops();
  const ModelSpec s = spec_for(Case{"fp8"});
  ModelOptions o;
  o.fp8_base = true;
  // Weights of a trained model's scale (0.3 as above makes this tiny model chaotic: any rounding
  // of its activations grows through the layers).
  LlamaModel dense(s, random_base_weights(s, 7, 0.08f), *ops);
  LlamaModel fp8(s, random_base_weights(s, 7, 0.08f), *ops, o);
  ASSERT_TRUE(fp8.base().layers[0].fp8());
  const std::vector<float> want = full_logits(fp8, kSeq), dense_logits = full_logits(dense, kSeq);
  Generator g(fp8, 4);
  std::vector<float> got = g.forward(std::vector<int32_t>(kSeq.begin(), kSeq.begin() + 5), true).to_vector();
  for (size_t i = 5; i < kSeq.size(); ++i) {
    const std::vector<float> row = g.forward({kSeq[i]}).to_vector();
    got.insert(got.end(), row.begin(), row.end());
  }
  ASSERT_EQ(got.size(), want.size());
  EXPECT_LT(test::rel_l2(got, want), 0.05);
  EXPECT_GT(test::rel_l2(got, want), 1e-6);  // (the scales did differ)
  EXPECT_LT(test::rel_l2(want, dense_logits), 0.1);
  EXPECT_GT(test::rel_l2(want, dense_logits), 1e-4);  // FP8 did change the numbers
  GenerationOptions go;
  go.max_new_tokens = 6;
  Generator g2(fp8);
  const GenerationResult r = g2.generate({3, 17, 5}, go);
  EXPECT_EQ(r.ids.size(), 6u);
  EXPECT_EQ(Generator(fp8).generate({3, 17, 5}, go).ids, r.ids);  // deterministic
}

TEST(Generator, AdapterChangesTheLogits) {
  // Guards the test above against an adapter that is silently ignored.
  auto ops = make_cpu_ops();
  LlamaModel base = make_model(Case{"a"}, *ops);
  LlamaModel adapted = make_model(Case{"b", "llama", true}, *ops);
  Generator gb(base), ga(adapted);
  const auto lb = gb.forward(kSeq).to_vector(), la = ga.forward(kSeq).to_vector();
  EXPECT_NE(test::compare(la, lb, 1e-3f, 1e-3f), "");
}

// Greedy decoding the slow way: a full forward over the whole sequence for every new token.
std::vector<int32_t> greedy_by_full_forward(LlamaModel& m, std::vector<int32_t> seq, int n) {
  std::vector<int32_t> out;
  const int64_t V = m.spec().vocab_size;
  for (int i = 0; i < n; ++i) {
    const std::vector<float> l = full_logits(m, seq);
    const int32_t t = argmax_token(l.data() + (static_cast<int64_t>(seq.size()) - 1) * V, V);
    out.push_back(t);
    seq.push_back(t);
  }
  return out;
}

TEST(Generator, GreedyEqualsArgmaxOfFullForwardsAndRepeats) {
  auto ops = make_cpu_ops();
  LlamaModel m = make_model(Case{"x", "llama", true, true}, *ops);
  const std::vector<int32_t> prompt(kSeq.begin(), kSeq.begin() + 6);
  const std::vector<int32_t> want = greedy_by_full_forward(m, prompt, 12);
  Generator g(m);
  GenerationOptions o;
  o.max_new_tokens = 12;
  const GenerationResult r = g.generate(prompt, o);
  EXPECT_EQ(r.ids, want);
  EXPECT_EQ(r.stop_reason, "length");
  EXPECT_EQ(r.prompt_tokens, 6);
  // Again from a fresh generator and from the warm one (which reuses 5 prompt tokens).
  Generator g2(m);
  EXPECT_EQ(g2.generate(prompt, o).ids, want);
  const GenerationResult again = g.generate(prompt, o);
  EXPECT_EQ(again.ids, want);
  EXPECT_EQ(again.reused_tokens, 5);
}

TEST(Generator, ReusesTheCachedPrefixOfALongerPrompt) {
  auto ops = make_cpu_ops();
  LlamaModel m = make_model(Case{"x", "llama", true}, *ops);
  GenerationOptions o;
  o.max_new_tokens = 6;
  Generator warm(m);
  const std::vector<int32_t> first(kSeq.begin(), kSeq.begin() + 4);
  warm.generate(first, o);
  // A longer prompt that starts with the first one: its first 4 tokens come from the cache.
  const GenerationResult r = warm.generate(kSeq, o);
  EXPECT_EQ(r.reused_tokens, 4);
  // A prompt that diverges at token 2 cuts the cache back to 2 tokens.
  std::vector<int32_t> other = kSeq;
  other[2] = 0;
  const GenerationResult r2 = warm.generate(other, o);
  EXPECT_EQ(r2.reused_tokens, 2);
  Generator cold(m);
  EXPECT_EQ(r2.ids, cold.generate(other, o).ids);
  EXPECT_EQ(r.ids, Generator(m).generate(kSeq, o).ids);
}

TEST(Generator, SeededSamplingRepeatsAndSeedsDiffer) {
  auto ops = make_cpu_ops();
  LlamaModel m = make_model(Case{"x"}, *ops);
  GenerationOptions o;
  o.max_new_tokens = 24;
  o.sampling.temperature = 5.0;  // a flat distribution: draws differ between seeds
  o.sampling.seed = 1234;
  Generator g(m);
  const std::vector<int32_t> prompt = {1, 2, 3};
  const auto a = g.generate(prompt, o).ids;
  const auto b = Generator(m).generate(prompt, o).ids;
  EXPECT_EQ(a, b);
  o.sampling.seed = 99;
  const auto c = g.generate(prompt, o).ids;
  EXPECT_NE(a, c);
  // top_k = 1 is greedy whatever the temperature and seed.
  o.sampling.top_k = 1;
  GenerationOptions greedy;
  greedy.max_new_tokens = 24;
  EXPECT_EQ(g.generate(prompt, o).ids, g.generate(prompt, greedy).ids);
}

TEST(Generator, StopsAtAStopTokenOrMaxNewTokens) {
  auto ops = make_cpu_ops();
  LlamaModel m = make_model(Case{"x", "llama", true}, *ops);
  Generator g(m);
  GenerationOptions o;
  o.max_new_tokens = 10;
  const std::vector<int32_t> prompt = {4, 8, 15};
  const std::vector<int32_t> all = g.generate(prompt, o).ids;
  ASSERT_EQ(all.size(), 10u);
  // Stop at the first occurrence of the 4th generated token (which may occur earlier).
  const int32_t stop = all[3];
  size_t first = 0;
  while (all[first] != stop) ++first;
  o.stop_ids = {40, stop};
  const GenerationResult r = g.generate(prompt, o);
  EXPECT_EQ(r.stop_reason, "stop");
  ASSERT_EQ(r.ids.size(), first + 1);
  EXPECT_EQ(r.ids.back(), stop);
  EXPECT_EQ(std::vector<int32_t>(all.begin(), all.begin() + first + 1), r.ids);
  // The callback sees every token and can stop early.
  std::vector<int32_t> seen;
  o.stop_ids.clear();
  const GenerationResult c = g.generate(prompt, o, [&](int32_t t) {
    seen.push_back(t);
    return seen.size() < 3;
  });
  EXPECT_EQ(c.stop_reason, "cancelled");
  EXPECT_EQ(seen, std::vector<int32_t>(all.begin(), all.begin() + 3));
  o.max_new_tokens = 0;
  EXPECT_TRUE(g.generate(prompt, o).ids.empty());
}

TEST(Generator, RefusesBadTokens) {
  auto ops = make_cpu_ops();
  LlamaModel m = make_model(Case{"x"}, *ops);
  Generator g(m);
  EXPECT_NE(test::error_of([&] { g.forward({1, 41}); }).find("token id 41 at position 1 is outside the vocabulary (size 41)"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] { g.generate({}, GenerationOptions{}); }).find("no tokens"),
            std::string::npos);
}

}  // namespace
