// The training loop: logs, final adapter, checkpoints, and exact resume (a run interrupted and
// resumed ends bit-identical to an uninterrupted one).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/ops.h"
#include "io/safetensors.h"
#include "model/llama_model.h"
#include "support/test_support.h"
#include "train/checkpoint.h"
#include "train/train_loop.h"

using namespace ftune;
namespace fs = std::filesystem;

namespace {

ModelSpec spec() {
  ModelSpec s;
  s.vocab_size = 31;
  s.hidden_size = 16;
  s.intermediate_size = 24;
  s.num_layers = 2;
  s.num_heads = 2;
  s.num_kv_heads = 1;
  s.head_dim = 8;
  return s;
}

std::unique_ptr<LlamaModel> make_model(Ops& ops) {
  auto m = std::make_unique<LlamaModel>(spec(), random_base_weights(spec(), 9, 0.3f), ops);
  LoraSpec ls;
  ls.r = 2;
  ls.dropout = 0.1;  // resume must reproduce the dropout masks too
  m->attach_lora(LoraWeights::init(spec(), ls, Device::cpu()));
  return m;
}

// A deterministic "dataset": 5 micro-batches per epoch whose order depends on the epoch.
TrainData make_data() {
  TrainData d;
  d.epoch_batches = [](int64_t epoch) {
    std::vector<Batch> v;
    for (int i = 0; i < 5; ++i) {
      std::vector<int32_t> ids;
      for (int j = 0; j < 7; ++j) ids.push_back(static_cast<int32_t>((i * 7 + j * 3 + epoch * 5) % 31));
      v.push_back(batch_from_documents({ids}, {ids}, 8, 0));
    }
    return v;
  };
  d.validation.push_back(batch_from_documents({{1, 2, 3, 4}}, {{1, 2, 3, 4}}, 4, 0));
  return d;
}

TrainLoopOptions options(const std::string& dir) {
  TrainLoopOptions o;
  o.output_dir = dir;
  o.max_steps = 7;  // crosses an epoch boundary (3 steps per epoch with accumulation 2)
  o.gradient_accumulation_steps = 2;
  o.warmup_steps = 2;
  o.console = "none";
  o.trainer.schedule.kind = "cosine";
  o.trainer.schedule.base_lr = 5e-2;
  o.trainer.adamw.weight_decay = 0.01;
  return o;
}

std::vector<std::vector<float>> weights(LlamaModel& m) {
  std::vector<std::vector<float>> v;
  for (auto& p : m.lora().params()) v.push_back(p.value->to_vector());
  return v;
}

}  // namespace

TEST(TrainLoop, WritesLogsAdapterAndCheckpoints) {
  auto ops = make_cpu_ops();
  auto m = make_model(*ops);
  const std::string dir = test::temp_dir("loop");
  TrainLoopOptions o = options(dir);
  o.save_steps = 3;
  o.save_total_limit = 1;
  o.eval_steps = 3;
  const TrainSummary s = run_training(*m, o, make_data());
  EXPECT_EQ(s.steps, 7);
  EXPECT_GT(s.eval_loss, 0);
  EXPECT_TRUE(fs::exists(dir + "/adapter/adapter_model.safetensors"));
  EXPECT_TRUE(fs::exists(dir + "/adapter/adapter_config.json"));
  // save_total_limit 1: only the final checkpoint remains.
  EXPECT_FALSE(fs::exists(dir + "/checkpoints/step-3"));
  EXPECT_TRUE(fs::exists(dir + "/checkpoints/step-7/trainer_state.json"));
  std::ifstream f(dir + "/metrics.jsonl");
  std::string line;
  int steps = 0, evals = 0;
  while (std::getline(f, line)) {
    auto j = nlohmann::json::parse(line);
    if (j.contains("eval_loss")) {
      ++evals;
      continue;
    }
    ++steps;
    for (const char* k : {"step", "epoch", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "elapsed_s"})
      EXPECT_TRUE(j.contains(k)) << k;
    EXPECT_EQ(j["step"], steps);
  }
  EXPECT_EQ(steps, 7);
  EXPECT_EQ(evals, 3);  // steps 3 and 6, and the end
  bool tb = false;
  for (const auto& e : fs::directory_iterator(dir + "/tensorboard"))
    tb |= e.path().filename().string().rfind("events.out.tfevents.", 0) == 0;
  EXPECT_TRUE(tb);
}

