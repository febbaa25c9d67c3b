// The CUDA activation stash (activation_stash.h): pinned host buffers, one side stream, events.
#include <cuda_runtime.h>

#include <utility>

#include "backend/activation_stash.h"
#include "backend/cuda/check.h"
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/device_guard.h"

namespace ftune::cuda {

namespace {

class CudaActivationStash final : public ActivationStash {
 public:
  CudaActivationStash(int device, cudaStream_t compute) : device_(device), compute_(compute) {
    DeviceGuard g(device_);
    FTUNE_CUDA_CHECK(cudaStreamCreateWithFlags(&copy_, cudaStreamNonBlocking));
    FTUNE_CUDA_CHECK(cudaEventCreateWithFlags(&ready_, cudaEventDisableTiming));
  }

  ~CudaActivationStash() override {
    DeviceGuard g(device_);
    cudaStreamSynchronize(copy_);  // best effort: destructors do not throw
    for (Slot& s : slots_) {
      if (s.pinned) cudaFreeHost(s.pinned);
      if (s.out_done) cudaEventDestroy(s.out_done);
      if (s.in_done) cudaEventDestroy(s.in_done);
    }
    cudaEventDestroy(ready_);
    cudaStreamDestroy(copy_);
  }

  void put(int slot, const Tensor& t) override {
    FTUNE_CHECK(slot >= 0, "activation stash: negative slot {}", slot);
    FTUNE_CHECK(t.device() == Device::cuda(device_) && t.is_contiguous(),
                "activation stash: expects a contiguous tensor on cuda:{}", device_);
    DeviceGuard g(device_);
    if (static_cast<size_t>(slot) >= slots_.size()) slots_.resize(static_cast<size_t>(slot) + 1);
    Slot& s = slots_[static_cast<size_t>(slot)];
    FTUNE_CHECK(!s.full, "activation stash: slot {} is already in use", slot);
    release_copied();  // the earlier puts' device memory goes back (their copies ran meanwhile)
    const size_t bytes = t.nbytes();
    if (bytes > s.capacity) {
      FTUNE_CUDA_CHECK(cudaStreamSynchronize(copy_));  // nothing may still use the old buffer
      if (s.pinned) FTUNE_CUDA_CHECK(cudaFreeHost(s.pinned));
      s.pinned = nullptr;
      s.capacity = 0;
      const cudaError_t e = cudaHostAlloc(&s.pinned, bytes, cudaHostAllocDefault);
      if (e != cudaSuccess) {
        cudaGetLastError();
        fail("checkpointing offload: cannot pin {:.2f} GiB of host memory for saved activations "
             "({} GiB pinned already): {}; use train.gradient_checkpointing=layer",
             static_cast<double>(bytes) / (1 << 30),
             static_cast<double>(host_bytes()) / (1 << 30), cudaGetErrorString(e));
      }
      s.capacity = bytes;
    }
    if (!s.out_done) FTUNE_CUDA_CHECK(cudaEventCreateWithFlags(&s.out_done, cudaEventDisableTiming));
    if (!s.in_done) FTUNE_CUDA_CHECK(cudaEventCreateWithFlags(&s.in_done, cudaEventDisableTiming));
    FTUNE_CUDA_CHECK(cudaEventRecord(ready_, compute_));  // t is written once compute gets here
    FTUNE_CUDA_CHECK(cudaStreamWaitEvent(copy_, ready_, 0));
    FTUNE_CUDA_CHECK(cudaMemcpyAsync(s.pinned, t.raw(), bytes, cudaMemcpyDeviceToHost, copy_));
    FTUNE_CUDA_CHECK(cudaEventRecord(s.out_done, copy_));
    s.shape = t.shape();
    s.dtype = t.dtype();
    s.bytes = bytes;
    s.in_flight = t;
    s.full = true;
  }

  void prefetch(int slot) override {
    if (slot < 0 || static_cast<size_t>(slot) >= slots_.size()) return;
    Slot& s = slots_[static_cast<size_t>(slot)];
    if (!s.full || s.back.defined()) return;
    DeviceGuard g(device_);
    if (s.in_flight.defined()) {  // still on the device (the newest put): no round trip
      s.back = std::move(s.in_flight);
      s.in_flight = Tensor();
      s.copied_back = false;
      return;
    }
    // The new tensor's memory may have been used by compute queued so far: copy after it.
    s.back = Tensor::empty(s.shape, s.dtype, Device::cuda(device_));
    FTUNE_CUDA_CHECK(cudaEventRecord(ready_, compute_));
    FTUNE_CUDA_CHECK(cudaStreamWaitEvent(copy_, ready_, 0));
    FTUNE_CUDA_CHECK(cudaMemcpyAsync(s.back.raw(), s.pinned, s.bytes, cudaMemcpyHostToDevice, copy_));
    FTUNE_CUDA_CHECK(cudaEventRecord(s.in_done, copy_));
    s.copied_back = true;
  }

  Tensor take(int slot) override {
    FTUNE_CHECK(slot >= 0 && static_cast<size_t>(slot) < slots_.size() &&
                    slots_[static_cast<size_t>(slot)].full,
                "activation stash: slot {} is empty", slot);
    prefetch(slot);
    Slot& s = slots_[static_cast<size_t>(slot)];
    DeviceGuard g(device_);
    if (s.copied_back) FTUNE_CUDA_CHECK(cudaStreamWaitEvent(compute_, s.in_done, 0));
    Tensor out = std::move(s.back);
    s.back = Tensor();
    s.full = false;
    return out;
  }

  void clear() override {
    bool busy = false;
    for (const Slot& s : slots_) busy = busy || s.full || s.in_flight.defined();
    if (!busy) return;
    DeviceGuard g(device_);
    FTUNE_CUDA_CHECK(cudaStreamSynchronize(copy_));
    for (Slot& s : slots_) {
      s.full = false;
      s.in_flight = s.back = Tensor();
    }
  }

  int64_t host_bytes() const override {
    int64_t n = 0;
    for (const Slot& s : slots_) n += static_cast<int64_t>(s.capacity);
    return n;
  }

 private:
  struct Slot {
    void* pinned = nullptr;
    size_t capacity = 0, bytes = 0;
    Shape shape;
    DType dtype = DType::BF16;
    bool full = false;         // holds a tensor (put, not yet taken)
    Tensor in_flight;          // the device tensor being copied out, alive until copied
    Tensor back;               // the device tensor prefetch() fills
    bool copied_back = false;  // back is being filled by a copy (in_done marks its end)
    cudaEvent_t out_done = nullptr, in_done = nullptr;
  };

  // Compute queued from now on waits for the finished-or-running copies out, then their device
  // tensors are dropped: the allocator may hand the memory to that compute safely.
  void release_copied() {
    for (Slot& s : slots_) {
      if (!s.in_flight.defined()) continue;
      FTUNE_CUDA_CHECK(cudaStreamWaitEvent(compute_, s.out_done, 0));
      s.in_flight = Tensor();
    }
  }

  int device_;
  cudaStream_t compute_;
  cudaStream_t copy_ = nullptr;
  cudaEvent_t ready_ = nullptr;
  std::vector<Slot> slots_;
};

}  // namespace

std::unique_ptr<ActivationStash> make_activation_stash(int device, cudaStream_t compute) {
  return std::make_unique<CudaActivationStash>(device, compute);
}

}  // namespace ftune::cuda
