// Golden tests: ftune's CPU reference against HF Transformers + PEFT on tiny random models
// (fixtures made by tests/golden/make_goldens.py). Required: loss and logits to relative error
// 1e-4, every LoRA gradient to 1e-3, the losses of 3 AdamW steps to 1e-4.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/ops.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "model/adapter_io.h"
#include "model/llama_model.h"
#include "support/test_support.h"
#include "train/trainer.h"

using namespace ftune;

namespace {

std::vector<int32_t> ints(const SafetensorsFile& f, const std::string& name) {
  Tensor t = f.tensor(name);
  EXPECT_EQ(t.dtype(), DType::I32) << name;
  return std::vector<int32_t>(t.data<int32_t>(), t.data<int32_t>() + t.numel());
}

// max |got - want| / max |want|: relative error on the scale of the tensor.
double rel_max(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    num = std::max(num, std::fabs(static_cast<double>(got[i]) - want[i]));
    den = std::max(den, std::fabs(static_cast<double>(want[i])));
  }
  return den == 0 ? num : num / den;
}

struct Fixture {
  std::string dir;
  nlohmann::json expected;
  Batch batch;
  std::unique_ptr<Ops> ops = make_cpu_ops();
  std::unique_ptr<LlamaModel> model;
  std::unique_ptr<SafetensorsFile> want;

  explicit Fixture(const std::string& variant) {
    dir = test::data_path("golden/fixtures/" + variant);
    expected = read_json_file(dir + "/expected.json");
    SafetensorsFile in = SafetensorsFile::open(dir + "/inputs.safetensors");
    const auto rs = ints(in, "rows_seq");
    batch.rows = rs[0];
    batch.seq_len = rs[1];
    batch.input_ids = ints(in, "input_ids");
    batch.labels = ints(in, "labels");
    batch.position_ids = ints(in, "position_ids");
    batch.doc_start = ints(in, "doc_start");
    model = std::make_unique<LlamaModel>(LlamaModel::from_hf_folder(dir, *ops));
    model->attach_lora(load_peft_adapter(dir + "/adapter", model->spec(), ops->device()));
    want = std::make_unique<SafetensorsFile>(SafetensorsFile::open(dir + "/expected.safetensors"));
  }
};

class Golden : public ::testing::TestWithParam<std::string> {};

TEST_P(Golden, LogitsAndLoss) {
  Fixture fx(GetParam());
  const int64_t N = fx.batch.tokens(), V = fx.model->spec().vocab_size;
  Tensor logits = Tensor::zeros({N, V});
  const StepLoss loss = fx.model->forward(fx.batch, &logits);
  EXPECT_EQ(loss.count, fx.expected["count"].get<int64_t>());
  const double want_loss = fx.expected["loss"].get<double>();
  const double loss_rel = std::fabs(loss.mean() - want_loss) / std::fabs(want_loss);
  EXPECT_LE(loss_rel, 1e-4) << "loss " << loss.mean() << " want " << want_loss;

  const auto got = logits.to_vector();
  const auto ref = fx.want->tensor("logits").to_vector();
  const Tensor valid_t = fx.want->tensor("logits_valid");
  const uint8_t* valid = valid_t.data<uint8_t>();
  std::vector<float> g, w;
  for (int64_t i = 0; i < N; ++i) {
    if (!valid[i]) continue;
    g.insert(g.end(), got.begin() + i * V, got.begin() + (i + 1) * V);
    w.insert(w.end(), ref.begin() + i * V, ref.begin() + (i + 1) * V);
  }
  ASSERT_FALSE(w.empty());
  const double lrel = rel_max(g, w);
  EXPECT_LE(lrel, 1e-4) << "logits max relative error";
  EXPECT_LE(test::rel_l2(g, w), 1e-4);
  std::printf("[golden %s] loss rel err %.2e, logits max rel err %.2e, l2 rel err %.2e\n",
              GetParam().c_str(), loss_rel, lrel, test::rel_l2(g, w));
}

TEST_P(Golden, LoraGradients) {
  Fixture fx(GetParam());
  auto& lora = fx.model->lora();
  lora.zero_grad();
  const int64_t count = count_trained_tokens(fx.batch);
  fx.model->forward_backward(fx.batch, 1.0f / static_cast<float>(count));
  double worst = 0;
  int checked = 0;
  for (const auto& p : lora.params()) {
    const std::string key = p.name + ".grad";
    ASSERT_TRUE(fx.want->contains(key)) << key;
    const auto want = fx.want->tensor(key).to_vector();
    const auto got = p.grad->to_vector();
    const double rel = rel_max(got, want);
    EXPECT_LE(rel, 1e-3) << key;
    worst = std::max(worst, rel);
    ++checked;
  }
  // Every gradient in the fixture belongs to a parameter we have.
  int in_file = 0;
  for (const auto& n : fx.want->names())
    if (n.size() > 5 && n.substr(n.size() - 5) == ".grad") ++in_file;
  EXPECT_EQ(checked, in_file);
  std::printf("[golden %s] %d LoRA gradients, worst max rel err %.2e\n", GetParam().c_str(),
              checked, worst);
}

