// The CUDA backend's entry points, as plain C++ (no CUDA headers), so the model, trainer and
// CLI can ask for it without knowing how it is built. Implemented by src/backend/cuda
// (FTUNE_CUDA=ON) or by src/backend/no_gpu/cuda_ops_none.cpp, which throws "built without CUDA".
#pragma once
#include <memory>

#include "backend/ops.h"

namespace ftune {

// Ops on CUDA device `device` (F32/BF16/F16 activations, one stream, cuBLASLt). Registers the
// CUDA allocator too.
// Throws ftune::Error when the device cannot be used (no driver, no such device).
std::unique_ptr<Ops> make_cuda_ops(int device);

// Registers the caching, stream-ordered DeviceAllocator for DeviceType::CUDA
// (src/backend/cuda/cuda_allocator.cpp) so that Tensor::empty(..., Device::cuda(i)) and
// Tensor::to() work. Idempotent. Allocation failures throw ftune::OutOfMemoryError.
void cuda_register_allocator();

}  // namespace ftune
