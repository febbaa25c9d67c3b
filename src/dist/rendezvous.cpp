// Reading launcher environments (rendezvous.h).
#include "dist/rendezvous.h"

#include <charconv>
#include <cstdlib>
#include <filesystem>
#include <set>

#include "core/error.h"

namespace ftune {

namespace {

std::optional<int> get_int(const EnvGetter& env, const char* name) {
  const char* v = env(name);
  if (!v || !*v) return std::nullopt;
  int x = 0;
  const std::string_view s(v);
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), x);
  FTUNE_CHECK(ec == std::errc() && end == s.data() + s.size(), "environment: {}='{}' is not an "
              "integer", name, v);
  return x;
}

std::string get_str(const EnvGetter& env, const char* name) {
  const char* v = env(name);
  return v ? v : "";
}

// The rendezvous port under an external launcher.
int external_port(const EnvGetter& env, const DistributedConfig& cfg, int fallback) {
  if (cfg.master_port > 0) return static_cast<int>(cfg.master_port);
  if (auto p = get_int(env, "MASTER_PORT")) return *p + 1;  // MASTER_PORT is torch's store
  return fallback;
}

}  // namespace

EnvGetter process_env() {
  return [](const char* n) -> const char* { return std::getenv(n); };
}

std::string first_slurm_host(const std::string& nodelist) {
  // Split at the first comma outside brackets.
  std::string first;
  int depth = 0;
  for (char c : nodelist) {
    if (c == '[') ++depth;
    if (c == ']') --depth;
    if (c == ',' && depth == 0) break;
    first += c;
  }
  const auto lb = first.find('[');
  if (lb == std::string::npos) return first;
  std::string inside = first.substr(lb + 1, first.find(']') - lb - 1);
  const auto stop = inside.find_first_of(",-");
  return first.substr(0, lb) + inside.substr(0, stop);
}

std::optional<RankInfo> rank_info_from_env(const EnvGetter& env, const DistributedConfig& cfg,
                                           bool gpu) {
  RankInfo ri;
  if (auto r = get_int(env, "FTUNE_RANK")) {  // ftune's own launcher
    ri.launcher = "ftune";
    ri.rank = *r;
    ri.world_size = get_int(env, "FTUNE_WORLD_SIZE").value_or(1);
    ri.local_rank = get_int(env, "FTUNE_LOCAL_RANK").value_or(0);
    ri.local_world_size = get_int(env, "FTUNE_LOCAL_WORLD_SIZE").value_or(1);
    ri.master_addr = get_str(env, "FTUNE_MASTER_ADDR");
    ri.master_port = get_int(env, "FTUNE_MASTER_PORT").value_or(0);
    ri.store_fd = get_int(env, "FTUNE_STORE_FD").value_or(-1);
    ri.heartbeat_fd = get_int(env, "FTUNE_HEARTBEAT_FD").value_or(-1);
    const std::string dev = get_str(env, "FTUNE_DEVICE");
    ri.device = dev.empty() ? "cpu" : dev;
    ri.cuda_device = ri.device == "cpu" ? -1 : 0;  // the launcher narrows CUDA_VISIBLE_DEVICES
  } else if (env("RANK") && env("WORLD_SIZE")) {  // torchrun (--no-python)
    ri.launcher = "torchrun";
    ri.rank = *get_int(env, "RANK");
    ri.world_size = *get_int(env, "WORLD_SIZE");
    ri.local_rank = get_int(env, "LOCAL_RANK").value_or(0);
    ri.local_world_size = get_int(env, "LOCAL_WORLD_SIZE").value_or(ri.world_size);
    ri.master_addr = cfg.master_addr.empty() ? get_str(env, "MASTER_ADDR") : cfg.master_addr;
    ri.master_port = external_port(env, cfg, 29501);
  } else if (env("SLURM_PROCID") && env("SLURM_STEP_ID") && get_int(env, "SLURM_NTASKS").value_or(1) > 1) {
    ri.launcher = "slurm";
    ri.rank = *get_int(env, "SLURM_PROCID");
    ri.world_size = *get_int(env, "SLURM_NTASKS");
    ri.local_rank = get_int(env, "SLURM_LOCALID").value_or(0);
    ri.local_world_size = ri.world_size / std::max(1, get_int(env, "SLURM_NNODES").value_or(1));
    ri.master_addr = !cfg.master_addr.empty() ? cfg.master_addr : get_str(env, "MASTER_ADDR");
    if (ri.master_addr.empty()) {
      std::string nodes = get_str(env, "SLURM_JOB_NODELIST");
      if (nodes.empty()) nodes = get_str(env, "SLURM_NODELIST");
      ri.master_addr = first_slurm_host(nodes);
    }
    ri.master_port = external_port(env, cfg, 20000 + get_int(env, "SLURM_JOB_ID").value_or(0) % 20000);
  } else if (env("OMPI_COMM_WORLD_RANK") && env("OMPI_COMM_WORLD_SIZE")) {
    ri.launcher = "mpirun";
    ri.rank = *get_int(env, "OMPI_COMM_WORLD_RANK");
    ri.world_size = *get_int(env, "OMPI_COMM_WORLD_SIZE");
    ri.local_rank = get_int(env, "OMPI_COMM_WORLD_LOCAL_RANK").value_or(0);
    ri.local_world_size = get_int(env, "OMPI_COMM_WORLD_LOCAL_SIZE").value_or(ri.world_size);
    ri.master_addr = !cfg.master_addr.empty() ? cfg.master_addr : get_str(env, "MASTER_ADDR");
    if (ri.master_addr.empty()) {
      FTUNE_CHECK(ri.local_world_size == ri.world_size,
                  "mpirun across machines: set MASTER_ADDR or distributed.master_addr to rank "
                  "0's host");
      ri.master_addr = "127.0.0.1";
    }
    ri.master_port = external_port(env, cfg, 29501);
  } else {
    return std::nullopt;
  }
  if (ri.master_addr.empty()) ri.master_addr = "127.0.0.1";
  FTUNE_CHECK(ri.world_size >= 1 && ri.rank >= 0 && ri.rank < ri.world_size,
              "{} environment: rank {} of world size {}", ri.launcher, ri.rank, ri.world_size);
  FTUNE_CHECK(ri.local_rank >= 0 && ri.local_world_size >= 1, "{} environment: local rank {} of "
              "{}", ri.launcher, ri.local_rank, ri.local_world_size);
  if (ri.launcher != "ftune") {
    ri.cuda_device = gpu ? ri.local_rank : -1;
    ri.device = gpu ? "cuda:" + std::to_string(ri.local_rank) : "cpu";
  }
  return ri;
}

