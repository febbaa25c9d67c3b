// End-to-end tests of `ftune generate` and of train.sample_prompts with the built-in tiny model:
// a short run of the default job (with sample prompts at every evaluation) trains an adapter,
// then generation runs from outputs/base_model with and without it: greedy output repeats and
// is streamed as the JSON text says, the adapter changes it, seeded sampling repeats, chat mode
// keeps the conversation and reuses the cache, generation_config.json's eos list stops
// generation, and bad arguments give one error line.
#include <gtest/gtest.h>

#include <array>
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

std::vector<json> json_lines(const std::string& s) {
  std::vector<json> v;
  std::istringstream in(s);
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) v.push_back(json::parse(line));
  return v;
}

const char* kTrainArgs =
    "train train.max_steps=40 train.eval_steps=20 train.sample_max_new_tokens=12 "
    "'train.sample_prompts=[\"What is the capital of France?\", \"Name a color.\"]' "
    "logging.console=plain";

// One short training run per build, shared by the tests of this file (ctest runs each test in
// its own process, possibly in parallel): the first trains under a file lock, the others wait.
const std::string& trained_dir() {
  static std::string dir = [] {
    const std::string d = std::string(FTUNE_BINARY_DIR) + "/e2e_generate_job";
    fs::create_directories(d);
    const int fd = open((d + "/.lock").c_str(), O_CREAT | O_RDWR, 0644);
    EXPECT_GE(fd, 0);
    flock(fd, LOCK_EX);
    const std::string done = d + "/.done";
    const fs::path bin = std::string(FTUNE_BINARY_DIR) + "/ftune";
    if (!fs::exists(done) || fs::last_write_time(bin) > fs::last_write_time(done)) {
      fs::remove(done);
      fs::remove_all(d + "/outputs");
      const CliRun r = run_ftune(kTrainArgs, d);
      EXPECT_EQ(r.code, 0) << r.err;
      std::ofstream(d + "/train_stderr.txt") << r.err;
      if (r.code == 0) std::ofstream(done) << "ok\n";
    }
    flock(fd, LOCK_UN);
    close(fd);
    return d;
  }();
  return dir;
}

const std::string kBase = "generate --model outputs/base_model";
const std::string kTuned = "generate --model outputs/base_model --adapter outputs/adapter";

TEST(CliGenerate, TrainingPrintsAndLogsSamplesAtEveryEvaluation) {
  const std::string d = trained_dir();
  std::vector<json> samples;
  std::ifstream f(d + "/outputs/metrics.jsonl");
  std::string line;
  while (std::getline(f, line)) {
    const json j = json::parse(line);
    if (j.contains("sample")) samples.push_back(j);
  }
  // Evaluations at steps 20 and 40 (the end), two prompts each, in order.
  ASSERT_EQ(samples.size(), 4u);
  const int64_t steps[] = {20, 20, 40, 40};
  const char* prompts[] = {"What is the capital of France?", "Name a color."};
  for (size_t i = 0; i < samples.size(); ++i) {
    EXPECT_EQ(samples[i]["step"], steps[i]);
    EXPECT_EQ(samples[i]["sample_prompt"], prompts[i % 2]);
    EXPECT_TRUE(samples[i]["sample"].is_string());
  }
  // The final sample is what `ftune generate` gives for the same prompt as a llama-3 user turn
  // (the default job's chat template), greedily, with the same token budget.
  const CliRun g = run_ftune(kTuned + " --prompt 'What is the capital of France?' "
                                      "--chat-template llama-3 --max-new-tokens 12 --json", d);
  ASSERT_EQ(g.code, 0) << g.err;
  EXPECT_EQ(json_lines(g.out).at(0)["text"], samples[2]["sample"]);
  std::ifstream e(d + "/train_stderr.txt");
  const std::string err((std::istreambuf_iterator<char>(e)), {});
  EXPECT_NE(err.find("sample step 40: \"Name a color.\" -> "), std::string::npos) << err;
}

TEST(CliGenerate, GreedyRepeatsStreamsTheJsonTextAndTheAdapterChangesIt) {
  const std::string d = trained_dir();
  const std::string prompt = " --prompt 'The capital of France is' --max-new-tokens 24";
  const CliRun a = run_ftune(kTuned + prompt + " --json", d);
  const CliRun b = run_ftune(kTuned + prompt + " --json", d);
  const CliRun base = run_ftune(kBase + prompt + " --json", d);
  const CliRun streamed = run_ftune(kTuned + prompt, d);
  ASSERT_EQ(a.code, 0) << a.err;
  ASSERT_EQ(base.code, 0) << base.err;
  ASSERT_EQ(streamed.code, 0) << streamed.err;
  const json ja = json_lines(a.out).at(0), jb = json_lines(b.out).at(0);
  EXPECT_EQ(ja["ids"], jb["ids"]);
  EXPECT_FALSE(ja["ids"].empty());
  EXPECT_NE(ja["ids"], json_lines(base.out).at(0)["ids"]);
  EXPECT_EQ(streamed.out, ja["text"].get<std::string>() + "\n");
  // Raw prompts get the tokenizer's BOS (<|begin_of_text|>, id 1008 in the built-in tokenizer).
  EXPECT_EQ(ja["prompt_ids"][0], 1008);
  // Stops: config.json's eos (<|eot_id|>) and the tokenizer_config eos.
  EXPECT_NE(std::find(ja["stop_ids"].begin(), ja["stop_ids"].end(), json(1017)),
            ja["stop_ids"].end());
  EXPECT_NE(streamed.err.find("tokens/s"), std::string::npos);
}

