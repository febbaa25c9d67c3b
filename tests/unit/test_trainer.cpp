// Trainer core: LR schedules against HF's formulas, clipping, and token-weighted gradient
// accumulation (a window of micro-batches equals one batch holding them all).
#include <gtest/gtest.h>

#include <cmath>

#include "backend/ops.h"
#include "model/llama_model.h"
#include "support/test_support.h"
#include "train/trainer.h"

using namespace ftune;

TEST(LrSchedule, MatchesHfFormulas) {
  LrSchedule s{"linear", 1.0, 2, 10};
  EXPECT_DOUBLE_EQ(s.lr(0), 0.0);
  EXPECT_DOUBLE_EQ(s.lr(1), 0.5);
  EXPECT_DOUBLE_EQ(s.lr(2), 1.0);
  EXPECT_DOUBLE_EQ(s.lr(6), 0.5);
  EXPECT_DOUBLE_EQ(s.lr(10), 0.0);
  LrSchedule c{"cosine", 2.0, 0, 10};
  EXPECT_DOUBLE_EQ(c.lr(0), 2.0);
  EXPECT_NEAR(c.lr(5), 1.0, 1e-12);
  EXPECT_NEAR(c.lr(10), 0.0, 1e-12);
  EXPECT_NEAR(c.lr(3), 2.0 * 0.5 * (1 + std::cos(M_PI * 0.3)), 1e-12);
  LrSchedule k{"constant", 3.0, 4, 10};
  EXPECT_DOUBLE_EQ(k.lr(1), 0.75);
  EXPECT_DOUBLE_EQ(k.lr(9), 3.0);
  LrSchedule bad{"exponential", 1.0, 0, 10};
  EXPECT_THROW(bad.validate(), Error);
}

namespace {
ModelSpec spec() {
  ModelSpec s;
  s.vocab_size = 29;
  s.hidden_size = 16;
  s.intermediate_size = 20;
  s.num_layers = 1;
  s.num_heads = 2;
  s.num_kv_heads = 1;
  s.head_dim = 8;
  return s;
}
std::unique_ptr<LlamaModel> model(Ops& ops) {
  auto m = std::make_unique<LlamaModel>(spec(), random_base_weights(spec(), 5, 0.3f), ops);
  LoraSpec ls;
  ls.r = 2;
  LoraWeights w = LoraWeights::init(spec(), ls, Device::cpu());
  uint64_t k = 0;
  for (auto& p : w.params()) p.value->copy_from(test::random_tensor(p.value->shape(), ++k, 0.2f));
  m->attach_lora(std::move(w));
  return m;
}
}  // namespace

TEST(Trainer, AccumulationIsTokenWeighted) {
  auto ops = make_cpu_ops();
  // Two micro-batches with very different numbers of trained tokens.
  Batch a = batch_from_documents({{1, 2, 3, 4, 5, 6}}, {{1, 2, 3, 4, 5, 6}}, 6, 0);
  Batch b = batch_from_documents({{7, 8, 9, 10, 11, 12}}, {{-100, -100, -100, -100, 11, 12}}, 6, 0);
  Batch both = batch_from_documents({{1, 2, 3, 4, 5, 6}, {7, 8, 9, 10, 11, 12}},
                                    {{1, 2, 3, 4, 5, 6}, {-100, -100, -100, -100, 11, 12}}, 6, 0);
  TrainerOptions o;
  o.schedule = {"constant", 1e-2, 0, 10};
  o.max_grad_norm = 0;
  auto m1 = model(*ops), m2 = model(*ops);
  Trainer t1(*m1, o), t2(*m2, o);
  const StepStats s1 = t1.step({a, b});
  const StepStats s2 = t2.step({both});
  EXPECT_EQ(s1.trained_tokens, 5 + 2);  // targets are the next token's label
  EXPECT_EQ(s1.trained_tokens, s2.trained_tokens);
  EXPECT_NEAR(s1.loss, s2.loss, 1e-6 * std::fabs(s2.loss));
  EXPECT_NEAR(s1.grad_norm, s2.grad_norm, 1e-5 * s2.grad_norm);
  auto p1 = m1->lora().params(), p2 = m2->lora().params();
  for (size_t i = 0; i < p1.size(); ++i)
    EXPECT_EQ(test::compare(p1[i].value->to_vector(), p2[i].value->to_vector(), 1e-5f, 1e-7f), "");
  // And it is not the mean of the per-micro-batch means.
  auto m3 = model(*ops);
  const double la = m3->forward(a).mean(), lb = m3->forward(b).mean();
  EXPECT_GT(std::fabs(s1.loss - 0.5 * (la + lb)), 1e-4);
}

TEST(Trainer, ClippingBoundsTheUpdateNorm) {
  auto ops = make_cpu_ops();
  auto m = model(*ops);
  Batch a = batch_from_documents({{1, 2, 3, 4, 5, 6}}, {{1, 2, 3, 4, 5, 6}}, 6, 0);
  m->lora().zero_grad();
  m->forward_backward(a, 1.0f);
  auto params = m->lora().params();
  const double before = global_grad_norm(*ops, params);
  ASSERT_GT(before, 0.01);
  const double reported = clip_grad_norm(*ops, params, before / 4);
  EXPECT_DOUBLE_EQ(reported, before);
  EXPECT_NEAR(global_grad_norm(*ops, params), before / 4, 1e-4 * before);
  EXPECT_NEAR(clip_grad_norm(*ops, params, 1e9), before / 4, 1e-4 * before);  // no-op when under
}

TEST(Trainer, AllMaskedWindowIsAnError) {
  auto ops = make_cpu_ops();
  auto m = model(*ops);
  TrainerOptions o;
  Trainer t(*m, o);
  Batch a = batch_from_documents({{1, 2, 3}}, {{-100, -100, -100}}, 3, 0);
  EXPECT_THROW(t.step({a}), Error);
}
