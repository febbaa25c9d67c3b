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

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
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
    run("all_reduce", [&] {
      gloo::AllreduceOptions opts(ctx_);
      opts.setOutput(t.f32(), static_cast<size_t>(t.numel()));
      opts.setReduceFunction(
          static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
      opts.setTag(next_tag());
      gloo::allreduce(opts);
    });
  }

  // One communication thread runs the started reductions in order, while the caller computes.
  void all_reduce_sum_async(Tensor& t) override {
    FTUNE_CHECK(t.device().is_cpu() && t.dtype() == DType::F32,
                "gloo all_reduce: expects an F32 tensor in host memory");
    if (world_ == 1 || t.numel() == 0) return;
    if (!worker_.joinable()) worker_ = std::thread([this] { work(); });
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(t);
    }
    cv_.notify_all();
  }

  void wait_async() override {
    if (!worker_.joinable()) return;
    std::unique_lock<std::mutex> lock(mu_);
    if (!queue_.empty() || busy_) {
      if (on_wait_) on_wait_(true);
      done_cv_.wait(lock, [&] { return queue_.empty() && !busy_; });
      if (on_wait_) on_wait_(false);
    }
    if (error_) {
      std::exception_ptr e = error_;
      error_ = nullptr;
      std::rethrow_exception(e);
    }
  }

  void all_reduce_sum(std::span<double> values) override {
    if (world_ == 1 || values.empty()) return;
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
    FTUNE_CHECK(in.device().is_cpu() && out.device().is_cpu() && in.dtype() == DType::F32 &&
                    out.dtype() == DType::F32 && out.numel() == in.numel() * world_,
                "gloo all_gather: expects host F32 tensors, out = world_size x in");
    all_gather_bytes({reinterpret_cast<const uint8_t*>(in.f32()), in.nbytes()},
                     {reinterpret_cast<uint8_t*>(out.f32()), out.nbytes()});
  }

  void all_gather_bytes(std::span<const uint8_t> in, std::span<uint8_t> out) override {
    FTUNE_CHECK(out.size() == in.size() * static_cast<size_t>(world_),
                "all_gather_bytes: output must hold world_size x input bytes");
    if (world_ == 1) {
      std::memcpy(out.data(), in.data(), in.size());
      return;
    }
    if (in.empty()) return;
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
    run("barrier", [&] {
      gloo::BarrierOptions opts(ctx_);
      opts.setTag(next_tag());
      gloo::barrier(opts);
    });
  }

 private:
  uint32_t next_tag() { return tag_++; }

  // The communication thread: reduces queued tensors one after another. After a failure the
  // rest of the queue is dropped (the peers are gone) and wait_async() rethrows it.
  void work() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return quit_ || !queue_.empty(); });
      if (queue_.empty()) return;  // quit_
      Tensor t = queue_.front();
      queue_.pop_front();
      busy_ = true;
      const bool failed = error_ != nullptr;
      lock.unlock();
      std::exception_ptr err;
      if (!failed) {
        try {
          reduce(t);
        } catch (...) {
          err = std::current_exception();
        }
      }
      lock.lock();
      busy_ = false;
      if (err && !error_) error_ = err;
      if (queue_.empty()) done_cv_.notify_all();
    }
  }

  void reduce(Tensor& t) {
    try {
      gloo::AllreduceOptions opts(ctx_);
      opts.setOutput(t.f32(), static_cast<size_t>(t.numel()));
      opts.setReduceFunction(
          static_cast<void (*)(void*, const void*, const void*, size_t)>(&gloo::sum<float>));
      opts.setTag(next_tag());
      gloo::allreduce(opts);
    } catch (const gloo::Exception& e) {
      throw CommError(fmt::format("gloo all_reduce (during backward) failed on rank {} (another "
                                  "rank stopped or timed out?): {}", rank_, e.what()));
    }
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
  // The communication thread and its queue (all_reduce_sum_async / wait_async).
  std::thread worker_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  std::deque<Tensor> queue_;
  bool busy_ = false, quit_ = false;
  std::exception_ptr error_;
};

}  // namespace

std::unique_ptr<Communicator> make_gloo_communicator(KeyValueStore& store, const CommOptions& o) {
  return std::make_unique<GlooCommunicator>(store, o);
}

}  // namespace ftune
