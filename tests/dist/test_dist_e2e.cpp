// Data-parallel training through the ftune binary on the CPU (Gloo): 1, 2 and 3 processes (one
// with uneven shard_weights) give the same losses and adapter as one process on the same
// global window, with LoRA dropout on; a killed worker stops the job with a message naming it
// and leaves no process behind; --resume of a 2-process run with 3 processes ends where the
// uninterrupted run ends; a torchrun-style environment launches the same workers; ranks with
// different configs are refused with a message naming the rank.
#include <gtest/gtest.h>

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "dist/kv_store.h"
#include "io/safetensors.h"
#include "support/test_support.h"

namespace fs = std::filesystem;
using nlohmann::json;
using namespace ftune;

extern char** environ;

namespace {

// A small, fast variant of the built-in default job with dropout on.
std::vector<std::string> job(const std::string& out, int accum, int steps = 3) {
  return {"train",
          "train.output_dir=" + out,
          "train.max_steps=" + std::to_string(steps),
          "train.gradient_accumulation_steps=" + std::to_string(accum),
          "train.micro_batch_size=1",
          "train.warmup_steps=1",
          "train.eval_steps=2",
          "data.max_seq_length=256",
          "lora.r=4",
          "lora.dropout=0.1",
          "logging.tensorboard=false",
          "logging.console=plain"};
}

struct Proc {
  pid_t pid = -1;
  std::string err_file;
};

// Starts ftune with `args` (plus `env` on top of this environment); stderr to a file.
Proc spawn(std::vector<std::string> args, const std::vector<std::string>& env,
           const std::string& err_file, size_t address_space_limit = 0) {
  const std::string bin = std::string(FTUNE_BINARY_DIR) + "/ftune";
  args.insert(args.begin(), bin);
  std::vector<std::string> envs;
  for (char** e = environ; *e; ++e) envs.emplace_back(*e);
  for (const auto& e : env) envs.push_back(e);
  Proc p;
  p.err_file = err_file;
  p.pid = fork();
  if (p.pid == 0) {
    if (address_space_limit > 0) {
      const rlimit lim{address_space_limit, address_space_limit};
      setrlimit(RLIMIT_AS, &lim);
    }
    const int fd = open(err_file.c_str(), O_CREAT | O_TRUNC | O_WRONLY, 0644);
    dup2(fd, 2);
    const int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 1);
    std::vector<char*> a, e;
    for (auto& s : args) a.push_back(s.data());
    a.push_back(nullptr);
    for (auto& s : envs) e.push_back(s.data());
    e.push_back(nullptr);
    execve(bin.c_str(), a.data(), e.data());
    _exit(127);
  }
  return p;
}

std::string read_text(const std::string& path) {
  std::ifstream f(path);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

struct Result {
  int code = -1;
  std::string err;
};

Result wait_for(const Proc& p) {
  int status = 0;
  waitpid(p.pid, &status, 0);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), read_text(p.err_file)};
}

Result run(const std::vector<std::string>& args, const std::string& tag,
           const std::vector<std::string>& env = {}) {
  return wait_for(spawn(args, env, tag + ".stderr"));
}

std::string last_line(std::string s) {
  while (!s.empty() && s.back() == '\n') s.pop_back();
  const auto pos = s.rfind('\n');
  return pos == std::string::npos ? s : s.substr(pos + 1);
}

// (step, loss) and (step, eval_loss) of metrics.jsonl, in order.
std::vector<double> losses(const std::string& out) {
  std::vector<double> v;
  std::ifstream f(out + "/metrics.jsonl");
  std::string line;
  while (std::getline(f, line)) {
    const json j = json::parse(line);
    v.push_back(j.contains("loss") ? j["loss"].get<double>() : j["eval_loss"].get<double>());
  }
  return v;
}

