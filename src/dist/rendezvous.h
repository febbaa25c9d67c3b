// Who this process is in a data-parallel job, read from the environment of whatever started
// it: ftune's own launcher (FTUNE_RANK, ...), torchrun (RANK, LOCAL_RANK, WORLD_SIZE,
// LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT), srun (SLURM_PROCID, SLURM_LOCALID, SLURM_NTASKS,
// SLURM_JOB_NODELIST) or mpirun (OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK/LOCAL_SIZE). Also the
// parsing of a GPU selection ("4", "all", "0,2,3").
//
// The rendezvous store port: ftune's launcher passes its own; under torchrun MASTER_PORT is
// torch's TCP store, so ftune listens on MASTER_PORT + 1 (or distributed.master_port).
#pragma once
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "train/config.h"

namespace ftune {

struct RankInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_world_size = 1;
  std::string master_addr;  // host of rank 0's rendezvous store
  int master_port = 0;      // its port
  int store_fd = -1;        // rank 0 under ftune's launcher: the store's listening socket
  int heartbeat_fd = -1;    // under ftune's launcher: progress beats go here
  std::string launcher;     // "ftune" | "torchrun" | "slurm" | "mpirun"
  int cuda_device = -1;     // the device ordinal this rank uses (-1 = CPU)
  std::string device;       // "cpu" or "cuda:K" (physical id, for messages)
};

using EnvGetter = std::function<const char*(const char*)>;
// getenv.
EnvGetter process_env();

// This process's place in a job started by a launcher, or nullopt when none started it (a
// plain `ftune train`, which may then become the launcher itself). Throws for inconsistent
// variables. `gpu` selects whether ranks use CUDA devices (LOCAL_RANK-th visible device).
std::optional<RankInfo> rank_info_from_env(const EnvGetter& env, const DistributedConfig& cfg,
                                           bool gpu);

// First host of a SLURM node list: "node[10,20-23],gpu7" -> "node10".
std::string first_slurm_host(const std::string& nodelist);

// Device ids of a selection: "4" -> 0..3, "all" -> every visible device, "0,2,3" -> those.
// `visible` = devices present (-1 = unknown: counts are not checked against it).
std::vector<int> parse_gpu_selection(const std::string& spec, int visible);

// Number of NVIDIA GPUs visible to this process, without any CUDA call (the launcher makes
// none): /proc/driver/nvidia/gpus, narrowed by CUDA_VISIBLE_DEVICES. 0 when none.
int count_visible_gpus(const EnvGetter& env);

}  // namespace ftune
