// End-to-end reliability (issue 8): a refused or failed run changes nothing on disk, nothing
// half written is trusted, SIGINT/SIGTERM stop at a step boundary with a checkpoint, bad values
// are refused where they enter with the file and key named, and no input crashes ftune.
#include <gtest/gtest.h>

#include <array>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/tensor.h"
#include "io/safetensors.h"
#include "support/cli_run.h"
#include "support/test_support.h"

namespace fs = std::filesystem;
using nlohmann::json;

using ftune::test::CliRun;
using ftune::test::run_ftune;
using ftune::test::last_line;

namespace {

std::string read(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
void write(const std::string& path, const std::string& text) { std::ofstream(path) << text; }

// Every path under dir (relative), to compare a folder before and after a refused run.
std::set<std::string> tree(const std::string& dir) {
  std::set<std::string> s;
  if (!fs::exists(dir)) return s;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.path().filename() != ".stderr.txt") s.insert(fs::relative(e.path(), dir).string());
  return s;
}

std::vector<int64_t> logged_steps(const std::string& metrics) {
  std::vector<int64_t> v;
  std::ifstream f(metrics);
  std::string line;
  while (std::getline(f, line)) {
    const json j = json::parse(line);
    if (j.contains("loss")) v.push_back(j["step"].get<int64_t>());
  }
  return v;
}

// (tag, step) of every scalar event in the TensorBoard files of dir, read from the raw records.
std::multiset<std::pair<std::string, int64_t>> tb_scalars(const std::string& dir) {
  std::multiset<std::pair<std::string, int64_t>> out;
  auto varint = [](const std::string& s, size_t& p) {
    uint64_t v = 0;
    for (int sh = 0; p < s.size(); sh += 7) {
      const auto b = static_cast<uint8_t>(s[p++]);
      v |= static_cast<uint64_t>(b & 0x7F) << sh;
      if (!(b & 0x80)) break;
    }
    return v;
  };
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string bytes = read(e.path().string());
    size_t pos = 0;
    while (pos + 12 <= bytes.size()) {
      uint64_t len;
      std::memcpy(&len, bytes.data() + pos, 8);
      const std::string ev = bytes.substr(pos + 12, len);
      pos += 16 + len;
      int64_t step = 0;
      std::string tag;
      for (size_t p = 0; p < ev.size();) {
        const uint64_t key = varint(ev, p);
        if ((key & 7) == 0) {
          const uint64_t v = varint(ev, p);
          if ((key >> 3) == 2) step = static_cast<int64_t>(v);
        } else if ((key & 7) == 1) {
          p += 8;
        } else if ((key & 7) == 2) {
          const uint64_t l = varint(ev, p);
          if ((key >> 3) == 5) {  // summary { value { tag = 1 } }: the tag follows two headers
            const std::string sum = ev.substr(p, l);
            size_t q = 0;
            varint(sum, q);
            varint(sum, q);
            varint(sum, q);
            const uint64_t tl = varint(sum, q);
            tag = sum.substr(q, tl);
          }
          p += l;
        } else {
          p += 4;
        }
      }
      if (!tag.empty()) out.insert({tag, step});
    }
  }
  return out;
}

// Rewrites `file` with tensor `name`'s element 3 set to `value`.
void poison_tensor(const std::string& file, const std::string& name, float value) {
  std::vector<std::pair<std::string, ftune::Tensor>> tensors;
  {
    ftune::SafetensorsFile f = ftune::SafetensorsFile::open(file);
    for (const auto& n : f.names()) tensors.emplace_back(n, f.tensor(n).clone());
  }
  for (auto& [n, t] : tensors)
    if (n == name) t.f32()[3] = value;
  ftune::write_safetensors(file, tensors);
}

const char* kTiny = "train.max_steps=2 train.eval_steps=0 logging.console=plain";