std::map<std::string, std::vector<float>> adapter(const std::string& out) {
  std::map<std::string, std::vector<float>> m;
  SafetensorsFile f = SafetensorsFile::open(out + "/adapter/adapter_model.safetensors");
  for (const auto& n : f.names()) m[n] = f.tensor(n).to_vector();
  return m;
}

void expect_same_run(const std::string& got, const std::string& want, const std::string& what) {
  const auto lg = losses(got), lw = losses(want);
  ASSERT_FALSE(lw.empty()) << what;
  ASSERT_EQ(lg.size(), lw.size()) << what;
  for (size_t i = 0; i < lw.size(); ++i)
    EXPECT_NEAR(lg[i], lw[i], 1e-5 * std::abs(lw[i])) << what << ": metrics line " << i;
  const auto ag = adapter(got), aw = adapter(want);
  ASSERT_EQ(ag.size(), aw.size()) << what;
  for (const auto& [name, w] : aw) {
    ASSERT_TRUE(ag.count(name)) << what << ": " << name;
    EXPECT_LT(test::rel_l2(ag.at(name), w), 1e-5) << what << ": " << name;
  }
}

// Children of `parent` (from /proc).
std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> out;
  for (const auto& e : fs::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream f(e.path() / "stat");
    std::string stat;
    std::getline(f, stat);
    const auto rp = stat.rfind(')');
    if (rp == std::string::npos) continue;
    char state = 0;
    int ppid = 0;
    if (sscanf(stat.c_str() + rp + 1, " %c %d", &state, &ppid) == 2 && ppid == parent)
      out.push_back(std::stoi(name));
  }
  return out;
}

std::string env_of(pid_t pid, const std::string& key) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/environ", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(f)), {});
  size_t pos = 0;
  while (pos < all.size()) {
    const size_t end = all.find('\0', pos);
    const std::string kv = all.substr(pos, end - pos);
    if (kv.rfind(key + "=", 0) == 0) return kv.substr(key.size() + 1);
    pos = end == std::string::npos ? all.size() : end + 1;
  }
  return "";
}

bool alive(pid_t pid) { return kill(pid, 0) == 0; }

int free_port() {
  int port = 0;
  const int fd = bind_listen_socket("127.0.0.1", 0, &port);
  close(fd);
  return port;
}

// One uninterrupted 2-process run shared by the tests that compare against it.
const std::string& reference_two_procs() {
  static const std::string out = [] {
    const std::string dir = test::temp_dir("dist_ref2");
    auto args = job(dir + "/out", 3);
    args.push_back("--nproc");
    args.push_back("2");
    const Result r = run(args, dir + "/run");
    EXPECT_EQ(r.code, 0) << r.err;
    return dir + "/out";
  }();
  return out;
}

}  // namespace

