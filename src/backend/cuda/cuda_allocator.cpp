// The CUDA DeviceAllocator behind Tensor::empty(..., Device::cuda(i)), Tensor::to() and zero_():
// a caching allocator, so that a training step does no cudaMalloc/cudaFree once the first step
// has sized the cache (the idea of PyTorch's CUDACachingAllocator and ggml's
// ggml_cuda_pool_leg, reduced to what ftune needs).
//
// Blocks. Requests are rounded up to a size class: 512 B granularity up to 1 MiB, 2 MiB above.
// A freed block goes back to its device's free list (never to the driver); a request takes the
// smallest free block that fits when it wastes at most 1/8 of the request (at least one
// granule), else a fresh cudaMalloc. Blocks are never split, so every block keeps cudaMalloc's
// 256-byte alignment. Training repeats the same shapes every step, so from the second step on
// every request finds a block of its own size class.
//
// Why reuse without events is safe. All device work of a CudaOps runs in order on its one
// stream, and the copies and memsets below run on the legacy default stream, which synchronizes
// with that (blocking) stream. A tensor is freed on the host after every operation that uses it
// has been enqueued; the next owner of the block enqueues its work later on the same stream (or
// the legacy stream), so the device runs it after every earlier use has finished. The host
// never waits. This holds as long as each device has one compute stream; work on another
// stream (e.g. a communication stream) must order itself with events before its tensors are
// freed or reused.
//
// Out of memory. When cudaMalloc fails, the device's cache is returned to the driver (cudaFree
// waits for the device, which makes that safe) and the allocation is retried once; if it fails
// again, OutOfMemoryError (core/error.h) reports the request, the bytes in tensors, the bytes
// reserved and the device's free/total memory.
//
// Accounting: core/tensor.cpp counts bytes in tensors; this file counts bytes reserved from the
// driver (in use + cached) and their peak; memory_stats(DeviceType::CUDA) reports both.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <string>
#include <vector>
#include <map>
#include <mutex>
#include <unordered_map>

#include "backend/cuda/check.h"
#include "backend/cuda/cudnn/cudnn_attention.h"
#include "backend/cuda/device_guard.h"
#include "backend/cuda_ops.h"

namespace ftune {

namespace {

constexpr size_t kSmallLimit = size_t{1} << 20;  // 1 MiB
constexpr size_t kSmallGranule = 512;
constexpr size_t kLargeGranule = size_t{2} << 20;  // 2 MiB

size_t granule_for(size_t bytes) { return bytes <= kSmallLimit ? kSmallGranule : kLargeGranule; }

size_t round_size(size_t bytes) {
  const size_t g = granule_for(bytes);
  return (bytes + g - 1) / g * g;
}

std::string gib(int64_t bytes) {
  return fmt::format("{:.2f} GiB", static_cast<double>(bytes) / static_cast<double>(1ll << 30));
}

class CachingCudaAllocator final : public DeviceAllocator {
 public:
  void* allocate(size_t bytes, int device_index) override {
    const size_t size = round_size(bytes);
    if (void* p = take_cached(size, device_index)) return p;
    cuda::DeviceGuard guard(device_index);
    void* p = nullptr;
    cudaError_t e = cudaMalloc(&p, size);
    if (e != cudaSuccess) {
      cudaGetLastError();  // clear the (non-sticky) allocation error
      release_device(device_index);
      e = cudaMalloc(&p, size);
    }
    if (e != cudaSuccess) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      const int64_t in_use = memory_stats(DeviceType::CUDA).live_bytes;
      const int64_t reserved = reserved_.load();
      throw OutOfMemoryError(
          fmt::format("cuda:{}: out of memory allocating {} ({} bytes): {} in tensors, {} reserved "
                      "by ftune, {} free of {} on the device ({})",
                      device_index, gib(static_cast<int64_t>(size)), size, gib(in_use),
                      gib(reserved), gib(static_cast<int64_t>(free_b)),
                      gib(static_cast<int64_t>(total_b)), cudaGetErrorString(e)),
          device_index, static_cast<int64_t>(size), in_use, reserved,
          static_cast<int64_t>(free_b), static_cast<int64_t>(total_b));
    }
    std::lock_guard<std::mutex> lock(mu_);
    caches_[device_index].used[p] = size;
    const int64_t now = reserved_.fetch_add(static_cast<int64_t>(size)) + static_cast<int64_t>(size);
    int64_t peak = peak_reserved_.load();
    while (now > peak && !peak_reserved_.compare_exchange_weak(peak, now)) {
    }
    return p;
  }

