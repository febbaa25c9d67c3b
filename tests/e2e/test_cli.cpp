// End-to-end tests of the ftune binary: the embedded default job, outputs, overwrite protection,
// resume, eval, and every bad input giving a one-line error before any training starts.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support/cli_run.h"
#include "support/test_support.h"

namespace fs = std::filesystem;
using nlohmann::json;

using ftune::test::CliRun;
using ftune::test::run_ftune;
using ftune::test::last_line;

namespace {

std::vector<json> read_jsonl(const std::string& path) {
  std::vector<json> v;
  std::ifstream f(path);
  std::string line;
  while (std::getline(f, line)) v.push_back(json::parse(line));
  return v;
}

void write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

// The default job trained once per build and shared by the tests (ctest runs each test in its
// own process, possibly in parallel): the first process trains under a file lock, the others
// wait and reuse the result; a newer ftune binary trains again.
const std::string& trained_dir() {
  static std::string dir = [] {
    const std::string d = std::string(FTUNE_BINARY_DIR) + "/e2e_default_job";
    fs::create_directories(d);
    const int fd = open((d + "/.lock").c_str(), O_CREAT | O_RDWR, 0644);
    EXPECT_GE(fd, 0);
    flock(fd, LOCK_EX);
    const std::string done = d + "/.done";
    const fs::path bin = std::string(FTUNE_BINARY_DIR) + "/ftune";
    if (!fs::exists(done) || fs::last_write_time(bin) > fs::last_write_time(done)) {
      fs::remove(done);
      fs::remove_all(d + "/outputs");
      CliRun r = run_ftune("train", d);
      EXPECT_EQ(r.code, 0) << r.err;
      std::printf("[default job] %.1f s wall\n", r.seconds);
      if (r.code == 0) write(done, "ok\n");
    }
    flock(fd, LOCK_UN);
    close(fd);
    return d;
  }();
  return dir;
}

}  // namespace

TEST(Cli, DefaultJobTrainsAndWritesEverything) {
  const std::string d = trained_dir();
  const std::string out = d + "/outputs";
  for (const char* f : {"adapter/adapter_config.json", "adapter/adapter_model.safetensors",
                        "metrics.jsonl", "config.resolved.yaml", "base_model/config.json",
                        "base_model/model.safetensors", "base_model/tokenizer.json"})
    EXPECT_TRUE(fs::exists(out + "/" + f)) << f;
  bool tb = false;
  for (const auto& e : fs::directory_iterator(out + "/tensorboard"))
    tb |= e.path().filename().string().rfind("events.out.tfevents.", 0) == 0;
  EXPECT_TRUE(tb);
  std::vector<double> losses;
  int evals = 0;
  for (const json& j : read_jsonl(out + "/metrics.jsonl")) {
    if (j.contains("eval_loss")) {
      ++evals;
      continue;
    }
    for (const char* k : {"step", "epoch", "loss", "lr", "grad_norm", "tokens", "tokens_per_s", "elapsed_s"})
      ASSERT_TRUE(j.contains(k)) << k;
    losses.push_back(j["loss"].get<double>());
  }
  ASSERT_EQ(losses.size(), 120u);
  EXPECT_GE(evals, 1);
  double last10 = 0;
  for (size_t i = losses.size() - 10; i < losses.size(); ++i) last10 += losses[i] / 10;
  // The loss falls clearly: from about ln(vocab) to well below it.
  EXPECT_LT(last10, losses[0] - 2.5) << "first " << losses[0] << " last-10 mean " << last10;
  const json cfg = json::parse(std::ifstream(out + "/adapter/adapter_config.json"));
  EXPECT_EQ(cfg["peft_type"], "LORA");
  EXPECT_EQ(cfg["r"], 16);
}

TEST(Cli, ExistingOutputIsNotOverwritten) {
  const std::string d = trained_dir();
  const auto before = fs::last_write_time(d + "/outputs/adapter/adapter_model.safetensors");
  CliRun r = run_ftune("train", d);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(last_line(r.err).find("already holds results"), std::string::npos) << r.err;
  EXPECT_EQ(fs::last_write_time(d + "/outputs/adapter/adapter_model.safetensors"), before);
}

TEST(Cli, EvalComparesBaseAndAdapter) {
  const std::string d = trained_dir();
  const std::string data = ftune::test::data_path("../assets/debug_dataset/conversations.jsonl");
  CliRun base = run_ftune("eval --model outputs/base_model --data '" + data + "' --max-seq-length 512", d);
  CliRun tuned = run_ftune("eval --model outputs/base_model --adapter outputs/adapter --data '" + data +
                        "' --max-seq-length 512",
                    d);
  ASSERT_EQ(base.code, 0) << base.err;
  ASSERT_EQ(tuned.code, 0) << tuned.err;
  const json b = json::parse(base.out), t = json::parse(tuned.out);
  EXPECT_EQ(b["tokens"], t["tokens"]);
  EXPECT_GT(b["tokens"].get<int64_t>(), 1000);
  EXPECT_NEAR(b["perplexity"].get<double>(), std::exp(b["loss"].get<double>()), 1e-6 * b["perplexity"].get<double>());
  EXPECT_LT(t["loss"].get<double>(), b["loss"].get<double>() - 1.0);
}