TEST(TrainLoop, ResumeIsExact) {
  auto ops = make_cpu_ops();
  const std::string straight = test::temp_dir("straight"), split = test::temp_dir("split");
  auto a = make_model(*ops);
  run_training(*a, options(straight), make_data());

  // Interrupted run: the same job writes a checkpoint at step 4; everything after it is
  // removed, as if the process had died there, and a fresh model resumes from it.
  auto b = make_model(*ops);
  TrainLoopOptions o = options(split);
  o.save_steps = 4;
  run_training(*b, o, make_data());
  fs::remove_all(split + "/checkpoints/step-7");
  fs::remove_all(split + "/adapter");
  auto c = make_model(*ops);  // fresh weights: everything must come from the checkpoint
  TrainLoopOptions r = options(split);
  r.resume = true;
  const TrainSummary s = run_training(*c, r, make_data());
  EXPECT_EQ(s.steps, 3);
  EXPECT_EQ(weights(*a), weights(*c));
}

TEST(TrainLoop, ResumeWithoutCheckpointIsAnError) {
  auto ops = make_cpu_ops();
  auto m = make_model(*ops);
  TrainLoopOptions o = options(test::temp_dir("nockpt"));
  o.resume = true;
  try {
    run_training(*m, o, make_data());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no checkpoint"), std::string::npos) << e.what();
  }
}

TEST(TrainLoop, EpochsPlanCountsEveryEpochsBatches) {
  auto ops = make_cpu_ops();
  auto m = make_model(*ops);
  TrainData d = make_data();
  auto base = d.epoch_batches;
  int calls_epoch1 = 0;
  // Epoch 1 packs into one more micro-batch than epoch 0 (5 -> 7: 3 + 4 windows of 2).
  d.epoch_batches = [&](int64_t epoch) {
    auto v = base(epoch);
    if (epoch == 1) {
      ++calls_epoch1;
      v.push_back(v.front());
      v.push_back(v.back());
    }
    return v;
  };
  TrainLoopOptions o = options(test::temp_dir("epochs"));
  o.max_steps = -1;
  o.num_epochs = 2;
  const TrainSummary s = run_training(*m, o, d);
  EXPECT_EQ(s.steps, 3 + 4);
  EXPECT_GE(calls_epoch1, 1);
}

// Dropout masks are keyed by (step, global micro-batch index), so evaluating between steps
// does not change what is trained (it used to advance a forward counter).
TEST(TrainLoop, EvaluationDoesNotChangeTraining) {
  auto ops = make_cpu_ops();
  auto a = make_model(*ops);
  auto b = make_model(*ops);
  auto c = make_model(*ops);
  TrainLoopOptions oa = options(test::temp_dir("noeval"));
  oa.eval_steps = 0;
  TrainLoopOptions ob = options(test::temp_dir("evalevery2"));
  ob.eval_steps = 2;
  run_training(*a, oa, make_data());
  run_training(*b, ob, make_data());
  EXPECT_EQ(weights(*a), weights(*b));
  // ... while dropout does act: no dropout trains other weights.
  c->lora().spec.dropout = 0.0;
  run_training(*c, options(test::temp_dir("nodropout")), make_data());
  EXPECT_NE(weights(*a), weights(*c));
}

// The lazy epoch (TrainData::epoch) trains exactly what the whole list does, and builds each
// micro-batch once.
TEST(TrainLoop, LazyEpochMatchesTheWholeList) {
  auto ops = make_cpu_ops();
  auto a = make_model(*ops);
  auto b = make_model(*ops);
  run_training(*a, options(test::temp_dir("whole")), make_data());
  TrainData lazy = make_data();
  auto whole = lazy.epoch_batches;
  lazy.epoch_batches = nullptr;
  int built = 0;
  lazy.epoch = [&](int64_t e) {
    auto v = std::make_shared<std::vector<Batch>>(whole(e));
    return EpochBatches{static_cast<int64_t>(v->size()), [v, &built](int64_t i) {
                          ++built;
                          return (*v)[static_cast<size_t>(i)];
                        }};
  };
  run_training(*b, options(test::temp_dir("lazy")), lazy);
  EXPECT_EQ(weights(*a), weights(*b));
  EXPECT_EQ(built, 5 + 5 + 2);  // epochs of 5 micro-batches, windows of 2: 7 steps
}
