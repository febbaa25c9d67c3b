// Shared by the tests in tests/cuda: whether a GPU is usable here (the tests skip when not).
#pragma once
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <string>

#include "core/tensor.h"

namespace ftune::test {

// Why the GPU tests cannot run on this machine, or "" when device 0 is usable.
inline const std::string& no_gpu_reason() {
  static const std::string reason = [] {
    int n = 0;
    const cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
      cudaGetLastError();
      return std::string("no usable CUDA device (cudaGetDeviceCount: ") + cudaGetErrorString(e) +
             ")";
    }
    if (n == 0) return std::string("no CUDA device visible (cudaGetDeviceCount returned 0)");
    return std::string();
  }();
  return reason;
}

// The caching allocator keeps freed blocks for reuse. Every CUDA test binary hands them back
// when its tests are done, so a leak check (compute-sanitizer --leak-check full) reports only
// real leaks.
class ReleaseCachedGpuMemory : public ::testing::Environment {
 public:
  void TearDown() override {
    if (no_gpu_reason().empty()) release_cached_memory(DeviceType::CUDA);
  }
};
inline ::testing::Environment* const kReleaseCachedGpuMemory =
    ::testing::AddGlobalTestEnvironment(new ReleaseCachedGpuMemory);

}  // namespace ftune::test