// A copy of a finished tiny run in <tag>/out. The run is made once per ftune binary and shared
// by the tests (ctest runs each in its own process, maybe in parallel): the first trains under
// a file lock, the others wait and copy.
std::string trained_copy(const std::string& tag) {
  static std::string base = [] {
    const std::string d = std::string(FTUNE_BINARY_DIR) + "/e2e_reliability_base";
    fs::create_directories(d);
    const int fd = open((d + "/.lock").c_str(), O_CREAT | O_RDWR, 0644);
    EXPECT_GE(fd, 0);
    flock(fd, LOCK_EX);
    const std::string done = d + "/.done";
    const fs::path bin = std::string(FTUNE_BINARY_DIR) + "/ftune";
    if (!fs::exists(done) || fs::last_write_time(bin) > fs::last_write_time(done)) {
      fs::remove(done);
      fs::remove_all(d + "/out");
      CliRun r = run_ftune(std::string("train ") + kTiny + " train.output_dir=out", d);
      EXPECT_EQ(r.code, 0) << r.err;
      if (r.code == 0) write(done, "ok\n");
    }
    flock(fd, LOCK_UN);
    close(fd);
    return d;
  }();
  const std::string d = ftune::test::temp_dir(tag);
  fs::copy(base + "/out", d + "/out", fs::copy_options::recursive);
  return d;
}

}  // namespace

TEST(Reliability, EmptyOutputDirIsRefusedAndNothingIsWritten) {
  const std::string d = ftune::test::temp_dir("rel_empty_out");
  CliRun r = run_ftune("train train.output_dir= train.max_steps=1", d);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(last_line(r.err).find("train.output_dir: must not be empty"), std::string::npos) << r.err;
  EXPECT_TRUE(tree(d).empty());
}

TEST(Reliability, RefusedRunLeavesNoNewFolder) {
  const std::string d = ftune::test::temp_dir("rel_refused");
  write(d + "/bad.jsonl", "{\"messages\": [oops\n");
  CliRun r = run_ftune("train data.train=bad.jsonl train.output_dir=out", d);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(last_line(r.err).find("bad.jsonl:1: invalid JSON"), std::string::npos) << r.err;
  // Before: out/base_model and out/.cache were left behind by the refused run.
  EXPECT_FALSE(fs::exists(d + "/out")) << "left: " << tree(d + "/out").size() << " entries";
}

