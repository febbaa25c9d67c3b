// The GPU communicator: NCCL on a dedicated stream. Ordering with the compute stream goes by
// events, not host syncs: CudaOps computes on a blocking stream, which is ordered with the
// legacy default stream, so an event recorded there marks "all compute so far"; the NCCL
// stream waits on it, and the default stream (hence the compute stream) waits on the event
// recorded after the collective. Only host-value reductions synchronize (the host needs them).
// Rank 0 creates the ncclUniqueId and publishes it in this run's rendezvous store.
#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <cstring>
#include <deque>
#include <string>
#include <utility>
#include <vector>

#include "dist/communicator.h"
#include "dist/kv_store.h"

#define FTUNE_NCCL_CHECK(expr)                                                              \
  do {                                                                                      \
    ncclResult_t _r = (expr);                                                               \
    if (_r != ncclSuccess)                                                                  \
      throw ::ftune::CommError(fmt::format("{}:{}: {} failed: {}", __FILE__, __LINE__, #expr, \
                                           ncclGetErrorString(_r)));                        \
  } while (0)

#define FTUNE_CUDART_CHECK(expr)                                                            \
  do {                                                                                      \
    cudaError_t _e = (expr);                                                                \
    if (_e != cudaSuccess)                                                                  \
      ::ftune::fail("{}:{}: {} failed: {}", __FILE__, __LINE__, #expr, cudaGetErrorString(_e)); \
  } while (0)

namespace ftune {

namespace {

class NcclCommunicator : public Communicator {
 public:
  NcclCommunicator(KeyValueStore& store, const CommOptions& o)
      : rank_(o.rank), world_(o.world_size), device_(o.cuda_device), on_wait_(o.on_wait) {
    FTUNE_CUDART_CHECK(cudaSetDevice(device_));
    ncclUniqueId id;
    if (rank_ == 0) {
      FTUNE_NCCL_CHECK(ncclGetUniqueId(&id));
      store.set("nccl/unique_id", std::vector<char>(id.internal, id.internal + sizeof id.internal));
    }
    const std::vector<char> bytes = store.get("nccl/unique_id");
    FTUNE_CHECK(bytes.size() == sizeof id.internal, "nccl: malformed ncclUniqueId in the store");
    std::memcpy(id.internal, bytes.data(), sizeof id.internal);
    FTUNE_NCCL_CHECK(ncclCommInitRank(&comm_, world_, id, rank_));
    FTUNE_CUDART_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    FTUNE_CUDART_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
    FTUNE_CUDART_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
    FTUNE_CUDART_CHECK(cudaMalloc(&scratch_, kScratchBytes));
  }

  ~NcclCommunicator() override {
    if (stream_) cudaStreamSynchronize(stream_);
    if (comm_) ncclCommDestroy(comm_);
    if (scratch_) cudaFree(scratch_);
    if (ready_) cudaEventDestroy(ready_);
    if (done_) cudaEventDestroy(done_);
    clear_trace();
    for (const auto& g : gathers_) cudaEventDestroy(g.second);
    for (cudaEvent_t e : free_events_) cudaEventDestroy(e);
    if (stream_) cudaStreamDestroy(stream_);
  }

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  std::string backend() const override { return "nccl"; }

  void all_reduce_sum(Tensor& t) override {
    FTUNE_CHECK(!t.device().is_cpu() && t.dtype() == DType::F32,
                "nccl all_reduce: expects an F32 tensor on the GPU");
    begin();
    FTUNE_NCCL_CHECK(ncclAllReduce(t.f32(), t.f32(), static_cast<size_t>(t.numel()), ncclFloat,
                                   ncclSum, comm_, stream_));
    end();
  }

  // Queued behind the compute so far; compute queued later does NOT wait until wait_async().
  void all_reduce_sum_async(Tensor& t) override {
    FTUNE_CHECK(!t.device().is_cpu() && t.dtype() == DType::F32,
                "nccl all_reduce: expects an F32 tensor on the GPU");
    begin();
    Traced tr = trace_begin("all_reduce (during backward)");
    FTUNE_NCCL_CHECK(ncclAllReduce(t.f32(), t.f32(), static_cast<size_t>(t.numel()), ncclFloat,
                                   ncclSum, comm_, stream_));
    trace_end(tr);
    pending_ = true;
  }

  void set_tracing(bool on) override {
    clear_trace();
    tracing_ = on;
  }

  void trace_mark(const std::string& what) override {
    if (!tracing_) return;
    cudaEvent_t ev = nullptr;
    FTUNE_CUDART_CHECK(cudaEventCreate(&ev));
    FTUNE_CUDART_CHECK(cudaEventRecord(ev, cudaStreamLegacy));
    trace_.push_back({what, ev, ev, true});
  }

  std::vector<CommSpan> take_trace() override {
    std::vector<CommSpan> out;
    if (trace_.empty()) return out;
    for (const auto& e : trace_) FTUNE_CUDART_CHECK(cudaEventSynchronize(e.end));
    const cudaEvent_t origin = trace_.front().start;
    double first = 0;
    for (const auto& e : trace_) {
      float s = 0, t = 0;
      FTUNE_CUDART_CHECK(cudaEventElapsedTime(&s, origin, e.start));
      FTUNE_CUDART_CHECK(cudaEventElapsedTime(&t, origin, e.end));
      out.push_back({e.what, s, t, e.compute});
      first = std::min(first, static_cast<double>(s));
    }
    for (auto& c : out) c.start_ms -= first, c.end_ms -= first;
    clear_trace();
    return out;
  }

  void wait_async() override {
    if (!pending_) return;
    end();
    pending_ = false;
  }

  void all_reduce_sum(std::span<double> values) override {
    const size_t bytes = values.size() * sizeof(double);
    FTUNE_CHECK(bytes <= kScratchBytes, "nccl: {} scalars exceed the scratch buffer", values.size());
    begin();
    FTUNE_CUDART_CHECK(cudaMemcpyAsync(scratch_, values.data(), bytes, cudaMemcpyHostToDevice, stream_));
    FTUNE_NCCL_CHECK(ncclAllReduce(scratch_, scratch_, values.size(), ncclDouble, ncclSum, comm_, stream_));
    FTUNE_CUDART_CHECK(cudaMemcpyAsync(values.data(), scratch_, bytes, cudaMemcpyDeviceToHost, stream_));
    wait_host();  // the host reads the result
  }

  void all_gather(const Tensor& in, Tensor& out) override {
    check_gather(in, out);
    begin();
    FTUNE_NCCL_CHECK(ncclAllGather(in.raw(), out.raw(), in.nbytes(), ncclUint8, comm_, stream_));
    end();
  }

  // Queued behind the compute so far; only compute queued after wait_gather(ticket) waits.
  uint64_t all_gather_async(const Tensor& in, Tensor& out) override {
    check_gather(in, out);
    begin();
    Traced tr = trace_begin("all_gather (sharded base)");
    FTUNE_NCCL_CHECK(ncclAllGather(in.raw(), out.raw(), in.nbytes(), ncclUint8, comm_, stream_));
    trace_end(tr);
    cudaEvent_t ev = nullptr;
    if (free_events_.empty()) {
      FTUNE_CUDART_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    } else {
      ev = free_events_.back();
      free_events_.pop_back();
    }
    FTUNE_CUDART_CHECK(cudaEventRecord(ev, stream_));
    gathers_.push_back({++next_ticket_, ev});
    return next_ticket_;
  }

  void wait_gather(uint64_t ticket) override {
    // The stream runs gathers in order: waiting for `ticket` covers the earlier ones too, whose
    // events go back to the pool.
    while (!gathers_.empty() && gathers_.front().first <= ticket) {
      const auto [t, ev] = gathers_.front();
      gathers_.pop_front();
      if (t == ticket) FTUNE_CUDART_CHECK(cudaStreamWaitEvent(cudaStreamLegacy, ev, 0));
      free_events_.push_back(ev);
    }
  }

  void all_gather_bytes(std::span<const uint8_t> in, std::span<uint8_t> out) override {
    FTUNE_CHECK(out.size() == in.size() * static_cast<size_t>(world_) && out.size() <= kScratchBytes,
                "nccl all_gather_bytes: output must hold world_size x input bytes (<= {} bytes)",
                kScratchBytes);
    begin();
    uint8_t* dev = static_cast<uint8_t*>(scratch_);
    FTUNE_CUDART_CHECK(cudaMemcpyAsync(dev + in.size() * static_cast<size_t>(rank_), in.data(),
                                       in.size(), cudaMemcpyHostToDevice, stream_));
    FTUNE_NCCL_CHECK(ncclAllGather(dev + in.size() * static_cast<size_t>(rank_), dev, in.size(),
                                   ncclUint8, comm_, stream_));
    FTUNE_CUDART_CHECK(cudaMemcpyAsync(out.data(), dev, out.size(), cudaMemcpyDeviceToHost, stream_));
    wait_host();
  }

  void barrier() override {
    double one = 1.0;
    all_reduce_sum(std::span<double>(&one, 1));
  }

 private:
  static constexpr size_t kScratchBytes = 1 << 20;

  // Tracing: timing events around an async collective on the NCCL stream.
  struct TraceEntry {
    std::string what;
    cudaEvent_t start, end;
    bool compute;
  };
  struct Traced {
    const char* what = nullptr;
    cudaEvent_t start = nullptr;
  };
  Traced trace_begin(const char* what) {
    Traced t;
    if (!tracing_) return t;
    t.what = what;
    FTUNE_CUDART_CHECK(cudaEventCreate(&t.start));
    FTUNE_CUDART_CHECK(cudaEventRecord(t.start, stream_));
    return t;
  }
  void trace_end(const Traced& t) {
    if (t.start == nullptr) return;
    cudaEvent_t end = nullptr;
    FTUNE_CUDART_CHECK(cudaEventCreate(&end));
    FTUNE_CUDART_CHECK(cudaEventRecord(end, stream_));
    trace_.push_back({t.what, t.start, end, false});
  }
  void clear_trace() {
    for (const auto& e : trace_) {
      cudaEventDestroy(e.start);
      if (e.end != e.start) cudaEventDestroy(e.end);
    }
    trace_.clear();
  }

  void check_gather(const Tensor& in, const Tensor& out) const {
    FTUNE_CHECK(in.defined() && out.defined() && !in.device().is_cpu() && !out.device().is_cpu() &&
                    in.dtype() == out.dtype() && in.is_contiguous() && out.is_contiguous() &&
                    out.nbytes() == in.nbytes() * static_cast<size_t>(world_),
                "nccl all_gather: expects contiguous GPU tensors of one dtype, out = world_size x in");
  }

  // The NCCL stream waits for all compute queued so far (see the file comment).
  void begin() {
    FTUNE_CUDART_CHECK(cudaEventRecord(ready_, cudaStreamLegacy));
    FTUNE_CUDART_CHECK(cudaStreamWaitEvent(stream_, ready_, 0));
  }
  // The host waits for the collective (peers included): the launcher is told.
  void wait_host() {
    if (on_wait_) on_wait_(true);
    FTUNE_CUDART_CHECK(cudaStreamSynchronize(stream_));
    if (on_wait_) on_wait_(false);
  }
  // Compute queued from now on waits for the collective.
  void end() {
    FTUNE_CUDART_CHECK(cudaEventRecord(done_, stream_));
    FTUNE_CUDART_CHECK(cudaStreamWaitEvent(cudaStreamLegacy, done_, 0));
  }

  int rank_, world_, device_;
  std::function<void(bool)> on_wait_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
  cudaEvent_t ready_ = nullptr, done_ = nullptr;
  void* scratch_ = nullptr;
  bool pending_ = false;  // async reductions not yet waited for
  // Async gathers not yet waited for (ticket, event recorded after it) and spare events.
  std::deque<std::pair<uint64_t, cudaEvent_t>> gathers_;
  std::vector<cudaEvent_t> free_events_;
  uint64_t next_ticket_ = 0;
  bool tracing_ = false;
  std::vector<TraceEntry> trace_;
};

}  // namespace

std::unique_ptr<Communicator> make_nccl_communicator(KeyValueStore& store, const CommOptions& o) {
  return std::make_unique<NcclCommunicator>(store, o);
}

bool nccl_available() { return true; }

}  // namespace ftune