TEST(DistE2E, OneTwoThreeProcessesAndUnevenSharesTrainTheSame) {
  const std::string dir = test::temp_dir("dist_equiv");
  // One process on a window of 6 micro-batches; then 2 x 3, 3 x 2 and 2 processes sharing
  // windows of 6 as 2 + 4 (shard_weights [1, 2]).
  Result one = run(job(dir + "/one", 6), dir + "/one");
  ASSERT_EQ(one.code, 0) << one.err;
  ASSERT_EQ(losses(dir + "/one").size(), 3u + 2u);  // 3 steps, eval at 2 and at the end

  auto two = job(dir + "/two", 3);
  two.insert(two.end(), {"--nproc", "2"});
  Result r2 = run(two, dir + "/two");
  ASSERT_EQ(r2.code, 0) << r2.err;
  EXPECT_NE(r2.err.find("distributed: 2 ranks (gloo, launched by ftune)"), std::string::npos) << r2.err;
  expect_same_run(dir + "/two", dir + "/one", "2 processes");

  auto three = job(dir + "/three", 2);
  three.insert(three.end(), {"--nproc", "3", "distributed.verify_every=1"});  // replicas checked
  Result r3 = run(three, dir + "/three");
  ASSERT_EQ(r3.code, 0) << r3.err;
  expect_same_run(dir + "/three", dir + "/one", "3 processes");

  auto uneven = job(dir + "/uneven", 3);
  uneven.insert(uneven.end(), {"--nproc", "2", "distributed.shard_weights=[1, 2]"});
  Result ru = run(uneven, dir + "/uneven");
  ASSERT_EQ(ru.code, 0) << ru.err;
  expect_same_run(dir + "/uneven", dir + "/one", "2 processes, shard_weights [1, 2]");

  // Shares from measured throughput after the first step: the result does not move.
  auto automatic = job(dir + "/auto", 3);
  automatic.insert(automatic.end(), {"--nproc", "2", "distributed.auto_shard_steps=1"});
  Result ra = run(automatic, dir + "/auto");
  ASSERT_EQ(ra.code, 0) << ra.err;
  EXPECT_NE(ra.err.find("auto shard weights after 1 steps"), std::string::npos) << ra.err;
  expect_same_run(dir + "/auto", dir + "/one", "2 processes, auto shard weights");

  // Per-rank memory is in metrics.jsonl, one entry per rank.
  std::ifstream f(dir + "/three/metrics.jsonl");
  std::string first;
  std::getline(f, first);
  const json j = json::parse(first);
  ASSERT_TRUE(j.contains("memory_mib")) << first;
  EXPECT_EQ(j["memory_mib"].size(), 3u);
  for (const auto& m : j["memory_mib"]) EXPECT_GT(m.get<double>(), 1.0);
  // Only rank 0 writes: one adapter, one metrics file, one config.
  EXPECT_TRUE(fs::exists(dir + "/three/adapter/adapter_model.safetensors"));
}

TEST(DistE2E, ShardedBaseTrainsTheSameOnOneTwoAndThreeProcesses) {
  // distributed.shard_base=true: each rank keeps 1/N of every layer and gathers it before use;
  // the result equals one process's. With shard_weights [1, 2] rank 0 has 2 micro-batches of 6
  // and rank 1 four, so rank 0 keeps step by idle passes (and likewise in evaluation).
  const std::string dir = test::temp_dir("dist_shard_base");
  Result one = run(job(dir + "/one", 6), dir + "/one");
  ASSERT_EQ(one.code, 0) << one.err;
  for (const auto& [tag, extra] : std::vector<std::pair<std::string, std::vector<std::string>>>{
           {"two", {"--nproc", "2"}},
           {"three", {"--nproc", "3"}},
           {"uneven", {"--nproc", "2", "distributed.shard_weights=[1, 2]"}}}) {
    const int procs = std::stoi(extra[1]);
    auto args = job(dir + "/" + tag, 6 / procs);
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back("distributed.shard_base=true");
    Result r = run(args, dir + "/" + tag);
    ASSERT_EQ(r.code, 0) << tag << ": " << r.err;
    EXPECT_NE(r.err.find("layers sharded over " + extra[1] + " ranks"), std::string::npos) << r.err;
    expect_same_run(dir + "/" + tag, dir + "/one", tag + " processes, sharded base");
  }
  // QLoRA: NF4 layers sharded over 2 processes train what one 4-bit process trains.
  auto one4 = job(dir + "/one4", 6);
  one4.push_back("model.load_in_4bit=true");
  Result r14 = run(one4, dir + "/one4");
  ASSERT_EQ(r14.code, 0) << r14.err;
  auto two4 = job(dir + "/two4", 3);
  two4.insert(two4.end(), {"--nproc", "2", "model.load_in_4bit=true", "distributed.shard_base=true"});
  Result r24 = run(two4, dir + "/two4");
  ASSERT_EQ(r24.code, 0) << r24.err;
  EXPECT_NE(r24.err.find("projections in NF4"), std::string::npos) << r24.err;
  EXPECT_NE(r24.err.find("layers sharded over 2 ranks"), std::string::npos) << r24.err;
  expect_same_run(dir + "/two4", dir + "/one4", "2 processes, NF4 base sharded");
  // One process: nothing to shard over, said once.
  auto single = job(dir + "/single", 6);
  single.push_back("distributed.shard_base=true");
  Result rs = run(single, dir + "/single");
  ASSERT_EQ(rs.code, 0) << rs.err;
  EXPECT_NE(rs.err.find("distributed.shard_base: true has no effect with one process"),
            std::string::npos) << rs.err;
  expect_same_run(dir + "/single", dir + "/one", "1 process, shard_base true");
}

