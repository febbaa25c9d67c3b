// RAII: makes a CUDA device current for a scope and restores the previous one, so library
// calls never leave the caller's current device changed.
#pragma once
#include <cuda_runtime.h>

#include "backend/cuda/check.h"

namespace ftune::cuda {

class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    FTUNE_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) FTUNE_CUDA_CHECK(cudaSetDevice(device));
    changed_ = previous_ != device;
  }
  ~DeviceGuard() {
    if (changed_) cudaSetDevice(previous_);  // best effort: destructors do not throw
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
  bool changed_ = false;
};

}  // namespace ftune::cuda
