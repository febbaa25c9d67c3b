// Ranks as threads for distributed tests in one process: each with its own rendezvous-store
// client and Gloo communicator.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include "dist/communicator.h"

namespace ftune::test {

// Runs fn(rank, comm) on `world` threads. Returns each rank's error message ("" = none).
std::vector<std::string> run_ranks(int world, const std::function<void(int, Communicator&)>& fn);

}  // namespace ftune::test