TEST(DistE2E, MemoryCapsAndShardedBaseMisuseAreRefusedBeforeAnythingIsWritten) {
  const std::string dir = test::temp_dir("dist_caps");
  struct Case {
    std::vector<std::string> extra;
    std::string error;
  };
  const std::vector<Case> cases = {
      // The built-in model has 2 layers: a shard of each plus two gathered layers is more than
      // the whole, so auto does not shard and sharding is not suggested.
      {{"--nproc", "2", "distributed.max_memory_gib=[0.001]"},
       "rank 0: the job needs 0.01 GiB on its device, more than its distributed.max_memory_gib "
       "0.00; lower train.micro_batch_size"},
      {{"--nproc", "2", "distributed.max_memory_gib=[0.001]", "distributed.shard_base=true"},
       "rank 0: the job needs 0.01 GiB on its device with the base sharded over 2 ranks, more "
       "than its distributed.max_memory_gib 0.00"},
      {{"--nproc", "2", "distributed.max_memory_gib=[1, 2, 3]"},
       "distributed.max_memory_gib has 3 entries for 2 processes"},
      {{"--nproc", "2", "distributed.shard_base=true", "train.sample_prompts=[\"hi\"]"},
       "train.sample_prompts generate on rank 0 alone"},
      {{"distributed.max_memory_gib=[0.001]"}, "rank 0: the job needs "},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string out = dir + "/out" + std::to_string(i);
    auto args = job(out, 2);
    args.insert(args.end(), cases[i].extra.begin(), cases[i].extra.end());
    Result r = run(args, out);
    EXPECT_EQ(r.code, 1) << i << ": " << r.err;
    EXPECT_NE(r.err.find(cases[i].error), std::string::npos) << i << ": " << r.err;
    EXPECT_FALSE(fs::exists(out + "/metrics.jsonl")) << i;
    EXPECT_FALSE(fs::exists(out + "/adapter")) << i;
  }
}

TEST(DistE2E, KilledWorkerStopsTheJobAndLeavesNoProcess) {
  const std::string dir = test::temp_dir("dist_kill");
  auto args = job(dir + "/out", 1, 100000);
  args.insert(args.end(), {"--nproc", "3", "train.save_steps=0"});
  const Proc launcher = spawn(args, {}, dir + "/run.stderr");
  // Wait until training runs (rank 0 has logged a step).
  const auto t0 = std::chrono::steady_clock::now();
  while (losses(dir + "/out").empty()) {
    ASSERT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(120)) << read_text(launcher.err_file);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const std::vector<pid_t> workers = children_of(launcher.pid);
  ASSERT_EQ(workers.size(), 3u);
  pid_t victim = -1;
  for (pid_t w : workers)
    if (env_of(w, "FTUNE_RANK") == "1") victim = w;
  ASSERT_GT(victim, 0);
  kill(victim, SIGKILL);
  const auto killed_at = std::chrono::steady_clock::now();
  const Result r = wait_for(launcher);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed_at).count();
  EXPECT_EQ(r.code, 1);
  EXPECT_LT(seconds, 10.0);
  const std::string expect = "error: rank 1 (cpu, pid " + std::to_string(victim) +
                             ") was killed by signal 9 (Killed); stopped the other ";
  EXPECT_EQ(last_line(r.err).rfind(expect, 0), 0u) << r.err;
  for (pid_t w : workers) EXPECT_FALSE(alive(w)) << "worker " << w << " left behind";
}

