// End-to-end tests of `ftune plan` and `train.micro_batch_size: auto`: presets and configs, the
// JSON output, bad input as one-line errors, and the memory model against what a real
// `ftune train` on the CPU measures (its tensor-memory peak in metrics.jsonl).
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sys/wait.h>

#include "support/cli_run.h"
#include "support/test_support.h"

namespace fs = std::filesystem;
using nlohmann::json;

using ftune::test::CliRun;
using ftune::test::run_ftune;

namespace {

void write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

// Long plain-text records: truncated to max_seq_length, every row is full, so a micro-batch is
// exactly rows x max_seq_length tokens (what the planner assumes).
void write_text_data(const std::string& path, int records) {
  const char* words[] = {"alpha", "beta", "gamma", "delta", "river", "stone", "cloud", "light"};
  std::mt19937 rng(7);
  std::ofstream f(path);
  for (int i = 0; i < records; ++i) {
    std::string t;
    for (int w = 0; w < 400; ++w) t += std::string(w ? " " : "") + words[rng() % 8];
    f << json{{"text", t}}.dump() << "\n";
  }
}

std::string job_yaml(const std::string& out, const std::string& micro, bool ckpt,
                     const std::string& extra_train = "", const std::string& lora = "") {
  return "data:\n  train: data.jsonl\n  max_seq_length: 128\n  packing: false\n  shuffle: false\n"
         "train:\n  output_dir: " + out + "\n  micro_batch_size: " + micro +
         "\n  max_steps: 2\n  gradient_checkpointing: " + (ckpt ? "true" : "false") + "\n" +
         extra_train + "logging:\n  console: none\n  tensorboard: false\n" + lora;
}

double measured_peak_bytes(const std::string& metrics) {
  std::ifstream f(metrics);
  std::string line, last;
  while (std::getline(f, line)) last = line;
  const json j = json::parse(last);
  return j.at("peak_memory_mib").at(0).get<double>() * 1048576.0;
}

TEST(PlanCli, PresetTextAndJson) {
  const std::string dir = ftune::test::temp_dir("plan_preset");
  const CliRun r = run_ftune("plan --preset llama-3-8b --gpu-memory-gib 80 --seq 2048", dir);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("best: micro-batch"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("= tensor peak"), std::string::npos) << r.out;

  const CliRun j = run_ftune("plan --preset llama-3-8b --gpu-memory-gib 80 --seq 2048 --json", dir);
  ASSERT_EQ(j.code, 0) << j.err;
  const json doc = json::parse(j.out);
  EXPECT_EQ(doc["model"]["layers"], 32);
  EXPECT_EQ(doc["model"]["trainable_params"], 41943040);  // r 16 on all seven projections
  const json& best = doc["best"];
  ASSERT_TRUE(best.is_object());
  EXPECT_TRUE(best["fits"].get<bool>());
  EXPECT_LE(best["total_bytes"].get<int64_t>(), int64_t{80} << 30);
  EXPECT_GT(best["tokens_per_s"].get<double>(), 0);
  // The parts add up to the totals.
  const json& m = best["memory"];
  int64_t parts = 0;
  for (const char* k : {"base_weights", "lora_params", "lora_grads", "optimizer_state", "activations",
                        "attention_workspace", "lm_head_ce_workspace", "gemm_workspace",
                        "fp8_workspace"})
    parts += m[k].get<int64_t>();
  EXPECT_EQ(parts, m["tensor_peak"].get<int64_t>());
  EXPECT_EQ(parts + m["host_workspaces"].get<int64_t>() + m["allocator_overhead"].get<int64_t>() +
                m["cuda_context"].get<int64_t>(),
            m["total"].get<int64_t>());
  // The best is the fastest of the candidates that fit.
  for (const json& c : doc["candidates"])
    if (c["fits"].get<bool>())
      EXPECT_LE(c["tokens_per_s"].get<double>(), best["tokens_per_s"].get<double>() * 1.006);

  // More GPUs: the same per-GPU plan, more tokens per second.
  const CliRun four = run_ftune("plan --preset llama-3-8b --gpus 4 --gpu-memory-gib 80 --seq 2048 --json", dir);
  ASSERT_EQ(four.code, 0) << four.err;
  const json d4 = json::parse(four.out);
  EXPECT_EQ(d4["best"]["gpus"], 4);
  EXPECT_GT(d4["best"]["tokens_per_s"].get<double>(), 3 * best["tokens_per_s"].get<double>());
}

TEST(PlanCli, Fp8BaseHalvesTheProjectionBytes) {
  const std::string dir = ftune::test::temp_dir("plan_fp8");
  const std::string common = "plan --preset llama-3-8b --gpu-memory-gib 80 --seq 2048 --batch 2 "
                             "--checkpointing on --json";
  const CliRun d = run_ftune(common, dir), f = run_ftune(common + " --fp8", dir);
  ASSERT_EQ(d.code, 0) << d.err;
  ASSERT_EQ(f.code, 0) << f.err;
  const json dense = json::parse(d.out)["best"], fp8 = json::parse(f.out)["best"];
  EXPECT_FALSE(dense["fp8_base"].get<bool>());
  EXPECT_TRUE(fp8["fp8_base"].get<bool>());
  EXPECT_FALSE(fp8["load_in_4bit"].get<bool>());
  // llama-3-8b's projections: 6.98e9 weights, 2 bytes each in bf16, 1 (+ a scale) in FP8.
  const int64_t saved = dense["memory"]["base_weights"].get<int64_t>() -
                        fp8["memory"]["base_weights"].get<int64_t>();
  EXPECT_EQ(saved, int64_t{32} * (6144 * 4096 + 4096 * 4096 + 2 * 14336 * 4096 + 4096 * 14336) -
                       int64_t{32} * 4 * 4);
  EXPECT_GT(fp8["memory"]["fp8_workspace"].get<int64_t>(), 0);
  EXPECT_EQ(dense["memory"]["fp8_workspace"].get<int64_t>(), 0);
  const CliRun both = run_ftune(common + " --fp8 --4bit on", dir);
  EXPECT_NE(both.code, 0);
  EXPECT_NE(both.err.find("exclude each other"), std::string::npos) << both.err;
}

TEST(PlanCli, ConfigKeepsTheEffectiveBatch) {
  const std::string dir = ftune::test::temp_dir("plan_config");
  write_text_data(dir + "/data.jsonl", 4);
  // micro 2 x accumulation 8 on one GPU: 16 sequences per step, kept whatever the micro-batch.
  write(dir + "/job.yaml", job_yaml("out", "2", true, "  gradient_accumulation_steps: 8\n"));
  const CliRun r = run_ftune("plan job.yaml --gpu-memory-gib 16 --json", dir);
  ASSERT_EQ(r.code, 0) << r.err;
  const json doc = json::parse(r.out);
  EXPECT_EQ(doc["seq_len"], 128);
  EXPECT_EQ(doc["effective_batch"], 16);
  for (const json& c : doc["candidates"])
    EXPECT_EQ(c["micro_batch"].get<int64_t>() * c["gradient_accumulation_steps"].get<int64_t>(), 16);
  EXPECT_EQ(doc["best"]["micro_batch"], 16);  // the tiny model fits whole
}

TEST(PlanCli, BadInputIsOneLine) {
  const std::string dir = ftune::test::temp_dir("plan_bad");
  struct Case {
    std::string args, want;
  };
  write(dir + "/missing_model.yaml", "model:\n  path: no/such/folder\n");
  write(dir + "/not_a_model.yaml", "model:\n  path: .\n");
  const std::vector<Case> cases = {
      {"plan --preset llama-9", "unknown preset 'llama-9'"},
      {"plan --preset llama-3-8b --gpu-memory-gib -3", "--gpu-memory-gib: must be a positive number"},
      {"plan missing_model.yaml --gpu-memory-gib 80", "model.path: file not found: 'no/such/folder'"},
      {"plan not_a_model.yaml --gpu-memory-gib 80", "has no config.json"},
      {"plan --gpu-memory-gib 80", "give a CONFIG.yaml or --preset NAME"},
      {"plan --preset llama-3-8b --gpu-memory-gib 80 --checkpointing maybe", "--checkpointing: expected auto, on or off"},
      {"plan --preset llama-3-8b --gpu-memory-gib 4", "nothing fits in 4.00 GiB"},
  };
  for (const Case& c : cases) {
    const CliRun r = run_ftune(c.args, dir);
    EXPECT_EQ(r.code, 1) << c.args << "\n" << r.err;
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.want), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_EQ(count_lines(r.err), 1) << c.args << "\n" << r.err;
  }
}

