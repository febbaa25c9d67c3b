// ftune's own launcher: one worker process per device (a GPU, or a slot of the CPU), each a
// fresh exec of this ftune binary with the same command line, started before the parent makes
// any CUDA call, and supervised until all end.
//
// Supervision: workers run in their own process group with PR_SET_PDEATHSIG, so none outlives
// the launcher. When a worker dies (exit code != 0 or a signal) or sends no progress beat for
// distributed.timeout_s outside a collective, the others get SIGTERM, then SIGKILL 3 s later, and the launcher
// fails with one line naming the rank, its device and the cause (exit code and the worker's
// last error line, the signal, or the hang). Ctrl-C (SIGINT/SIGTERM to the launcher) is
// forwarded to the workers, which stop together at the next step boundary (train/signals.h);
// a second one stops all workers as on a failure. Workers' stderr is forwarded (ranks other than 0 prefixed "[rank r]").
#pragma once
#include <string>
#include <vector>

namespace ftune {

// A worker exits with this code when it stopped because a peer failed (CommError), so the
// launcher reports the peer, not the echo.
constexpr int kExitPeerLost = 3;

struct WorkerSpec {
  int rank = 0;
  int local_rank = 0;
  std::string device;        // "cpu" or "cuda:K"
  std::string cuda_visible;  // CUDA_VISIBLE_DEVICES for it ("" = leave as is)
};

struct LaunchPlan {
  std::vector<WorkerSpec> workers;  // this machine's
  int world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 0;              // 0 = a free port (single machine)
  bool hosts_store = true;          // node 0: bind the store socket and pass it to rank 0
  int timeout_s = 1800;
  int threads_per_worker = 1;       // OMP_NUM_THREADS / OPENBLAS_NUM_THREADS (0 = leave)
  std::vector<std::string> argv;    // the command line each worker runs (argv[0] ignored)
  std::string exe;                  // the binary workers exec; "" = this program
  std::string job_token;            // FTUNE_JOB_TOKEN for the workers (rendezvous admission)
};

// Starts and supervises the workers; returns 0 when all exited 0, or the signal (SIGINT or
// SIGTERM) that interrupted the run once all workers have stopped. Throws ftune::Error with
// the failure line otherwise (after every worker is gone).
int run_launcher(const LaunchPlan& plan);

// Worker side: one progress beat to the launcher (no-op when fd < 0). A worker about to wait
// in a collective says so (entering_collective): waiting for a slow peer is not a hang, and
// when a rank stops making progress the launcher names that rank, not those waiting for it.
// Any later beat ends the waiting state.
void send_heartbeat(int fd, bool entering_collective = false);

}  // namespace ftune