// Starts a long 3-process job and waits until rank 0 has logged a step; returns the launcher
// and its workers by rank.
Proc start_long_job(const std::string& dir, std::vector<pid_t>* by_rank,
                    const std::vector<std::string>& extra = {}) {
  auto args = job(dir + "/out", 1, 100000);
  args.insert(args.end(), {"--nproc", "3", "train.save_steps=0"});
  args.insert(args.end(), extra.begin(), extra.end());
  const Proc launcher = spawn(args, {}, dir + "/run.stderr");
  const auto t0 = std::chrono::steady_clock::now();
  while (losses(dir + "/out").empty()) {
    if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(120)) {
      ADD_FAILURE() << "no step logged: " << read_text(launcher.err_file);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  by_rank->assign(3, -1);
  for (pid_t w : children_of(launcher.pid)) {
    const std::string r = env_of(w, "FTUNE_RANK");
    if (!r.empty()) (*by_rank)[static_cast<size_t>(std::stoi(r))] = w;
  }
  return launcher;
}

TEST(DistE2E, HungWorkerIsStoppedAfterTheTimeout) {
  const std::string dir = test::temp_dir("dist_hang");
  std::vector<pid_t> w;
  const Proc launcher = start_long_job(dir, &w, {"distributed.timeout_s=5"});
  ASSERT_GT(w[2], 0);
  kill(w[2], SIGSTOP);  // alive, but no progress
  const auto stopped_at = std::chrono::steady_clock::now();
  const Result r = wait_for(launcher);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - stopped_at).count();
  EXPECT_EQ(r.code, 1);
  EXPECT_LT(seconds, 5 + 10.0);
  EXPECT_EQ(last_line(r.err).rfind("error: rank 2 (cpu, pid " + std::to_string(w[2]) +
                                   ") hung: no progress for ", 0),
            0u)
      << r.err;
  EXPECT_NE(last_line(r.err).find("(distributed.timeout_s=5)"), std::string::npos) << r.err;
  for (pid_t p : w) EXPECT_FALSE(alive(p)) << "worker " << p << " left behind";
}

// Ctrl-C reaches the launcher only (the workers have their own process group): it forwards it,
// the workers stop together at a step boundary, rank 0 writes a checkpoint, the job exits 130.
TEST(DistE2E, CtrlCStopsEveryWorkerAtAStepBoundaryWithACheckpoint) {
  const std::string dir = test::temp_dir("dist_sigint");
  std::vector<pid_t> w;
  const Proc launcher = start_long_job(dir, &w);
  kill(launcher.pid, SIGINT);
  const Result r = wait_for(launcher);
  EXPECT_EQ(r.code, 130) << r.err;
  EXPECT_NE(r.err.find("launcher: signal 2"), std::string::npos) << r.err;
  EXPECT_NE(last_line(r.err).find("continue with --resume"), std::string::npos) << r.err;
  bool checkpoint = false;
  if (fs::exists(dir + "/out/checkpoints"))
    for (const auto& e : fs::directory_iterator(dir + "/out/checkpoints"))
      checkpoint |= e.path().filename().string().rfind("step-", 0) == 0;
  EXPECT_TRUE(checkpoint) << r.err;
  for (pid_t p : w) EXPECT_FALSE(alive(p)) << "worker " << p << " left behind";
}