std::vector<int> parse_gpu_selection(const std::string& spec, int visible) {
  FTUNE_CHECK(!spec.empty(), "distributed.gpus: empty selection (a count, all, or ids like 0,2,3)");
  std::vector<int> ids;
  if (spec == "all") {
    FTUNE_CHECK(visible > 0, "--gpus all: no GPU is visible");
    for (int i = 0; i < visible; ++i) ids.push_back(i);
    return ids;
  }
  const bool list = spec.find(',') != std::string::npos;
  std::set<int> seen;
  size_t start = 0;
  while (start <= spec.size()) {
    size_t comma = spec.find(',', start);
    if (comma == std::string::npos) comma = spec.size();
    const std::string item = spec.substr(start, comma - start);
    int v = -1;
    auto [end, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    FTUNE_CHECK(!item.empty() && ec == std::errc() && end == item.data() + item.size() && v >= 0,
                "distributed.gpus: '{}' is not a count, all, or a list of device ids like 0,2,3",
                spec);
    ids.push_back(v);
    FTUNE_CHECK(seen.insert(v).second, "distributed.gpus: device {} is listed twice in '{}'", v, spec);
    start = comma + 1;
  }
  if (!list) {  // a count
    const int n = ids[0];
    FTUNE_CHECK(n >= 1, "distributed.gpus: the count must be >= 1, got {}", n);
    FTUNE_CHECK(visible < 0 || n <= visible || n == 1,
                "distributed.gpus={}: only {} GPU(s) visible", n, visible);
    ids.clear();
    for (int i = 0; i < n; ++i) ids.push_back(i);
    return ids;
  }
  for (int id : ids)
    FTUNE_CHECK(visible < 0 || id < visible, "distributed.gpus: device {} does not exist ({} "
                "visible)", id, visible);
  return ids;
}

int count_visible_gpus(const EnvGetter& env) {
  std::error_code ec;
  int present = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/driver/nvidia/gpus", ec)) {
    (void)e;
    ++present;
  }
  const char* cvd = env("CUDA_VISIBLE_DEVICES");
  if (!cvd) return present;
  const std::string s(cvd);
  if (s.empty()) return 0;
  int n = 1;
  for (char c : s) n += c == ',';
  return std::min(n, present);
}

}  // namespace ftune
