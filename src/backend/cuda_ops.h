// The CUDA backend's entry points, as plain C++ (no CUDA headers), so the model, trainer and
// CLI can ask for it without knowing how it is built. Implemented by src/backend/cuda
// (FTUNE_CUDA=ON) or by src/backend/no_gpu/cuda_ops_none.cpp, which throws "built without CUDA".
#pragma once
#include <memory>

#include "backend/ops.h"

namespace ftune {

// Ops on CUDA device `device` (fp32, one stream, cuBLAS). Registers the CUDA allocator too.
// Throws ftune::Error when the device cannot be used (no driver, no such device).
std::unique_ptr<Ops> make_cuda_ops(int device);

// Registers the cudaMalloc-backed DeviceAllocator for DeviceType::CUDA so that
// Tensor::empty(..., Device::cuda(i)) and Tensor::to() work. Idempotent.
void cuda_register_allocator();

}  // namespace ftune