TEST(Cli, ResumeContinuesFromTheCheckpoint) {
  const std::string d = ftune::test::temp_dir("cli_resume");
  CliRun a = run_ftune("train train.max_steps=4 train.save_steps=2 train.eval_steps=0", d);
  ASSERT_EQ(a.code, 0) << a.err;
  // Lose the end of the run, as a crash after step 2 would.
  fs::remove_all(d + "/outputs/checkpoints/step-4");
  fs::remove_all(d + "/outputs/adapter");
  CliRun b = run_ftune("train train.max_steps=4 train.save_steps=2 train.eval_steps=0 --resume", d);
  ASSERT_EQ(b.code, 0) << b.err;
  EXPECT_TRUE(fs::exists(d + "/outputs/adapter/adapter_model.safetensors"));
  // Resuming a finished run adds nothing.
  CliRun again = run_ftune("train train.max_steps=4 train.save_steps=2 train.eval_steps=0 --resume", d);
  EXPECT_EQ(again.code, 0) << again.err;
  EXPECT_NE(again.err.find("nothing to do"), std::string::npos) << again.err;
  std::vector<int64_t> steps;
  for (const json& j : read_jsonl(d + "/outputs/metrics.jsonl"))
    if (j.contains("loss")) steps.push_back(j["step"].get<int64_t>());
  // Steps 3 and 4 logged by the lost end of the run are dropped on resume: each step once.
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 4}));
  // A changed LoRA setting refuses to resume.
  CliRun c = run_ftune("train train.max_steps=4 lora.r=8 --resume", d);
  EXPECT_EQ(c.code, 1);
  EXPECT_NE(last_line(c.err).find("different configuration"), std::string::npos) << c.err;
}

TEST(Cli, BadInputsFailBeforeTraining) {
  const std::string d = ftune::test::temp_dir("cli_bad");
  const std::string base = trained_dir() + "/outputs/base_model";
  write(d + "/bad.jsonl",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"yo\"}]}\n"
        "{\"messages\": [oops\n");
  write(d + "/missing.jsonl", "{\"instruction\":\"x\",\"input\":\"\"}\n");
  write(d + "/empty.jsonl", "");
  write(d + "/masked.jsonl", "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}\n");
  fs::create_directories(d + "/notok");
  fs::copy(base + "/config.json", d + "/notok/config.json");
  fs::copy(base + "/model.safetensors", d + "/notok/model.safetensors");
  fs::create_directories(d + "/noweights");
  fs::copy(base + "/config.json", d + "/noweights/config.json");
  fs::copy(base + "/tokenizer.json", d + "/noweights/tokenizer.json");
  write(d + "/bad.yaml", "train:\n  micro_batch_size: abc\n  learning_rat: 1e-4\nlora:\n  r: 0\n");
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"data.train=bad.jsonl", "bad.jsonl:2: invalid JSON"},
      {"data.train=missing.jsonl", "missing.jsonl:1: record has no 'output'"},
      {"data.train=empty.jsonl", "empty.jsonl: dataset is empty"},
      {"data.train=masked.jsonl", "every label is masked"},
      {"model.path=notok", "no tokenizer.json"},
      {"model.path=noweights", "no model.safetensors"},
      {"data.train=nothere.jsonl", "data.train"},
      {"train.learning_rat=1e-4", "did you mean 'train.learning_rate'?"},
      {"lora.r=-1", "lora.r: must be in"},
      {"model.dtype=bfloat16", "the CPU backend computes in float32"},
      {"model.dtype=float16", "model.dtype=float16: the CPU backend computes in float32"},
      {"distributed.gpus=2 --nproc 2", "--nproc 2 (CPU workers) and --gpus 2 both given; choose one"},
      {"--nproc 2 distributed.shard_weights=[1,2,3]", "shard_weights has 3 entries for 2 ranks"},
      {"--nproc 2 distributed.aggregation=weighted", "needs distributed.rank_weights with one weight per rank"},
      {"--gpus 0,0", "device 0 is listed twice"},
  };
  for (const auto& [args, want] : cases) {
    CliRun r = run_ftune("train " + args + " train.output_dir=out", d);
    EXPECT_EQ(r.code, 1) << args;
    EXPECT_NE(r.err.find("error: "), std::string::npos) << args << ": " << r.err;
    EXPECT_NE(last_line(r.err).find(want), std::string::npos) << args << ": " << r.err;
    EXPECT_FALSE(fs::exists(d + "/out/adapter")) << args;
    EXPECT_FALSE(fs::exists(d + "/out/metrics.jsonl")) << args;
  }
  // A bad YAML file: one line per problem, each with file:line.
  CliRun y = run_ftune("train bad.yaml", d);
  EXPECT_EQ(y.code, 1);
  EXPECT_NE(y.err.find("bad.yaml:2: train.micro_batch_size: expected an integer, got 'abc'"), std::string::npos) << y.err;
  EXPECT_NE(y.err.find("bad.yaml:3: train.learning_rat: unknown key; did you mean 'train.learning_rate'?"), std::string::npos) << y.err;
  EXPECT_NE(y.err.find("bad.yaml:5: lora.r: must be in [1, 4096], got 0"), std::string::npos) << y.err;
}

TEST(Cli, DoctorReportsChecks) {
  const std::string d = ftune::test::temp_dir("cli_doctor");
  CliRun r = run_ftune("doctor", d);
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("[ok]   cpu backend"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("[ok]   tokenizer"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("all checks passed"), std::string::npos) << r.out;
  // A CUDA build says what bf16/fp16 attention runs on (cuDNN or ftune's flash kernels).
  if (r.out.find("build: CUDA backend on") != std::string::npos) {
    EXPECT_NE(r.out.find("attention (bf16/fp16): "), std::string::npos) << r.out;
  }
}
