// Trainer core: LR schedules against HF's formulas, clipping, token-weighted gradient
// accumulation (a window of micro-batches equals one batch holding them all), and float16's
// dynamic loss scaling.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/ops.h"
#include "model/llama_model.h"
#include "support/test_support.h"
#include "train/checkpoint.h"
#include "train/loss_scaler.h"
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

std::vector<std::vector<float>> weights(LlamaModel& m) {
  std::vector<std::vector<float>> v;
  for (auto& p : m.lora().params()) v.push_back(p.value->to_vector());
  return v;
}

Batch batch() { return batch_from_documents({{1, 2, 3, 4, 5, 6}}, {{1, 2, 3, 4, 5, 6}}, 6, 0); }

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

// Dynamic loss scaling (train/loss_scaler.h, float16 training): the scale's growth and backoff
// as torch's GradScaler, a scaled trainer step equal to an unscaled one, an overflowing step
// skipped without touching the weights or the optimizer state while the schedule advances, and
// the scaler's state through a checkpoint.
TEST(LossScaler, GrowsAfterTheIntervalAndBacksOffOnOverflow) {
  LossScalerOptions o;
  o.enabled = true;
  o.init_scale = 1024;
  o.growth_interval = 3;
  LossScaler s(o);
  EXPECT_EQ(s.scale(), 1024);
  EXPECT_TRUE(s.update(true));
  EXPECT_TRUE(s.update(true));
  EXPECT_EQ(s.scale(), 1024);
  EXPECT_TRUE(s.update(true));  // the third good step in a row
  EXPECT_EQ(s.scale(), 2048);
  EXPECT_TRUE(s.update(true));
  EXPECT_FALSE(s.update(false));  // overflow: skipped, halved, the count of good steps restarts
  EXPECT_EQ(s.scale(), 1024);
  EXPECT_EQ(s.skipped_steps(), 1);
  EXPECT_TRUE(s.update(true));
  EXPECT_TRUE(s.update(true));
  EXPECT_EQ(s.scale(), 1024);
  const LossScalerState st = s.state();
  EXPECT_EQ(st.scale, 1024);
  EXPECT_EQ(st.good_steps, 2);
  EXPECT_EQ(st.skipped_steps, 1);
  LossScaler r(o);
  r.load_state(st);
  EXPECT_TRUE(r.update(true));
  EXPECT_EQ(r.scale(), 2048);  // continues where the other left off
  EXPECT_EQ(r.skipped_steps(), 1);
  // Off: scale 1, every step applies.
  LossScaler off;
  EXPECT_EQ(off.scale(), 1.0);
  EXPECT_TRUE(off.update(false));
  EXPECT_EQ(off.state().scale, 0.0);
  // Overflowing at the smallest scale is an error, not an endless run of skipped steps.
  o.init_scale = 2;
  LossScaler low(o);
  EXPECT_FALSE(low.update(false));
  EXPECT_NE(test::error_of([&] { low.update(false); }).find("overflow even at loss scale 1"),
            std::string::npos);
  // Bad options and states.
  LossScalerOptions bad = o;
  bad.backoff_factor = 1.5;
  EXPECT_THROW(LossScaler{bad}, Error);
  EXPECT_NE(test::error_of([&] { r.load_state({std::nan(""), 0, 0}); }).find("must be finite"),
            std::string::npos);
}

