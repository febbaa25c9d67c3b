// Sizing a worker's thread pools: N workers on one machine share its cores, so each runs
// OpenMP (and OpenBLAS, which shares the OpenMP pool) with cores/N threads, unless the user
// set OMP_NUM_THREADS. ftune's launcher sets the variables before exec; workers started by
// another launcher size themselves from their local world size.
#pragma once

namespace ftune {

// Cores this process may run on (its CPU affinity), at least 1.
int available_cores();

// max(1, available_cores() / local_world_size).
int threads_per_worker(int local_world_size);

// Applies threads_per_worker to OpenMP and OpenBLAS unless OMP_NUM_THREADS is set; returns the
// thread count in effect.
int size_worker_threads(int local_world_size);

}  // namespace ftune
