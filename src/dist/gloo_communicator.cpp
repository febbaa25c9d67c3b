// The CPU communicator: Gloo (Debian's libgloo-dev) over TCP, its full mesh connected through
// ftune's own rendezvous store (kv_store.h). Gloo's ring allreduce hands every rank the same
// bits, so replicas stay identical.
#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/common/error.h>
#include <gloo/math.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/tcp/device.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

#include "dist/communicator.h"
#include "dist/kv_store.h"

namespace ftune {

namespace {

// Gloo's Store interface over the rendezvous store.
class GlooStoreAdapter : public gloo::rendezvous::Store {
 public:
  explicit GlooStoreAdapter(KeyValueStore& s) : s_(s) {}
  void set(const std::string& key, const std::vector<char>& data) override {
    s_.set("gloo/" + key, data);
  }
  std::vector<char> get(const std::string& key) override { return s_.get("gloo/" + key); }
  void wait(const std::vector<std::string>& keys) override {
    for (const auto& k : keys) (void)get(k);
  }
  void wait(const std::vector<std::string>& keys, const std::chrono::milliseconds&) override {
    wait(keys);
  }

 private:
  KeyValueStore& s_;
};

class GlooCommunicator : public Communicator {
 public:
  GlooCommunicator(KeyValueStore& store, const CommOptions& o)
      : rank_(o.rank), world_(o.world_size), on_wait_(o.on_wait) {
    gloo::transport::tcp::attr attr;
    attr.hostname = o.local_addr.empty() ? "127.0.0.1" : o.local_addr;
    try {
      device_ = gloo::transport::tcp::CreateDevice(attr);
      auto ctx = std::make_shared<gloo::rendezvous::Context>(o.rank, o.world_size);
      ctx->setTimeout(std::chrono::seconds(o.timeout_s));
      GlooStoreAdapter adapter(store);
      if (on_wait_) on_wait_(true);  // connecting waits for every peer
      ctx->connectFullMesh(adapter, device_);
      if (on_wait_) on_wait_(false);
      ctx_ = ctx;
    } catch (const gloo::Exception& e) {
      throw CommError(fmt::format("gloo: rank {} could not connect to the other ranks: {}",
                                  o.rank, e.what()));
    }
  }

  ~GlooCommunicator() override {
    if (!worker_.joinable()) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }

  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  std::string backend() const override { return "gloo"; }

  void all_reduce_sum(Tensor& t) override {
    FTUNE_CHECK(t.device().is_cpu() && t.dtype() == DType::F32,
                "gloo all_reduce: expects an F32 tensor in host memory");
    if (world_ == 1 || t.numel() == 0) return;
    drain();
    run("all_reduce", [&] { reduce(t, next_tag()); });
  }

  // One communication thread runs the started collectives in order, while the caller computes.
  void all_reduce_sum_async(Tensor& t) override {
    FTUNE_CHECK(t.device().is_cpu() && t.dtype() == DType::F32,
                "gloo all_reduce: expects an F32 tensor in host memory");
    if (world_ == 1 || t.numel() == 0) return;
    const uint32_t tag = next_tag();
    enqueue("all_reduce (during backward)", [this, t, tag]() mutable { reduce(t, tag); });
  }

  void wait_async() override { drain(); }

  uint64_t all_gather_async(const Tensor& in, Tensor& out) override {
    check_gather(in, out);
    if (world_ == 1 || in.nbytes() == 0) {
      if (in.nbytes() > 0) std::memcpy(out.raw(), in.raw(), in.nbytes());
      return 0;
    }
    const uint32_t tag = next_tag();
    return enqueue("all_gather", [this, in, out, tag] { gather(in, out, tag); });
  }

  void wait_gather(uint64_t ticket) override {
    if (ticket == 0) return;
    std::unique_lock<std::mutex> lock(mu_);
    if (done_ticket_ < ticket) {
      if (on_wait_) on_wait_(true);
      done_cv_.wait(lock, [&] { return done_ticket_ >= ticket; });
      if (on_wait_) on_wait_(false);
    }
    rethrow_locked();
  }