TEST(LossScaler, ScaledStepEqualsTheUnscaledStep) {
  auto ops = make_cpu_ops();
  TrainerOptions plain;
  plain.schedule = {"constant", 1e-2, 0, 10};
  plain.max_grad_norm = 0.5;  // clipping acts on the unscaled gradients
  TrainerOptions scaled = plain;
  scaled.loss_scaling.enabled = true;
  auto m1 = model(*ops), m2 = model(*ops);
  Trainer t1(*m1, plain), t2(*m2, scaled);
  for (int i = 0; i < 3; ++i) {
    const StepStats a = t1.step({batch()});
    const StepStats b = t2.step({batch()});
    EXPECT_FALSE(b.skipped);
    EXPECT_EQ(b.loss_scale, 65536.0);
    EXPECT_EQ(a.loss_scale, 0.0);
    EXPECT_NEAR(b.loss, a.loss, 1e-7 * std::fabs(a.loss));
    EXPECT_NEAR(b.grad_norm, a.grad_norm, 1e-5 * a.grad_norm);
    EXPECT_EQ(b.step, a.step);
  }
  const auto w1 = weights(*m1), w2 = weights(*m2);
  for (size_t i = 0; i < w1.size(); ++i) EXPECT_EQ(test::compare(w2[i], w1[i], 1e-5f, 1e-7f), "");
}

TEST(LossScaler, OverflowSkipsTheUpdateAndTheScheduleGoesOn) {
  auto ops = make_cpu_ops();
  TrainerOptions o;
  o.schedule = {"linear", 1e-2, 0, 10};
  o.loss_scaling.enabled = true;
  o.loss_scaling.init_scale = 3e38;  // the scaled gradients overflow fp32 itself
  auto m = model(*ops);
  Trainer t(*m, o);
  const auto before = weights(*m);
  const StepStats s1 = t.step({batch()});
  EXPECT_TRUE(s1.skipped);
  EXPECT_FALSE(std::isfinite(s1.grad_norm));
  EXPECT_TRUE(std::isfinite(s1.loss));
  EXPECT_EQ(s1.step, 1);
  EXPECT_EQ(t.optimizer().steps_taken(), 0);
  EXPECT_EQ(t.loss_scaler().scale(), 1.5e38);
  const auto after = weights(*m);
  for (size_t i = 0; i < before.size(); ++i) EXPECT_EQ(after[i], before[i]) << i;
  // Halving until the gradients fit; then updates resume. The schedule counts every step.
  int skipped = 1;
  StepStats s;
  do {
    s = t.step({batch()});
    skipped += s.skipped ? 1 : 0;
  } while (s.skipped && skipped < 100);
  ASSERT_FALSE(s.skipped);
  EXPECT_EQ(s.step, skipped + 1);
  EXPECT_EQ(t.optimizer().steps_taken(), 1);
  EXPECT_EQ(t.global_step(), skipped + 1);
  EXPECT_NEAR(s.lr, 1e-2 * (10.0 - skipped) / 10.0, 1e-12);  // lr(global step), not lr(updates)
  EXPECT_GT(test::rel_l2(weights(*m)[0], before[0]), 1e-6);

  // The scaler's state travels with the checkpoint; a state that does not add up is refused.
  const std::string dir = test::temp_dir("loss_scale_ckpt");
  TrainerState st;
  st.global_step = t.global_step();
  st.loss_scaler = t.loss_scaler().state();
  const std::string ck = save_checkpoint(dir, m->lora(), t.optimizer(), st, AdapterMeta{}, 0);
  auto m2 = model(*ops);
  Trainer t2(*m2, o);
  const TrainerState back = load_checkpoint(ck, m2->lora(), t2.optimizer());
  EXPECT_EQ(back.loss_scaler.scale, st.loss_scaler.scale);
  EXPECT_EQ(back.loss_scaler.skipped_steps, skipped);
  EXPECT_EQ(back.loss_scaler.good_steps, 1);
  t2.loss_scaler().load_state(back.loss_scaler);
  EXPECT_EQ(t2.global_step(), t.global_step());
  nlohmann::json j;
  std::ifstream(ck + "/trainer_state.json") >> j;
  j["skipped_steps"] = skipped + 1;
  std::ofstream(ck + "/trainer_state.json") << j.dump();
  EXPECT_NE(test::error_of([&] { load_checkpoint(ck, m2->lora(), t2.optimizer()); })
                .find("is not optimizer_steps 1 + skipped_steps"),
            std::string::npos);
}
