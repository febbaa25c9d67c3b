// `ftune train` as a function, for the command line and for the embedding API (src/api):
// given a loaded config, train as the one process, become the launcher of N workers, or run
// as one rank when a launcher started this process (see cmd_train.cpp).
#pragma once
#include <string>

#include "cli/commands.h"
#include "train/config.h"
#include "train/train_loop.h"

namespace ftune {

struct TrainOutcome {
  int exit_code = 0;
  std::string role;     // "single" | "launcher" | "worker"
  int rank = 0;         // worker: its rank
  int world_size = 1;
  TrainSummary summary; // single and worker: the run's; launcher: adapter_dir only
};

// Throws ftune::Error for invalid input and failed jobs (the launcher's failure line).
TrainOutcome run_train_job(const TrainConfig& cfg, const TrainArgs& args);

}  // namespace ftune