  void deallocate(void* p, int device_index) override {
    // Called from tensor destructors: must not throw, and makes no CUDA call (see the header:
    // the block is reused in stream order).
    std::lock_guard<std::mutex> lock(mu_);
    DeviceCache& c = caches_[device_index];
    const auto it = c.used.find(p);
    if (it == c.used.end()) {
      spdlog::warn("cuda:{}: freeing a block the allocator does not know", device_index);
      return;
    }
    c.free.emplace(it->second, p);
    c.used.erase(it);
  }

  void memset_zero(void* p, size_t bytes, int device_index) override {
    cuda::DeviceGuard guard(device_index);
    FTUNE_CUDA_CHECK(cudaMemset(p, 0, bytes));
  }

  void copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) override {
    // Unified addressing: the runtime infers the direction (and the devices) from the pointers.
    // Legacy default stream: ordered with the compute stream (see the header).
    const int dev = dst_dev.is_cpu() ? src_dev.index : dst_dev.index;
    cuda::DeviceGuard guard(dev);
    FTUNE_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
  }

  int64_t reserved_bytes() const override { return reserved_.load(); }
  int64_t peak_reserved_bytes() const override { return peak_reserved_.load(); }
  void reset_peak_reserved() override { peak_reserved_.store(reserved_.load()); }

  void release_cached() override {
    cuda::cudnn_attention_release();  // its handles hold device memory of their own
    std::vector<int> devices;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& [d, c] : caches_) devices.push_back(d);
    }
    for (int d : devices) release_device(d);
  }

 private:
  struct DeviceCache {
    std::multimap<size_t, void*> free;       // size -> block
    std::unordered_map<void*, size_t> used;  // block -> size
  };

  // A cached block for `size` (already rounded), or nullptr.
  void* take_cached(size_t size, int device_index) {
    std::lock_guard<std::mutex> lock(mu_);
    DeviceCache& c = caches_[device_index];
    const auto it = c.free.lower_bound(size);
    if (it == c.free.end()) return nullptr;
    const size_t slack = std::max(size / 8, granule_for(size));
    if (it->first - size > slack) return nullptr;
    void* p = it->second;
    c.used[p] = it->first;
    c.free.erase(it);
    return p;
  }

  // Returns the device's free blocks to the driver. cudaFree synchronizes with the device, so
  // no queued work can still use them.
  void release_device(int device_index) {
    std::multimap<size_t, void*> blocks;
    {
      std::lock_guard<std::mutex> lock(mu_);
      blocks.swap(caches_[device_index].free);
    }
    if (blocks.empty()) return;
    cuda::DeviceGuard guard(device_index);
    for (const auto& [size, p] : blocks) {
      const cudaError_t e = cudaFree(p);
      if (e != cudaSuccess && e != cudaErrorCudartUnloading) {
        cudaGetLastError();
        spdlog::warn("cuda:{}: cudaFree failed: {}", device_index, cudaGetErrorString(e));
      }
      reserved_.fetch_sub(static_cast<int64_t>(size));
    }
  }

  std::mutex mu_;
  std::map<int, DeviceCache> caches_;
  std::atomic<int64_t> reserved_{0};
  std::atomic<int64_t> peak_reserved_{0};
};

}  // namespace

void cuda_register_allocator() {
  // Never destroyed: tensors held by statics may be freed after main returns.
  static CachingCudaAllocator* const allocator = new CachingCudaAllocator();
  register_device_allocator(DeviceType::CUDA, allocator);
}

}  // namespace ftune
