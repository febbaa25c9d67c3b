// One interface over the collective libraries data parallelism uses: Gloo on the CPU, NCCL on
// GPUs (built with FTUNE_CUDA only; without it make_nccl_communicator says so). Every rank
// calls the same collectives in the same order. Tensors must live where the communicator
// works: host memory for Gloo, the rank's GPU for NCCL. Failures (a peer gone, a timeout)
// throw CommError, so a worker can tell "a peer died" from its own errors.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "core/error.h"
#include "core/tensor.h"

namespace ftune {

class KeyValueStore;

// A collective failed because of another rank (connection lost, timeout).
class CommError : public Error {
 public:
  using Error::Error;
};

// One entry of a communication trace (Communicator::set_tracing): an async collective's run
// on the communication side, or a point on the compute timeline (`compute`, start == end).
// Milliseconds from the first traced event since tracing began or the last take_trace().
struct CommSpan {
  std::string what;
  double start_ms = 0, end_ms = 0;
  bool compute = false;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual std::string backend() const = 0;  // "gloo" | "nccl"

  // In place: sum of `t` (F32) over all ranks.
  virtual void all_reduce_sum(Tensor& t) = 0;
  // Host values summed over all ranks in one collective (a step's scalars).
  virtual void all_reduce_sum(std::span<double> values) = 0;
  // out[r * in.numel() + i] = in[i] of rank r; out holds world_size() * in.numel() elements of
  // in's dtype (any dtype: the bytes travel as they are).
  virtual void all_gather(const Tensor& in, Tensor& out) = 0;
  // Host bytes, the same count on every rank: out = world_size() * in.size() bytes.
  virtual void all_gather_bytes(std::span<const uint8_t> in, std::span<uint8_t> out) = 0;
  virtual void barrier() = 0;

  // Starts an in-place sum of `t` over all ranks that proceeds while the caller goes on (the
  // gradient buckets reduced during backward). Every rank starts the same reductions in the same
  // order; `t` must be neither read nor written until wait_async() returns, and no other
  // collective may be called in between. NCCL: queued on the communicator's stream behind the
  // compute queued so far; Gloo: run by one communication thread. Default: synchronous.
  virtual void all_reduce_sum_async(Tensor& t) { all_reduce_sum(t); }
  // Waits until every started reduction is done (GPU: compute queued from now on waits for
  // them, the host does not). Rethrows a failure of any of them.
  virtual void wait_async() {}

  // Starts all_gather(in, out) the same way (queued with the async reductions, in the same
  // order on every rank); returns a ticket for wait_gather. Neither tensor may be touched until
  // then. The sharded base gathers its layers with it. Default: synchronous.
  virtual uint64_t all_gather_async(const Tensor& in, Tensor& out) {
    all_gather(in, out);
    return 0;
  }
  // Waits until the gather of `ticket` is done (GPU: compute queued from now on waits for it,
  // the host does not). Rethrows a failure of an async collective.
  virtual void wait_gather(uint64_t ticket) { (void)ticket; }

  // Tracing (off by default): what shows that the gradient buckets are reduced while backward
  // goes on. With it on, every async collective records when it ran (Gloo: on the comm thread;
  // NCCL: timing events around it on the comm stream) and trace_mark records a point of the
  // compute timeline (Gloo: now; NCCL: an event on the compute stream). take_trace() waits for
  // what was recorded and returns it in recording order, then starts afresh.
  virtual void set_tracing(bool on) { (void)on; }
  virtual void trace_mark(const std::string& what) { (void)what; }
  virtual std::vector<CommSpan> take_trace() { return {}; }
};

struct CommOptions {
  int rank = 0;
  int world_size = 1;
  int timeout_s = 1800;
  // Gloo: the address this rank's sockets bind to ("" = 127.0.0.1 on one node, else the host
  // name); NCCL: unused.
  std::string local_addr;
  int cuda_device = 0;  // NCCL: the device ordinal this rank uses
  // Called with true before a blocking collective and false after it (the launcher's
  // heartbeat: a rank waiting for its peers is not hung).
  std::function<void(bool)> on_wait;
};

// Gloo over TCP; rendezvous through `store` (rank 0's TCP key-value store).
std::unique_ptr<Communicator> make_gloo_communicator(KeyValueStore& store, const CommOptions& o);
// NCCL; rank 0 creates the ncclUniqueId and shares it through `store`.
std::unique_ptr<Communicator> make_nccl_communicator(KeyValueStore& store, const CommOptions& o);
// Whether this build has NCCL (FTUNE_CUDA).
bool nccl_available();

}  // namespace ftune
