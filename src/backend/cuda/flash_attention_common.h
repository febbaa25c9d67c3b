// Host-side pieces shared by the flash-attention forward and backward launchers
// (flash_attention_fwd.cu, flash_attention_bwd.cu): argument checks and the head-dim dispatch.
#pragma once
#include <cstdint>

namespace ftune::cuda::flash {

// Throws ftune::Error naming `op` unless the shapes are ones the kernels handle.
void check_arguments(const char* op, int64_t n, int nh, int nkv, int hd);
// Throws ftune::Error naming `op` if the last launch failed.
void check_launch_error(const char* op);

}  // namespace ftune::cuda::flash