TEST(CliGenerate, SeededSamplingRepeatsAndSeedsDiffer) {
  const std::string d = trained_dir();
  const std::string args = kTuned +
                           " --prompt 'Tell me a story' --max-new-tokens 32 --temperature 1.5 "
                           "--top-k 200 --top-p 0.95 --json --seed ";
  const CliRun a = run_ftune(args + "7", d), b = run_ftune(args + "7", d), c = run_ftune(args + "8", d);
  ASSERT_EQ(a.code, 0) << a.err;
  EXPECT_EQ(json_lines(a.out).at(0)["ids"], json_lines(b.out).at(0)["ids"]);
  EXPECT_NE(json_lines(a.out).at(0)["ids"], json_lines(c.out).at(0)["ids"]);
}

TEST(CliGenerate, ChatKeepsTheConversationAndReusesTheCache) {
  const std::string d = trained_dir();
  const CliRun r = run_ftune(kTuned + " --chat --max-new-tokens 16 --json --system 'Be brief.'", d,
                             "Hello!\n\nWhat is 2+2?\n/reset\nHello!\n");
  ASSERT_EQ(r.code, 0) << r.err;
  const std::vector<json> turns = json_lines(r.out);
  ASSERT_EQ(turns.size(), 3u);  // the empty line is skipped
  const auto p1 = turns[0]["prompt_ids"].get<std::vector<int>>();
  const auto p2 = turns[1]["prompt_ids"].get<std::vector<int>>();
  // The second prompt holds the whole first turn: it starts with the first prompt.
  ASSERT_GT(p2.size(), p1.size());
  EXPECT_TRUE(std::equal(p1.begin(), p1.end(), p2.begin()));
  EXPECT_GE(turns[1]["reused_tokens"].get<int64_t>(), static_cast<int64_t>(p1.size()) - 1);
  // After /reset the conversation starts over: the same prompt and (greedy) the same reply.
  EXPECT_EQ(turns[2]["prompt_ids"], turns[0]["prompt_ids"]);
  EXPECT_EQ(turns[2]["ids"], turns[0]["ids"]);
  // llama-3 template with a system turn and the assistant header at the end.
  const CliRun dec = run_ftune(kTuned + " --chat --max-new-tokens 1 --json", d, "Hi\n");
  ASSERT_EQ(dec.code, 0) << dec.err;
  const auto ids = json_lines(dec.out).at(0)["prompt_ids"].get<std::vector<int>>();
  ASSERT_GE(ids.size(), 4u);
  EXPECT_EQ(ids.front(), 1008);  // <|begin_of_text|>
  // ... <|start_header_id|>assistant<|end_header_id|>\n\n
  EXPECT_EQ(ids[ids.size() - 4], 1014);
  EXPECT_EQ(ids[ids.size() - 2], 1015);
}

TEST(CliGenerate, GenerationConfigEosListStops) {
  const std::string d = trained_dir();
  const std::string m = ftune::test::temp_dir("gen_eos_model");
  for (const auto& e : fs::directory_iterator(d + "/outputs/base_model"))
    fs::copy(e.path(), m + "/" + e.path().filename().string());
  const std::string prompt = " --prompt 'The capital of France is' --max-new-tokens 24 --json";
  const CliRun free = run_ftune("generate --model '" + m + "'" + prompt, d);
  ASSERT_EQ(free.code, 0) << free.err;
  const auto ids = json_lines(free.out).at(0)["ids"].get<std::vector<int>>();
  ASSERT_EQ(ids.size(), 24u);
  // generation_config.json with a list: the third greedy token now ends generation there.
  std::ofstream(m + "/generation_config.json")
      << "{\"eos_token_id\": [1009, " << ids[2] << "], \"do_sample\": false}\n";
  const CliRun stopped = run_ftune("generate --model '" + m + "'" + prompt, d);
  ASSERT_EQ(stopped.code, 0) << stopped.err;
  const json j = json_lines(stopped.out).at(0);
  EXPECT_EQ(j["stop_reason"], "stop");
  size_t first = 0;
  while (ids[first] != ids[2]) ++first;
  EXPECT_EQ(j["ids"].size(), first + 1);
  EXPECT_EQ(j["stop_ids"][0], 1009);
  std::ofstream(m + "/generation_config.json") << "{\"eos_token_id\": \"x\"}\n";
  const CliRun bad = run_ftune("generate --model '" + m + "'" + prompt, d);
  EXPECT_EQ(bad.code, 1);
  EXPECT_EQ(last_line(bad.err), "error: " + m +
                                    "/generation_config.json: eos_token_id must be an integer or "
                                    "a list of integers");
}

TEST(CliGenerate, BadArgumentsGiveOneErrorLine) {
  const std::string d = trained_dir();
  struct Case {
    std::string args;
    int code;
    std::string error;
  };
  const std::vector<Case> cases = {
      {kBase + " --prompt hi --chat", 2, "--prompt excludes --chat"},
      {kBase, 1, "error: generate: give exactly one of --prompt TEXT and --chat"},
      {"generate --model nowhere --prompt hi", 1, "error: generate: nowhere: no config.json"},
      {kBase + " --prompt hi --top-p 0", 1, "error: sampling: top_p 0 must be in (0, 1] (1 = off)"},
      {kBase + " --prompt hi --temperature -1", 1, "error: sampling: temperature -1 must be >= 0"},
      {kBase + " --prompt hi --chat-template chatml", 1,
       "error: chat template chatml: '<|im_start|>' is not a token of outputs/base_model/tokenizer.json"},
      {kBase + " --adapter nowhere --prompt hi", 1, "nowhere"},
  };
  for (const Case& c : cases) {
    const CliRun r = run_ftune(c.args, d);
    EXPECT_EQ(r.code, c.code) << c.args << "\n" << r.err;
    EXPECT_NE(r.err.find(c.error), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_EQ(r.out, "") << c.args;
  }
}

}  // namespace
