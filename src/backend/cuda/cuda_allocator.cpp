// The CUDA DeviceAllocator behind Tensor::empty(..., Device::cuda(i)), Tensor::to() and
// zero_(): plain cudaMalloc/cudaFree, cudaMemset and cudaMemcpy (no caching yet).
//
// Ordering: memset and copies go to the legacy default stream, which synchronizes with every
// blocking stream; CudaOps launches on a blocking stream (cudaStreamCreate), so a copy to the
// host sees every kernel queued before it, and kernels queued after a memset or an upload see
// its result. cudaFree waits for the device to finish with the memory.
#include <spdlog/spdlog.h>

#include "backend/cuda/check.h"
#include "backend/cuda/device_guard.h"
#include "backend/cuda_ops.h"

namespace ftune {

namespace {

class CudaAllocator final : public DeviceAllocator {
 public:
  void* allocate(size_t bytes, int device_index) override {
    cuda::DeviceGuard guard(device_index);
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
      cudaGetLastError();  // clear the (non-sticky) allocation error
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      fail("cuda:{}: cudaMalloc of {} bytes failed: {} ({} of {} bytes free)", device_index, bytes,
           cudaGetErrorString(e), free_b, total_b);
    }
    return p;
  }

  void deallocate(void* p, int device_index) override {
    // Called from tensor destructors: must not throw. At process exit the runtime may already
    // be unloaded (nothing to free then); any other failure is logged.
    const cudaError_t e = cudaFree(p);
    if (e != cudaSuccess && e != cudaErrorCudartUnloading) {
      cudaGetLastError();
      spdlog::warn("cuda:{}: cudaFree failed: {}", device_index, cudaGetErrorString(e));
    }
  }

  void memset_zero(void* p, size_t bytes, int device_index) override {
    cuda::DeviceGuard guard(device_index);
    FTUNE_CUDA_CHECK(cudaMemset(p, 0, bytes));
  }

  void copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) override {
    // Unified addressing: the runtime infers the direction (and the devices) from the pointers.
    const int dev = dst_dev.is_cpu() ? src_dev.index : dst_dev.index;
    cuda::DeviceGuard guard(dev);
    FTUNE_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
  }
};

}  // namespace

void cuda_register_allocator() {
  // Never destroyed: tensors held by statics may be freed after main returns.
  static CudaAllocator* const allocator = new CudaAllocator();
  register_device_allocator(DeviceType::CUDA, allocator);
}

}  // namespace ftune