  void set_tracing(bool on) override {
    std::lock_guard<std::mutex> lock(mu_);
    tracing_ = on;
    trace_.clear();
    trace_origin_ = std::chrono::steady_clock::now();
  }

  void trace_mark(const std::string& what) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (!tracing_) return;
    const double t = ms_since_origin();
    trace_.push_back({what, t, t, true});
  }

  std::vector<CommSpan> take_trace() override {
    drain();
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<CommSpan> out = std::move(trace_);
    trace_.clear();
    // Recording order; the comm thread's spans are pushed when they end, so sort by start.
    std::stable_sort(out.begin(), out.end(),
                     [](const CommSpan& a, const CommSpan& b) { return a.start_ms < b.start_ms; });
    if (!out.empty()) {
      const double t0 = out.front().start_ms;
      for (auto& e : out) e.start_ms -= t0, e.end_ms -= t0;
    }
    trace_origin_ = std::chrono::steady_clock::now();
    return out;
  }

  void all_reduce_sum(std::span<double> values) override {
    if (world_ == 1 || values.empty()) return;
    drain();
    run("all_reduce", [&] {
      gloo::AllreduceOptions opts(ctx_);
      opts.setOutput(values.data(), values.size());
      opts.setReduceFunction(
          static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<double>));
      opts.setTag(next_tag());
      gloo::allreduce(opts);
    });
  }

  void all_gather(const Tensor& in, Tensor& out) override {
    check_gather(in, out);
    all_gather_bytes({static_cast<const uint8_t*>(in.raw()), in.nbytes()},
                     {static_cast<uint8_t*>(out.raw()), out.nbytes()});
  }

  void all_gather_bytes(std::span<const uint8_t> in, std::span<uint8_t> out) override {
    FTUNE_CHECK(out.size() == in.size() * static_cast<size_t>(world_),
                "all_gather_bytes: output must hold world_size x input bytes");
    if (world_ == 1) {
      if (!in.empty()) std::memcpy(out.data(), in.data(), in.size());
      return;
    }
    if (in.empty()) return;
    drain();
    run("all_gather", [&] {
      gloo::AllgatherOptions opts(ctx_);
      opts.setInput(const_cast<uint8_t*>(in.data()), in.size());
      opts.setOutput(out.data(), out.size());
      opts.setTag(next_tag());
      gloo::allgather(opts);
    });
  }

  void barrier() override {
    if (world_ == 1) return;
    drain();
    run("barrier", [&] {
      gloo::BarrierOptions opts(ctx_);
      opts.setTag(next_tag());
      gloo::barrier(opts);
    });
  }

 private:
  struct Job {
    std::function<void()> fn;
    const char* what;
    uint64_t ticket;
  };

  // Tags are taken on the caller's thread, in the order every rank issues its collectives.
  uint32_t next_tag() { return tag_++; }

  void check_gather(const Tensor& in, const Tensor& out) const {
    FTUNE_CHECK(in.defined() && out.defined() && in.device().is_cpu() && out.device().is_cpu() &&
                    in.dtype() == out.dtype() && in.is_contiguous() && out.is_contiguous() &&
                    out.nbytes() == in.nbytes() * static_cast<size_t>(world_),
                "gloo all_gather: expects contiguous host tensors of one dtype, out = world_size "
                "x in");
  }