// The planner's tensor peak against the peak a real CPU run measures (allocator accounting of
// every tensor, core/tensor.cpp), for both checkpointing modes, with and without dropout and
// with some projections untargeted. Tolerance 5% (today they agree to the byte: the model
// counts ftune's allocations one by one).
TEST(PlanCli, PredictedPeakMatchesMeasuredOnCpu) {
  const std::string dir = ftune::test::temp_dir("plan_measured");
  write_text_data(dir + "/data.jsonl", 12);
  int i = 0;
  for (bool ckpt : {false, true}) {
    for (const std::string lora : {std::string(""),
                                   std::string("lora:\n  dropout: 0.1\n  target_modules: [q_proj, v_proj, down_proj]\n")}) {
      const std::string name = "job" + std::to_string(i++);
      write(dir + "/" + name + ".yaml", job_yaml(name, "4", ckpt, "", lora));
      const CliRun t = run_ftune("train " + name + ".yaml train.device=cpu", dir);
      ASSERT_EQ(t.code, 0) << t.err;
      const double measured = measured_peak_bytes(dir + "/" + name + "/metrics.jsonl");
      const CliRun p = run_ftune("plan " + name + ".yaml --device cpu --batch 4 --4bit off --checkpointing " +
                                     std::string(ckpt ? "on" : "off") + " --json",
                                 dir);
      ASSERT_EQ(p.code, 0) << p.err;
      const double predicted = json::parse(p.out)["best"]["memory"]["tensor_peak"].get<double>();
      EXPECT_NEAR(predicted, measured, 0.05 * measured) << name << " checkpointing " << ckpt;
    }
  }
}

