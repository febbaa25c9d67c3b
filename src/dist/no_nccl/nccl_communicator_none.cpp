// CPU-only builds: NCCL is not there; asking for it says so (the build picks this file
// instead of dist/nccl/, as backend/no_gpu does for the CUDA backend).
#include "dist/communicator.h"

namespace ftune {

std::unique_ptr<Communicator> make_nccl_communicator(KeyValueStore&, const CommOptions&) {
  fail("distributed.backend=nccl: this ftune was built without CUDA (FTUNE_CUDA=OFF); use "
       "--nproc N with the gloo backend on the CPU");
}

bool nccl_available() { return false; }

}  // namespace ftune