TEST(Reliability, OverwriteKeepsTheOldResultsUntilTheNewRunIsValid) {
  const std::string d = trained_copy("rel_overwrite");
  const std::set<std::string> before = tree(d + "/out");
  const std::string adapter = read(d + "/out/adapter/adapter_model.safetensors");
  write(d + "/bad.jsonl", "{\"instruction\":\"x\",\"input\":\"\"}\n");
  CliRun r = run_ftune("train data.train=bad.jsonl train.overwrite_output_dir=true train.output_dir=out", d);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(last_line(r.err).find("record has no 'output'"), std::string::npos) << r.err;
  EXPECT_EQ(tree(d + "/out"), before);
  EXPECT_EQ(read(d + "/out/adapter/adapter_model.safetensors"), adapter);
  // A valid run replaces them, and the parked copy goes once it has finished.
  CliRun ok = run_ftune(std::string("train ") + kTiny +
                            " train.max_steps=3 train.overwrite_output_dir=true train.output_dir=out",
                        d);
  ASSERT_EQ(ok.code, 0) << ok.err;
  EXPECT_EQ(logged_steps(d + "/out/metrics.jsonl"), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_FALSE(fs::exists(d + "/out/.replaced-results"));
  EXPECT_FALSE(fs::exists(d + "/out/checkpoints/step-2"));
  EXPECT_TRUE(fs::exists(d + "/out/checkpoints/step-3"));
}

TEST(Reliability, RefusedResumeDoesNotRewriteTheResolvedConfig) {
  const std::string d = trained_copy("rel_resume_refused");
  const std::string resolved = read(d + "/out/config.resolved.yaml");
  CliRun r = run_ftune(std::string("train ") + kTiny + " lora.r=8 train.output_dir=out --resume", d);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(last_line(r.err).find("different configuration"), std::string::npos) << r.err;
  EXPECT_EQ(read(d + "/out/config.resolved.yaml"), resolved);
}

// --resume with train.overwrite_output_dir=true continues the run; nothing is moved aside.
TEST(Reliability, ResumeWithOverwriteContinuesTheRun) {
  const std::string d = trained_copy("rel_resume_overwrite");
  CliRun r = run_ftune(std::string("train ") + kTiny +
                           " train.max_steps=3 train.overwrite_output_dir=true train.output_dir=out --resume",
                       d);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(logged_steps(d + "/out/metrics.jsonl"), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_TRUE(fs::exists(d + "/out/checkpoints/step-2"));
  EXPECT_FALSE(fs::exists(d + "/out/.replaced-results"));
}

TEST(Reliability, ACopiedRunResumesInItsNewFolder) {
  const std::string d = trained_copy("rel_copied");
  fs::rename(d + "/out", d + "/moved");
  CliRun r = run_ftune(std::string("train ") + kTiny + " train.max_steps=3 train.output_dir=moved --resume", d);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(logged_steps(d + "/moved/metrics.jsonl"), (std::vector<int64_t>{1, 2, 3}));
}

TEST(Reliability, HalfWrittenBuiltinModelAndStaleCheckpointTempsAreRepaired) {
  const std::string d = trained_copy("rel_half_written");
  // A kill between the built-in model's files left weights without config.json.
  fs::remove(d + "/out/base_model/config.json");
  fs::remove(d + "/out/base_model/ftune_builtin_model.json");
  // A kill while writing a checkpoint left its temporary folder.
  fs::create_directories(d + "/out/checkpoints/.tmp-step-7");
  write(d + "/out/checkpoints/.tmp-step-7/optimizer.safetensors", "partial");
  CliRun r = run_ftune(std::string("train ") + kTiny + " train.max_steps=3 train.output_dir=out --resume", d);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(fs::exists(d + "/out/base_model/config.json"));
  EXPECT_FALSE(fs::exists(d + "/out/checkpoints/.tmp-step-7"));
}

TEST(Reliability, ResumeDoesNotRepeatLoggedSteps) {
  const std::string d = ftune::test::temp_dir("rel_resume_logs");
  const std::string args = "train train.max_steps=4 train.save_steps=2 train.eval_steps=0 logging.console=plain";
  ASSERT_EQ(run_ftune(args, d).code, 0);
  // A crash after step 4 was logged but before its checkpoint: steps 3 and 4 run again.
  fs::remove_all(d + "/outputs/checkpoints/step-4");
  fs::remove_all(d + "/outputs/adapter");
  CliRun r = run_ftune(args + " --resume", d);
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(logged_steps(d + "/outputs/metrics.jsonl"), (std::vector<int64_t>{1, 2, 3, 4}));
  const auto tb = tb_scalars(d + "/outputs/tensorboard");
  EXPECT_EQ(tb.count({"train/loss", 3}), 1u);
  EXPECT_EQ(tb.count({"train/loss", 4}), 1u);
  EXPECT_EQ(tb.count({"train/loss", 1}), 1u);
}

namespace {

// Starts ftune train in d, waits until `steps` steps are logged, sends `sig` (`count` times),
// and returns the exit status and stderr.
CliRun interrupt_run(const std::string& d, const std::string& extra, int sig, int count) {
  const std::string err_file = d + "/.stderr.txt";
  const std::string metrics = d + "/out/metrics.jsonl";
  const pid_t pid = fork();
  if (pid == 0) {
    if (chdir(d.c_str()) != 0) _exit(99);
    const int fd = open(err_file.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
    dup2(fd, 2);
    const std::string bin = std::string(FTUNE_BINARY_DIR) + "/ftune";
    std::vector<std::string> args = {bin, "train", "train.max_steps=100000", "train.output_dir=out",
                                     "logging.console=plain", "train.eval_steps=0"};
    if (!extra.empty()) args.push_back(extra);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(bin.c_str(), argv.data());
    _exit(98);
  }
  const auto t0 = std::chrono::steady_clock::now();
  while (logged_steps(metrics).size() < 2 &&
         std::chrono::steady_clock::now() - t0 < std::chrono::seconds(120))
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  for (int i = 0; i < count; ++i) kill(pid, sig);
  int status = 0;
  waitpid(pid, &status, 0);
  CliRun r;
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = read(err_file);
  return r;
}

// Two overwriting runs that fail in a row: the finished results parked by the first are still
// there after the second (which finds the first one's partial results in output_dir).
TEST(Reliability, FailedOverwritesNeverLoseTheLastFinishedResults) {
  const std::string d = trained_copy("rel_overwrite_twice");
  const std::string adapter = read(d + "/out/adapter/adapter_model.safetensors");
  // What a failed first overwrite leaves: the finished results parked, its own partial ones.
  fs::create_directories(d + "/out/.replaced-results");
  fs::rename(d + "/out/adapter", d + "/out/.replaced-results/adapter");
  fs::rename(d + "/out/metrics.jsonl", d + "/out/.replaced-results/metrics.jsonl");
  fs::create_directories(d + "/out/adapter");
  write(d + "/out/adapter/adapter_model.safetensors", "partial, from a run that failed");
  // A second overwrite, stopped by SIGTERM once it has started writing (2 steps logged).
  CliRun r = interrupt_run(d, "train.overwrite_output_dir=true", SIGTERM, 1);
  EXPECT_EQ(r.code, 143) << r.err;
  ASSERT_TRUE(fs::exists(d + "/out/.replaced-results/adapter/adapter_model.safetensors"));
  EXPECT_EQ(read(d + "/out/.replaced-results/adapter/adapter_model.safetensors"), adapter);
}

}  // namespace

TEST(Reliability, SigintStopsAtAStepBoundaryWithACheckpoint) {
  const std::string d = ftune::test::temp_dir("rel_sigint");
  CliRun r = interrupt_run(d, "", SIGINT, 1);
  EXPECT_EQ(r.code, 130) << r.err;
  EXPECT_NE(r.err.find("SIGINT received: stopping at the end of this step"), std::string::npos) << r.err;
  const std::vector<int64_t> steps = logged_steps(d + "/out/metrics.jsonl");
  ASSERT_FALSE(steps.empty());
  // The checkpoint is the last logged step: the step in flight was finished, none was lost.
  EXPECT_TRUE(fs::exists(d + "/out/checkpoints/step-" + std::to_string(steps.back()))) << r.err;
  EXPECT_NE(last_line(r.err).find("continue with --resume"), std::string::npos) << r.err;
  // It resumes from there.
  CliRun again = run_ftune("train train.output_dir=out logging.console=plain train.eval_steps=0 train.max_steps=" +
                               std::to_string(steps.back() + 1) + " --resume",
                           d);
  EXPECT_EQ(again.code, 0) << again.err;
  const std::vector<int64_t> after = logged_steps(d + "/out/metrics.jsonl");
  EXPECT_EQ(after.back(), steps.back() + 1);
  EXPECT_EQ(after.size(), steps.size() + 1);
}

TEST(Reliability, SigtermExits143AndSaveOnInterruptFalseWritesNoCheckpoint) {
  const std::string d = ftune::test::temp_dir("rel_sigterm");
  CliRun r = interrupt_run(d, "train.save_on_interrupt=false", SIGTERM, 1);
  EXPECT_EQ(r.code, 143) << r.err;
  EXPECT_NE(r.err.find("SIGTERM received"), std::string::npos) << r.err;
  EXPECT_NE(last_line(r.err).find("no checkpoint written"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(d + "/out/checkpoints"));
}

TEST(Reliability, NonFiniteWeightsAreRefusedAtLoadNamingTheTensor) {
  const std::string d = trained_copy("rel_nan");
  const std::string data = ftune::test::data_path("../assets/debug_dataset/conversations.jsonl");
  fs::copy(d + "/out/base_model", d + "/nanmodel", fs::copy_options::recursive);
  poison_tensor(d + "/nanmodel/model.safetensors", "model.layers.1.mlp.up_proj.weight",
                std::numeric_limits<float>::quiet_NaN());
  CliRun r = run_ftune("eval --model nanmodel --data '" + data + "' --max-seq-length 512", d);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(last_line(r.err).find("tensor 'model.layers.1.mlp.up_proj.weight'"), std::string::npos) << r.err;
  EXPECT_NE(last_line(r.err).find("element 3 is NaN"), std::string::npos) << r.err;

  fs::copy(d + "/out/adapter", d + "/infadapter", fs::copy_options::recursive);
  const std::string key = "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight";
  poison_tensor(d + "/infadapter/adapter_model.safetensors", key, std::numeric_limits<float>::infinity());
  r = run_ftune("eval --model out/base_model --adapter infadapter --data '" + data + "' --max-seq-length 512", d);
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(last_line(r.err).find("tensor '" + key + "': element 3 is Inf"), std::string::npos) << r.err;

  // NaN in the optimizer state of a checkpoint: refused on --resume.
  const std::string opt = d + "/out/checkpoints/step-2/optimizer.safetensors";
  const std::string first = ftune::SafetensorsFile::open(opt).names().front();
  poison_tensor(opt, first, std::numeric_limits<float>::quiet_NaN());
  r = run_ftune(std::string("train ") + kTiny + " train.max_steps=3 train.output_dir=out --resume", d);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(last_line(r.err).find("optimizer.safetensors: tensor '" + first + "': element 3 is NaN"),
            std::string::npos) << r.err;
}

TEST(Reliability, JsonTypeAndMissingKeyErrorsNameFileAndKey) {
  const std::string d = trained_copy("rel_json_keys");
  const std::string data = ftune::test::data_path("../assets/debug_dataset/conversations.jsonl");
  // adapter_config.json: lora_alpha as a string.
  json cfg = json::parse(read(d + "/out/adapter/adapter_config.json"));
  cfg["lora_alpha"] = "32";
  write(d + "/out/adapter/adapter_config.json", cfg.dump());
  CliRun r = run_ftune("eval --model out/base_model --adapter out/adapter --data '" + data + "' --max-seq-length 512", d);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(last_line(r.err).find("adapter_config.json: key 'lora_alpha' must be a number, got string"),
            std::string::npos) << r.err;
  // trainer_state.json: global_step missing, then of the wrong type.
  const std::string st = d + "/out/checkpoints/step-2/trainer_state.json";
  json s = json::parse(read(st));
  s.erase("global_step");
  write(st, s.dump());
  r = run_ftune(std::string("train ") + kTiny + " train.max_steps=3 train.output_dir=out --resume", d);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(last_line(r.err).find("trainer_state.json: missing key 'global_step'"), std::string::npos) << r.err;
  s["global_step"] = "two";
  write(st, s.dump());
  r = run_ftune(std::string("train ") + kTiny + " train.max_steps=3 train.output_dir=out --resume", d);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(last_line(r.err).find("trainer_state.json: key 'global_step' must be an integer"), std::string::npos) << r.err;
}

TEST(Reliability, DeeplyNestedJsonIsRefusedNotACrash) {
  const std::string d = trained_copy("rel_deep");
  const std::string data = ftune::test::data_path("../assets/debug_dataset/conversations.jsonl");
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  fs::copy(d + "/out/base_model", d + "/deep", fs::copy_options::recursive);
  write(d + "/deep/config.json", deep);
  CliRun r = run_ftune("eval --model deep --data '" + data + "'", d);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(last_line(r.err).find("deep/config.json: line 1, column 129: JSON nested deeper than 128 levels"),
            std::string::npos) << r.err;
  write(d + "/deep.jsonl", "{\"text\": " + deep + "}\n");
  r = run_ftune("eval --model out/base_model --data deep.jsonl", d);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(last_line(r.err).find("deep.jsonl:1: column 137: JSON nested deeper than 128 levels"),
            std::string::npos) << r.err;
  fs::copy(d + "/out/adapter", d + "/deepadapter", fs::copy_options::recursive);
  write(d + "/deepadapter/adapter_config.json", "{\"r\": " + deep + "}");
  r = run_ftune("eval --model out/base_model --adapter deepadapter --data '" + data + "'", d);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(last_line(r.err).find("adapter_config.json: line 1, column"), std::string::npos) << r.err;
}

TEST(Reliability, SizesAreCheckedBeforeAllocation) {
  const std::string d = trained_copy("rel_sizes");
  const std::string data = ftune::test::data_path("../assets/debug_dataset/conversations.jsonl");
  CliRun r = run_ftune("eval --model out/base_model --data '" + data + "' --max-seq-length 1e11", d);
  EXPECT_EQ(r.code, 2);  // not an integer: a usage error
  EXPECT_NE(r.err.find("Could not convert: --max-seq-length = 1e11"), std::string::npos) << r.err;
  r = run_ftune("eval --model out/base_model --data '" + data + "' --max-seq-length 100000000000", d);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(last_line(r.err).find("--max-seq-length 100000000000 is out of range [2, 1048576]"),
            std::string::npos) << r.err;
  // The documented maximum costs nothing for short data: rows follow the data's real length.
  r = run_ftune("eval --model out/base_model --data '" + data + "' --max-seq-length 1048576", d);
  EXPECT_EQ(r.code, 0) << r.err;
  // What can never fit is refused with the figures.
  std::string long_text;
  for (int i = 0; i < 3000; ++i) long_text += "word ";
  write(d + "/long.jsonl", "{\"text\": \"" + long_text + "\"}\n");
  r = run_ftune("eval --model out/base_model --data long.jsonl --max-seq-length 1048576 --batch-size 65536", d);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(last_line(r.err).find("a micro-batch of 65536 rows x"), std::string::npos) << r.err;
  EXPECT_NE(last_line(r.err).find("GiB of memory, and this machine has"), std::string::npos) << r.err;
}

TEST(Reliability, UnusedCheckpointTensorsAndVocabularyMismatchAreNamed) {
  const std::string d = trained_copy("rel_unused");
  const std::string data = ftune::test::data_path("../assets/debug_dataset/conversations.jsonl");
  fs::copy(d + "/out/base_model", d + "/extra", fs::copy_options::recursive);
  {
    std::vector<std::pair<std::string, ftune::Tensor>> tensors;
    ftune::SafetensorsFile f = ftune::SafetensorsFile::open(d + "/extra/model.safetensors");
    for (const auto& n : f.names()) tensors.emplace_back(n, f.tensor(n).clone());
    tensors.emplace_back("model.layers.5.mlp.down_proj.weight", ftune::Tensor::zeros({2, 2}));
    ftune::write_safetensors(d + "/extra/model.safetensors", tensors);
  }
  CliRun r = run_ftune("eval --model extra --data '" + data + "' --max-seq-length 512", d);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(last_line(r.err).find("tensor 'model.layers.5.mlp.down_proj.weight' belongs to layer 5"),
            std::string::npos) << r.err;
  EXPECT_NE(last_line(r.err).find("num_hidden_layers = 2"), std::string::npos) << r.err;
  // A tokenizer with ids beyond the model's vocabulary names both files.
  fs::copy(d + "/out/base_model", d + "/smallvocab", fs::copy_options::recursive);
  json cfg = json::parse(read(d + "/smallvocab/config.json"));
  cfg["vocab_size"] = 100;
  write(d + "/smallvocab/config.json", cfg.dump());
  r = run_ftune("eval --model smallvocab --data '" + data + "' --max-seq-length 512", d);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(last_line(r.err).find("smallvocab/tokenizer.json has token ids up to"), std::string::npos) << r.err;
  EXPECT_NE(last_line(r.err).find("smallvocab/config.json"), std::string::npos) << r.err;
}

TEST(Reliability, UnknownEosTokenIsAnError) {
  const std::string d = trained_copy("rel_eos");
  const std::string data = ftune::test::data_path("../assets/debug_dataset/conversations.jsonl");
  fs::copy(d + "/out/base_model", d + "/eos", fs::copy_options::recursive);
  json cfg = json::parse(read(d + "/eos/tokenizer_config.json"));
  cfg["eos_token"] = "<|no_such_token|>";
  write(d + "/eos/tokenizer_config.json", cfg.dump());
  CliRun r = run_ftune("eval --model eos --data '" + data + "' --max-seq-length 512", d);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(last_line(r.err).find("eos/tokenizer_config.json: eos_token '<|no_such_token|>' is not a token"),
            std::string::npos) << r.err;
}

TEST(Reliability, UnknownCommandSuggestsTheNearest) {
  const std::string d = ftune::test::temp_dir("rel_cmd");
  CliRun r = run_ftune("trian", d);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("unknown command 'trian'; did you mean 'train'?"), std::string::npos) << r.err;
  r = run_ftune("frobnicate", d);
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("unknown command 'frobnicate'; did you mean"), std::string::npos) << r.err;
}
