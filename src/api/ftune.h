// ftune's C++ API for programs that embed it: load a model and a config, enable data
// parallelism with one call, train, read the metrics; plus what distributed code asks (world
// size, rank, main process, memory of this process's device).
//
//   auto job = ftune::api::Job::from_yaml_file("job.yaml");
//   ftune::api::DataParallel dp;
//   dp.devices = 4;
//   dp.on_gpus = true;
//   dp.micro_batch_size = 2;
//   job.enable_data_parallel(dp);
//   ftune::api::TrainResult r = job.train();  // launches and supervises 4 worker processes
//   for (const auto& m : r.metrics) std::printf("%lld %f\n", (long long)m.step, m.loss);
//
// How the processes are arranged: with devices > 1, the calling process becomes the launcher
// and starts one ftune worker process per device (the `ftune` binary: see worker_binary);
// train() returns when all have finished, with rank 0's metrics. When the program itself is
// started once per rank by torchrun, srun or mpirun (their environment variables are set),
// train() runs this rank's share in-process and returns in every rank; guard output with
// is_main_process(). Errors are thrown as ftune::Error (std::runtime_error), never exit().
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "train/config.h"

namespace ftune::api {

struct DataParallel {
  int devices = 1;                    // worker processes: GPUs (on_gpus) or CPU workers
  bool on_gpus = false;               // true: one GPU each (NCCL); false: CPU workers (Gloo)
  int64_t micro_batch_size = 0;       // per device; 0 = the config's train.micro_batch_size
  std::string aggregation = "token_mean";  // token_mean | mean | weighted | median
  std::vector<double> rank_weights;   // aggregation weighted
  std::vector<double> shard_weights;  // uneven shares of each step, e.g. {1, 1, 2, 2}
};

struct StepRecord {
  int64_t step = 0;
  double loss = 0, lr = 0, grad_norm = 0;
  int64_t tokens = 0;
  std::vector<double> memory_mib;  // per rank (distributed runs)
};

struct TrainResult {
  int64_t steps = 0;         // optimizer steps in metrics.jsonl
  double first_loss = 0, final_loss = 0;
  double eval_loss = -1;     // last evaluation; < 0 when none
  std::string adapter_dir;   // the PEFT adapter ("" on ranks other than 0)
  std::vector<StepRecord> metrics;  // every logged step (rank 0's metrics.jsonl)
};

class Job {
 public:
  // A YAML config file, the same file as YAML text, or the built-in default job (tiny model,
  // debug dataset); overrides are "section.key=value" as on the command line.
  static Job from_yaml_file(const std::string& path, std::vector<std::string> overrides = {});
  static Job from_yaml(const std::string& text, std::vector<std::string> overrides = {});
  static Job builtin(std::vector<std::string> overrides = {});

  Job& set(const std::string& key, const std::string& value);  // set("train.max_steps", "10")
  Job& model(const std::string& hf_folder) { return set("model.path", hf_folder); }
  Job& data(const std::string& file) { return set("data.train", file); }
  // One call: number of devices, per-device micro-batch, aggregation (and shares).
  Job& enable_data_parallel(const DataParallel& dp);
  Job& resume(bool on = true);
  // The binary worker processes run; default: $FTUNE_BINARY, else `ftune` beside this
  // program, else `ftune` on PATH.
  Job& worker_binary(const std::string& path);

  // The validated configuration (throws ftune::Error listing every problem).
  TrainConfig config() const;
  TrainResult train();

 private:
  std::string yaml_, origin_;
  std::vector<std::string> overrides_;
  bool resume_ = false;
  std::string worker_binary_;
};

// Rank metrics of a finished or running job: metrics.jsonl in output_dir.
std::vector<StepRecord> read_metrics(const std::string& output_dir);

// ---- queries for code running as one rank of a job ----------------------------------------
int world_size();        // 1 when no launcher started this process
int rank();              // 0 when no launcher started this process
int local_rank();
bool is_main_process();  // rank 0 (or the only process): the one that writes

struct MemoryInfo {
  std::string device;  // "cpu" or "cuda:K"
  double in_use_mib = 0;
  double peak_mib = 0;  // host: peak RSS; GPU: not tracked yet (0)
};
// Memory of this process's device: host RSS on the CPU; GPU memory in use on its device.
MemoryInfo device_memory();

}  // namespace ftune::api
