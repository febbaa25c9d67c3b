// Thread pool sizing for workers (worker_threads.h).
#include "dist/worker_threads.h"

#include <omp.h>
#include <sched.h>

#include <algorithm>
#include <cstdlib>

extern "C" void openblas_set_num_threads(int);  // libopenblas (linked by the CPU backend)

namespace ftune {

int available_cores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) return std::max(1, CPU_COUNT(&set));
  return std::max(1, omp_get_num_procs());
}

int threads_per_worker(int local_world_size) {
  return std::max(1, available_cores() / std::max(1, local_world_size));
}

int size_worker_threads(int local_world_size) {
  if (const char* v = std::getenv("OMP_NUM_THREADS"); v && *v) return omp_get_max_threads();
  const int n = threads_per_worker(local_world_size);
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
  return n;
}

}  // namespace ftune