// A second Ctrl-C stops every worker at once, without a checkpoint.
TEST(DistE2E, SecondCtrlCStopsEveryWorkerAtOnce) {
  const std::string dir = test::temp_dir("dist_sigint2");
  std::vector<pid_t> w;
  const Proc launcher = start_long_job(dir, &w);
  kill(launcher.pid, SIGINT);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  kill(launcher.pid, SIGINT);
  const Result r = wait_for(launcher);
  if (r.code == 130) {  // the workers had already stopped at the step boundary
    EXPECT_NE(last_line(r.err).find("continue with --resume"), std::string::npos) << r.err;
  } else {
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_NE(last_line(r.err).find("interrupted"), std::string::npos) << r.err;
    EXPECT_NE(last_line(r.err).find("running worker(s)"), std::string::npos) << r.err;
  }
  for (pid_t p : w) EXPECT_FALSE(alive(p)) << "worker " << p << " left behind";
}

TEST(DistE2E, ResumeTwoProcessRunWithThreeProcesses) {
  const std::string& ref = reference_two_procs();  // 3 steps, 2 x 3 micro-batches
  const std::string dir = test::temp_dir("dist_resume");
  auto first = job(dir + "/out", 3);
  first.insert(first.end(), {"--nproc", "2", "train.save_steps=2"});
  Result r1 = run(first, dir + "/first");
  ASSERT_EQ(r1.code, 0) << r1.err;
  ASSERT_TRUE(fs::exists(dir + "/out/checkpoints/step-2"));
  // As if the job had died after step 2.
  fs::remove_all(dir + "/out/checkpoints/step-3");
  fs::remove_all(dir + "/out/adapter");
  auto again = job(dir + "/out", 2);  // 3 x 2: the same global window of 6
  again.insert(again.end(), {"--nproc", "3", "--resume"});
  Result r2 = run(again, dir + "/again");
  ASSERT_EQ(r2.code, 0) << r2.err;
  const auto a = adapter(dir + "/out"), b = adapter(ref);
  ASSERT_EQ(a.size(), b.size());
  for (const auto& [name, w] : b) EXPECT_LT(test::rel_l2(a.at(name), w), 1e-5) << name;

  // Another global window is refused, with the reason.
  auto other = job(dir + "/out", 3);
  other.insert(other.end(), {"--nproc", "3", "--resume"});
  Result r3 = run(other, dir + "/other");
  EXPECT_EQ(r3.code, 1);
  EXPECT_EQ(last_line(r3.err).rfind("error: --resume: ", 0), 0u) << r3.err;  // before any worker
  EXPECT_NE(last_line(r3.err).find("it ran 3 process(es), this run 3"), std::string::npos) << r3.err;
}

TEST(DistE2E, TorchrunEnvironmentLaunchesTheSameWorkers) {
  const std::string& ref = reference_two_procs();
  const std::string dir = test::temp_dir("dist_torchrun");
  const int port = free_port();  // ftune's store listens on MASTER_PORT + 1
  std::vector<Proc> ranks;
  for (int r = 0; r < 2; ++r)
    ranks.push_back(spawn(job(dir + "/out", 3),
                          {"RANK=" + std::to_string(r), "LOCAL_RANK=" + std::to_string(r),
                           "WORLD_SIZE=2", "LOCAL_WORLD_SIZE=2", "MASTER_ADDR=127.0.0.1",
                           "MASTER_PORT=" + std::to_string(port - 1), "OMP_NUM_THREADS=1"},
                          dir + "/rank" + std::to_string(r) + ".stderr"));
  for (int r = 0; r < 2; ++r) {
    const Result res = wait_for(ranks[static_cast<size_t>(r)]);
    EXPECT_EQ(res.code, 0) << "rank " << r << ": " << res.err;
    if (r == 0) {
      EXPECT_NE(res.err.find("launched by torchrun"), std::string::npos) << res.err;
    }
  }
  expect_same_run(dir + "/out", ref, "torchrun-style environment");
}