TEST(PlanCli, AutoMicroBatchTrains) {
  const std::string dir = ftune::test::temp_dir("plan_auto");
  write_text_data(dir + "/data.jsonl", 16);
  // A budget between the predicted totals of micro-batches 4 and 8: auto must pick 4, and with
  // an effective batch of 8, accumulate 2.
  write(dir + "/probe.yaml", job_yaml("probe", "auto", false));
  const CliRun p = run_ftune("plan probe.yaml --device cpu --checkpointing off --4bit off --json", dir);
  ASSERT_EQ(p.code, 0) << p.err;
  int64_t t4 = 0, t8 = 0;
  const json probe = json::parse(p.out);
  for (const json& c : probe["candidates"]) {
    if (c["micro_batch"] == 4) t4 = c["total_bytes"].get<int64_t>();
    if (c["micro_batch"] == 8) t8 = c["total_bytes"].get<int64_t>();
  }
  ASSERT_GT(t8, t4);
  const double budget_gib = (static_cast<double>(t4) + static_cast<double>(t8)) / 2 / (1 << 30);
  char budget[64];
  std::snprintf(budget, sizeof budget, "%.9f", budget_gib);
  write(dir + "/auto.yaml",
        job_yaml("auto_out", "auto", false,
                 "  effective_batch_size: 8\n  memory_budget_gib: " + std::string(budget) + "\n"));
  const CliRun t = run_ftune("train auto.yaml train.device=cpu", dir);
  ASSERT_EQ(t.code, 0) << t.err;
  EXPECT_NE(t.err.find("train.micro_batch_size: auto -> 4 (the largest that fits"), std::string::npos) << t.err;
  EXPECT_NE(t.err.find("gradient_accumulation_steps 2 keeps the effective batch of 8"), std::string::npos) << t.err;
  std::ifstream resolved(dir + "/auto_out/config.resolved.yaml");
  const std::string text((std::istreambuf_iterator<char>(resolved)), {});
  EXPECT_NE(text.find("micro_batch_size: 4 "), std::string::npos) << text;
  EXPECT_NE(text.find("gradient_accumulation_steps: 2 "), std::string::npos) << text;
  EXPECT_LE(measured_peak_bytes(dir + "/auto_out/metrics.jsonl"), budget_gib * (1 << 30));

  // The resolved config trains again as it is (the derived accumulation agrees with the
  // effective batch).
  const CliRun again = run_ftune("train auto_out/config.resolved.yaml train.output_dir=again", dir);
  EXPECT_EQ(again.code, 0) << again.err;

  // Two CPU workers: the launcher decides once and hands the workers its numbers (each rank
  // trains 4 rows, the window of 8 sequences needs no accumulation).
  const CliRun two = run_ftune("train auto.yaml --nproc 2 train.output_dir=two", dir);
  ASSERT_EQ(two.code, 0) << two.err;
  EXPECT_NE(two.err.find("train.micro_batch_size: auto -> 4"), std::string::npos) << two.err;
  std::ifstream resolved2(dir + "/two/config.resolved.yaml");
  const std::string text2((std::istreambuf_iterator<char>(resolved2)), {});
  EXPECT_NE(text2.find("micro_batch_size: 4 "), std::string::npos) << text2;
  EXPECT_NE(text2.find("gradient_accumulation_steps: 1 "), std::string::npos) << text2;

  // Nothing fits: refused before training, with the figures.
  write(dir + "/tiny.yaml", job_yaml("tiny_out", "auto", true, "  memory_budget_gib: 0.001\n"));
  const CliRun refused = run_ftune("train tiny.yaml train.device=cpu", dir);
  EXPECT_EQ(refused.code, 1);
  EXPECT_NE(refused.err.find("error: train.micro_batch_size: auto: nothing fits, not even micro-batch 1"),
            std::string::npos) << refused.err;
  EXPECT_EQ(count_lines(refused.err), 1) << refused.err;
  EXPECT_FALSE(fs::exists(dir + "/tiny_out"));
}

}  // namespace
