// The embedding API (ftune.h) over the same pipeline as `ftune train` (cli/train_job.h).
#include "api/ftune.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/gpu.h"
#include "cli/embedded_assets.h"
#include "cli/train_job.h"
#include "core/error.h"
#include "dist/gradient_sync.h"
#include "dist/rendezvous.h"

namespace ftune::api {

namespace fs = std::filesystem;

namespace {

std::string numbers(const std::vector<double>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + fmt::format("{}", v[i]);
  return s + "]";
}

std::string find_worker_binary(const std::string& chosen) {
  if (!chosen.empty()) return chosen;
  if (const char* b = std::getenv("FTUNE_BINARY"); b && *b) return b;
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n > 0) {
    self[n] = '\0';
    const fs::path beside = fs::path(self).parent_path() / "ftune";
    if (fs::exists(beside)) return beside.string();
  }
  if (const char* path = std::getenv("PATH")) {
    std::string p(path);
    size_t start = 0;
    while (start <= p.size()) {
      size_t colon = p.find(':', start);
      if (colon == std::string::npos) colon = p.size();
      const fs::path cand = fs::path(p.substr(start, colon - start)) / "ftune";
      if (!p.substr(start, colon - start).empty() && access(cand.c_str(), X_OK) == 0) return cand.string();
      start = colon + 1;
    }
  }
  fail("data parallelism: cannot find the ftune binary for the worker processes; set "
       "FTUNE_BINARY or call Job::worker_binary(path)");
}

}  // namespace

Job Job::from_yaml_file(const std::string& path, std::vector<std::string> overrides) {
  std::ifstream f(path, std::ios::binary);
  FTUNE_CHECK(f.good(), "config file not found: '{}'", path);
  Job j;
  j.yaml_.assign(std::istreambuf_iterator<char>(f), {});
  j.origin_ = path;
  j.overrides_ = std::move(overrides);
  return j;
}

Job Job::from_yaml(const std::string& text, std::vector<std::string> overrides) {
  Job j;
  j.yaml_ = text;
  j.origin_ = "<yaml>";
  j.overrides_ = std::move(overrides);
  return j;
}

Job Job::builtin(std::vector<std::string> overrides) {
  Job j = from_yaml(std::string(embedded_asset("default_job_yaml")), std::move(overrides));
  j.origin_ = "<default job>";
  return j;
}

Job& Job::set(const std::string& key, const std::string& value) {
  overrides_.push_back(key + "=" + value);
  return *this;
}

Job& Job::enable_data_parallel(const DataParallel& dp) {
  FTUNE_CHECK(dp.devices >= 1, "enable_data_parallel: devices must be >= 1, got {}", dp.devices);
  if (dp.on_gpus) {
    set("distributed.gpus", std::to_string(dp.devices));
    set("distributed.nproc", "1");
  } else {
    set("distributed.nproc", std::to_string(dp.devices));
    set("distributed.gpus", "1");
    set("train.device", "cpu");
  }
  if (dp.micro_batch_size > 0) set("train.micro_batch_size", std::to_string(dp.micro_batch_size));
  set("distributed.aggregation", dp.aggregation);
  set("distributed.rank_weights", numbers(dp.rank_weights));
  set("distributed.shard_weights", numbers(dp.shard_weights));
  return *this;
}

Job& Job::resume(bool on) {
  resume_ = on;
  return *this;
}

Job& Job::worker_binary(const std::string& path) {
  worker_binary_ = path;
  return *this;
}

TrainConfig Job::config() const { return load_config_text(yaml_, origin_, overrides_); }

TrainResult Job::train() {
  const TrainConfig cfg = config();
  TrainArgs args;
  args.resume = resume_;
  const bool launches = (cfg.distributed.nproc > 1 || cfg.distributed.gpus != "1") &&
                        !rank_info_from_env(process_env(), cfg.distributed, false);
  if (launches) {
    // Workers are ftune processes running this exact configuration.
    const fs::path dir = fs::path(cfg.train.output_dir) / ".cache";
    fs::create_directories(dir);
    const std::string yaml = (dir / fmt::format("api-job-{}.yaml", getpid())).string();
    write_resolved_config(cfg, yaml);
    args.worker_exe = find_worker_binary(worker_binary_);
    args.argv = {args.worker_exe, "train", yaml};
    if (resume_) args.argv.push_back("--resume");
  }
  const TrainOutcome out = run_train_job(cfg, args);
  FTUNE_CHECK(out.exit_code == 0, "training failed on rank {} (exit code {})", out.rank, out.exit_code);
  TrainResult r;
  r.adapter_dir = out.role == "worker" && out.rank != 0 ? "" : cfg.train.output_dir + "/adapter";
  r.eval_loss = out.summary.eval_loss;
  r.metrics = read_metrics(cfg.train.output_dir);
  r.steps = static_cast<int64_t>(r.metrics.size());
  if (!r.metrics.empty()) {
    r.first_loss = r.metrics.front().loss;
    r.final_loss = r.metrics.back().loss;
  }
  if (out.role == "launcher") {  // the eval loss from the metrics file
    std::ifstream f(cfg.train.output_dir + "/metrics.jsonl");
    std::string line;
    while (std::getline(f, line)) {
      const auto j = nlohmann::json::parse(line);
      if (j.contains("eval_loss") && j["eval_loss"].is_number()) r.eval_loss = j["eval_loss"].get<double>();
    }
  }
  return r;
}

std::vector<StepRecord> read_metrics(const std::string& output_dir) {
  std::vector<StepRecord> v;
  std::ifstream f(output_dir + "/metrics.jsonl");
  std::string line;
  while (std::getline(f, line)) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("loss")) continue;
    StepRecord s;
    s.step = j.value("step", int64_t{0});
    s.loss = j["loss"].is_number() ? j["loss"].get<double>() : NAN;
    s.lr = j.value("lr", 0.0);
    s.grad_norm = j["grad_norm"].is_number() ? j["grad_norm"].get<double>() : NAN;
    s.tokens = j.value("tokens", int64_t{0});
    if (j.contains("memory_mib")) s.memory_mib = j["memory_mib"].get<std::vector<double>>();
    v.push_back(std::move(s));
  }
  return v;
}

namespace {
std::optional<RankInfo> me() { return rank_info_from_env(process_env(), DistributedConfig{}, false); }
}  // namespace

int world_size() { auto r = me(); return r ? r->world_size : 1; }
int rank() { auto r = me(); return r ? r->rank : 0; }
int local_rank() { auto r = me(); return r ? r->local_rank : 0; }
bool is_main_process() { return rank() == 0; }

MemoryInfo device_memory() {
  MemoryInfo m;
  const char* dev = std::getenv("FTUNE_DEVICE");
  m.device = dev && *dev ? dev : "cpu";
  if (m.device != "cpu") {
    const GpuRuntimeInfo g = query_gpus();
    if (!g.devices.empty()) {
      m.in_use_mib = static_cast<double>(g.devices[0].total_bytes - g.devices[0].free_bytes) / (1024.0 * 1024.0);
      return m;
    }
  }
  const auto [mem, peak] = host_memory_mib();
  m.in_use_mib = mem;
  m.peak_mib = peak;
  return m;
}

}  // namespace ftune::api