TEST(DistE2E, RanksWithDifferentConfigsAreRefused) {
  const std::string dir = test::temp_dir("dist_mismatch");
  const int port = free_port();
  std::vector<Proc> ranks;
  for (int r = 0; r < 2; ++r) {
    auto args = job(dir + "/out", 3);
    if (r == 1) args.push_back("train.learning_rate=1e-3");
    ranks.push_back(spawn(args,
                          {"RANK=" + std::to_string(r), "LOCAL_RANK=" + std::to_string(r),
                           "WORLD_SIZE=2", "MASTER_ADDR=127.0.0.1",
                           "MASTER_PORT=" + std::to_string(port - 1), "OMP_NUM_THREADS=1"},
                          dir + "/rank" + std::to_string(r) + ".stderr"));
  }
  for (int r = 0; r < 2; ++r) {
    const Result res = wait_for(ranks[static_cast<size_t>(r)]);
    EXPECT_EQ(res.code, 1) << res.err;
    EXPECT_NE(last_line(res.err).find("ranks disagree before training: rank 1 has a different "
                                      "config than rank 0"),
              std::string::npos)
        << res.err;
  }
  EXPECT_FALSE(fs::exists(dir + "/out/metrics.jsonl"));
}

TEST(DistE2E, OutOfMemoryNamesTheRankAndStep) {
#if defined(__SANITIZE_ADDRESS__)
  GTEST_SKIP() << "the address-space limit that makes the allocation fail also stops "
                  "AddressSanitizer's shadow memory from being mapped";
#endif
  const std::string dir = test::temp_dir("dist_oom");
  // Rows are as wide as the epoch's longest row (data/packing.h): packed into 16384-token rows,
  // the whole debug set (12173 tokens) is one row, so one micro-batch of 256 rows of that width
  // (3M tokens: one activation alone is 1.5 GB) does not fit in 1.5 GB of address space; it is
  // rank 0's (the window of 2 micro-batches holds only one).
  auto args = job(dir + "/out", 1);
  args.insert(args.end(), {"--nproc", "2", "train.micro_batch_size=256", "data.packing=true",
                           "data.max_seq_length=16384"});
  const Result r = wait_for(spawn(args, {}, dir + "/run.stderr", size_t{1500} << 20));
  EXPECT_EQ(r.code, 1);
  const std::string line = last_line(r.err);
  EXPECT_EQ(line.rfind("error: rank 0 (cpu, pid ", 0), 0u) << r.err;
  EXPECT_NE(line.find("exited with code 1: rank 0 (cpu): out of memory at step 1 ("), std::string::npos) << r.err;
  EXPECT_NE(line.find("lower train.micro_batch_size"), std::string::npos) << r.err;
}

TEST(DistE2E, TwoNodeLaunchersFormOneJob) {
  const std::string dir = test::temp_dir("dist_nodes");
  // Two launchers as two machines (both on localhost): 2 x 2 ranks, window 4 x 1.
  const std::string port = std::to_string(free_port());
  std::vector<Proc> nodes;
  for (int n = 0; n < 2; ++n) {
    auto args = job(dir + "/out", 1);
    args.insert(args.end(), {"--nproc", "2", "--nnodes", "2", "--node-rank", std::to_string(n),
                             "--master-addr", "127.0.0.1", "--master-port", port});
    nodes.push_back(spawn(args, {}, dir + "/node" + std::to_string(n) + ".stderr"));
  }
  for (int n = 0; n < 2; ++n) {
    const Result r = wait_for(nodes[static_cast<size_t>(n)]);
    EXPECT_EQ(r.code, 0) << "node " << n << ": " << r.err;
  }
  EXPECT_NE(read_text(dir + "/node0.stderr").find("distributed: 4 ranks"), std::string::npos);
  // The same window of 4 on one machine: 2 processes x 2.
  auto two = job(dir + "/two", 2);
  two.insert(two.end(), {"--nproc", "2"});
  const Result r2 = run(two, dir + "/two");
  ASSERT_EQ(r2.code, 0) << r2.err;
  expect_same_run(dir + "/out", dir + "/two", "2 nodes x 2 processes");
}