TEST_P(Golden, ThreeAdamWSteps) {
  Fixture fx(GetParam());
  const auto& o = fx.expected["optimizer"];
  TrainerOptions opts;
  opts.schedule.kind = "constant";
  opts.schedule.base_lr = o["lr"].get<double>();
  opts.schedule.total_steps = 3;
  opts.adamw.beta1 = o["betas"][0].get<double>();
  opts.adamw.beta2 = o["betas"][1].get<double>();
  opts.adamw.eps = o["eps"].get<double>();
  opts.adamw.weight_decay = o["weight_decay"].get<double>();
  opts.max_grad_norm = o["max_grad_norm"].get<double>();
  Trainer trainer(*fx.model, opts);
  double worst = 0;
  for (int s = 0; s < 3; ++s) {
    const StepStats st = trainer.step({fx.batch});
    const double want = fx.expected["losses"][s].get<double>();
    const double rel = std::fabs(st.loss - want) / std::fabs(want);
    EXPECT_LE(rel, 1e-4) << "step " << s << " loss " << st.loss << " want " << want;
    const double want_norm = fx.expected["grad_norms"][s].get<double>();
    EXPECT_LE(std::fabs(st.grad_norm - want_norm) / want_norm, 1e-3) << "step " << s;
    worst = std::max(worst, rel);
  }
  const StepLoss after = fx.model->forward(fx.batch);
  const double want_after = fx.expected["loss_after"].get<double>();
  const double rel_after = std::fabs(after.mean() - want_after) / std::fabs(want_after);
  EXPECT_LE(rel_after, 1e-4);
  double worst_w = 0;
  for (const auto& p : fx.model->lora().params()) {
    const auto want = fx.want->tensor(p.name + ".after3").to_vector();
    const double rel = rel_max(p.value->to_vector(), want);
    EXPECT_LE(rel, 1e-3) << p.name;
    worst_w = std::max(worst_w, rel);
  }
  std::printf("[golden %s] 3-step losses worst rel err %.2e, after-3 loss %.2e, weights %.2e\n",
              GetParam().c_str(), worst, rel_after, worst_w);
}

INSTANTIATE_TEST_SUITE_P(Variants, Golden,
                         ::testing::Values("llama", "llama_tied_rope3", "mistral", "qwen2"));

}  // namespace

// The same model split into a sharded checkpoint (model.safetensors.index.json + two shards)
// loads to identical logits.
TEST(GoldenSharded, ShardedCheckpointLoadsTheSameModel) {
  const std::string src = test::data_path("golden/fixtures/llama");
  const std::string dir = test::temp_dir("sharded");
  std::filesystem::copy_file(src + "/config.json", dir + "/config.json");
  SafetensorsFile whole = SafetensorsFile::open(src + "/model.safetensors");
  std::vector<std::pair<std::string, Tensor>> a, b;
  nlohmann::json map = nlohmann::json::object();
  for (const auto& n : whole.names()) {
    const bool first = n.find("layers.1.") == std::string::npos;
    (first ? a : b).emplace_back(n, whole.tensor(n));
    map[n] = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  ASSERT_FALSE(a.empty());
  ASSERT_FALSE(b.empty());
  write_safetensors(dir + "/model-00001-of-00002.safetensors", a);
  write_safetensors(dir + "/model-00002-of-00002.safetensors", b);
  std::ofstream(dir + "/model.safetensors.index.json")
      << nlohmann::json{{"metadata", {{"total_size", 0}}}, {"weight_map", map}}.dump();
  auto ops = make_cpu_ops();
  LlamaModel m1 = LlamaModel::from_hf_folder(src, *ops);
  LlamaModel m2 = LlamaModel::from_hf_folder(dir, *ops);
  Batch batch = batch_from_documents({{5, 17, 42, 99, 3}}, {{5, 17, 42, 99, 3}}, 5, 0);
  Tensor l1 = Tensor::zeros({5, m1.spec().vocab_size}), l2 = Tensor::zeros({5, m2.spec().vocab_size});
  m1.forward(batch, &l1);
  m2.forward(batch, &l2);
  EXPECT_EQ(l1.to_vector(), l2.to_vector());
}
