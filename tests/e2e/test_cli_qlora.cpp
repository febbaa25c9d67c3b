// End to end: `ftune train` with model.load_in_4bit (QLoRA) and with model.fp8_base on the CPU:
// the built-in model's projections quantized to NF4 (or FP8) on load, a few steps whose loss is
// finite and falls, a PEFT adapter written, and less base-weight memory than the dense run
// reports.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <sys/wait.h>

#include "support/cli_run.h"
#include "support/test_support.h"

namespace fs = std::filesystem;
using nlohmann::json;

using ftune::test::CliRun;
using ftune::test::run_ftune;

namespace {

// "base weights: X MiB" from a run's stderr (-1 when absent).
double base_weight_mib(const std::string& err) {
  std::smatch m;
  static const std::regex re("base weights: ([0-9.]+) MiB");
  return std::regex_search(err, m, re) ? std::stod(m[1].str()) : -1.0;
}

TEST(CliQlora, LoadIn4bitTrainsOnTheCpu) {
  const std::string d = ftune::test::temp_dir("cli_qlora");
  const std::string common = "train train.max_steps=8 train.learning_rate=3e-3 data.max_seq_length=256 ";
  const CliRun q = run_ftune(common + "model.load_in_4bit=true train.output_dir=q4", d);
  ASSERT_EQ(q.code, 0) << q.err;
  EXPECT_NE(q.err.find("projections in NF4"), std::string::npos) << q.err;
  std::vector<double> losses;
  std::ifstream f(d + "/q4/metrics.jsonl");
  for (std::string line; std::getline(f, line);) {
    const json j = json::parse(line);
    if (j.contains("loss")) losses.push_back(j["loss"].get<double>());
  }
  ASSERT_EQ(losses.size(), 8u);
  for (double l : losses) EXPECT_TRUE(std::isfinite(l));
  EXPECT_LT(losses.back(), losses.front() - 0.3) << "first " << losses.front() << " last " << losses.back();
  EXPECT_TRUE(fs::exists(d + "/q4/adapter/adapter_model.safetensors"));
  std::ifstream rc(d + "/q4/config.resolved.yaml");
  const std::string resolved((std::istreambuf_iterator<char>(rc)), {});
  EXPECT_NE(resolved.find("load_in_4bit: true"), std::string::npos) << resolved;
  // The dense run of the same model holds more base-weight memory (fp32 projections).
  const CliRun dense = run_ftune("train train.max_steps=1 data.max_seq_length=256 train.output_dir=dense", d);
  ASSERT_EQ(dense.code, 0) << dense.err;
  const double mq = base_weight_mib(q.err), md = base_weight_mib(dense.err);
  ASSERT_GT(mq, 0.0) << q.err;
  EXPECT_LT(mq, md) << "NF4 " << mq << " MiB, dense " << md << " MiB";
}

TEST(CliFp8, Fp8BaseTrainsOnTheCpuAndRefusesNf4) {
  const std::string d = ftune::test::temp_dir("cli_fp8");
  const std::string common = "train train.max_steps=8 train.learning_rate=3e-3 data.max_seq_length=256 ";
  const CliRun r = run_ftune(common + "model.fp8_base=true train.output_dir=f8", d);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.err.find("projections in FP8 E4M3"), std::string::npos) << r.err;
  std::vector<double> losses;
  std::ifstream f(d + "/f8/metrics.jsonl");
  for (std::string line; std::getline(f, line);) {
    const json j = json::parse(line);
    if (j.contains("loss")) losses.push_back(j["loss"].get<double>());
  }
  ASSERT_EQ(losses.size(), 8u);
  for (double l : losses) EXPECT_TRUE(std::isfinite(l));
  EXPECT_LT(losses.back(), losses.front() - 0.3) << "first " << losses.front() << " last " << losses.back();
  EXPECT_TRUE(fs::exists(d + "/f8/adapter/adapter_model.safetensors"));
  const CliRun dense = run_ftune("train train.max_steps=1 data.max_seq_length=256 train.output_dir=dense", d);
  ASSERT_EQ(dense.code, 0) << dense.err;
  const double m8 = base_weight_mib(r.err), md = base_weight_mib(dense.err);
  ASSERT_GT(m8, 0.0) << r.err;
  EXPECT_LT(m8, md) << "FP8 " << m8 << " MiB, dense " << md << " MiB";
  // One base format: with load_in_4bit the config is refused before anything runs.
  const CliRun both = run_ftune(common + "model.fp8_base=true model.load_in_4bit=true train.output_dir=x", d);
  EXPECT_NE(both.code, 0);
  EXPECT_NE(both.err.find("the base is either FP8 or NF4"), std::string::npos) << both.err;
  EXPECT_FALSE(fs::exists(d + "/x/metrics.jsonl"));
}

}  // namespace