  void reduce(Tensor& t, uint32_t tag) {
    gloo::AllreduceOptions opts(ctx_);
    opts.setOutput(t.f32(), static_cast<size_t>(t.numel()));
    opts.setReduceFunction(
        static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
    opts.setTag(tag);
    gloo::allreduce(opts);
  }

  void gather(const Tensor& in, const Tensor& out, uint32_t tag) {
    gloo::AllgatherOptions opts(ctx_);
    opts.setInput(static_cast<uint8_t*>(in.raw()), in.nbytes());
    opts.setOutput(static_cast<uint8_t*>(out.raw()), out.nbytes());
    opts.setTag(tag);
    gloo::allgather(opts);
  }

  uint64_t enqueue(const char* what, std::function<void()> fn) {
    if (!worker_.joinable()) worker_ = std::thread([this] { work(); });
    uint64_t ticket;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ticket = ++next_ticket_;
      queue_.push_back({std::move(fn), what, ticket});
    }
    cv_.notify_all();
    return ticket;
  }

  // Waits for every queued collective; rethrows the first failure.
  void drain() {
    if (!worker_.joinable()) return;
    std::unique_lock<std::mutex> lock(mu_);
    if (!queue_.empty() || busy_) {
      if (on_wait_) on_wait_(true);
      done_cv_.wait(lock, [&] { return queue_.empty() && !busy_; });
      if (on_wait_) on_wait_(false);
    }
    rethrow_locked();
  }

  void rethrow_locked() {
    if (error_) {
      std::exception_ptr e = error_;
      error_ = nullptr;
      std::rethrow_exception(e);
    }
  }

  // The communication thread: runs queued collectives one after another. After a failure the
  // rest of the queue is dropped (the peers are gone; their tickets count as done) and the next
  // wait rethrows it.
  void work() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return quit_ || !queue_.empty(); });
      if (queue_.empty()) return;  // quit_
      Job job = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
      const bool failed = error_ != nullptr || failed_;
      const bool traced = tracing_;
      const auto origin = trace_origin_;
      lock.unlock();
      auto ms = [&] {
        return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - origin)
            .count();
      };
      std::exception_ptr err;
      const double started = traced ? ms() : 0.0;
      if (!failed) {
        try {
          job.fn();
        } catch (const gloo::Exception& e) {
          err = std::make_exception_ptr(CommError(fmt::format(
              "gloo {} failed on rank {} (another rank stopped or timed out?): {}", job.what,
              rank_, e.what())));
        } catch (...) {
          err = std::current_exception();
        }
      }
      lock.lock();
      if (traced) trace_.push_back({job.what, started, ms(), false});
      busy_ = false;
      done_ticket_ = job.ticket;
      if (err) {
        failed_ = true;
        if (!error_) error_ = err;
      }
      done_cv_.notify_all();
    }
  }

  double ms_since_origin() const {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() -
                                                     trace_origin_)
        .count();
  }

  template <class F>
  void run(const char* what, F&& f) {
    if (on_wait_) on_wait_(true);
    try {
      f();
      if (on_wait_) on_wait_(false);
    } catch (const gloo::Exception& e) {
      throw CommError(fmt::format("gloo {} failed on rank {} (another rank stopped or timed "
                                  "out?): {}", what, rank_, e.what()));
    }
  }

  int rank_, world_;
  std::function<void(bool)> on_wait_;
  uint32_t tag_ = 1;
  std::shared_ptr<gloo::transport::Device> device_;
  std::shared_ptr<gloo::Context> ctx_;
  // The communication thread and its queue (all_reduce_sum_async, all_gather_async).
  std::thread worker_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::deque<Job> queue_;
  uint64_t next_ticket_ = 0, done_ticket_ = 0;
  bool busy_ = false, quit_ = false;
  bool failed_ = false;  // a queued collective failed: the rest are dropped
  std::exception_ptr error_;
  // Tracing (set_tracing): guarded by mu_; tracing_ is only changed between steps.
  bool tracing_ = false;
  std::vector<CommSpan> trace_;
  std::chrono::steady_clock::time_point trace_origin_ = std::chrono::steady_clock::now();
};

}  // namespace

std::unique_ptr<Communicator> make_gloo_communicator(KeyValueStore& store, const CommOptions& o) {
  return std::make_unique<GlooCommunicator>(store, o);
}

}  // namespace ftune
