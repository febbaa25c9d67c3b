// CPU-only build (FTUNE_CUDA=OFF): the CUDA entry points exist but say why they cannot work.
#include "backend/cuda_ops.h"

namespace ftune {

std::unique_ptr<Ops> make_cuda_ops(int device) {
  fail("make_cuda_ops({}): built without CUDA (FTUNE_CUDA=OFF)", device);
}

void cuda_register_allocator() {
  fail("cuda_register_allocator: built without CUDA (FTUNE_CUDA=OFF)");
}

}  // namespace ftune
