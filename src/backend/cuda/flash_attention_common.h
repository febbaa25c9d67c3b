// Host-side pieces shared by the flash-attention forward and backward launchers
// (flash_attention_fwd.cu, flash_attention_bwd.cu): argument checks and the head-dim dispatch.
#pragma once
#include <cstdint>
#include <type_traits>

namespace ftune::cuda::flash {

// Throws ftune::Error naming `op` unless the shapes are ones the kernels handle.
void check_arguments(const char* op, int64_t n, int nh, int nkv, int hd);
// Throws ftune::Error naming `op` unless p is 16-byte aligned (the kernels copy 16-byte chunks).
void check_aligned(const char* op, const char* name, const void* p);
// Throws ftune::Error naming `op` if the last launch failed.
void check_launch_error(const char* op);

// Calls f(std::integral_constant<int, HD>{}) for a head dim with compiled kernels (the ones
// flash_attention_supported accepts; check_arguments has rejected the others).
template <typename F>
void with_head_dim(int hd, F&& f) {
  switch (hd) {
    case 16: return f(std::integral_constant<int, 16>{});
    case 32: return f(std::integral_constant<int, 32>{});
    case 64: return f(std::integral_constant<int, 64>{});
    case 96: return f(std::integral_constant<int, 96>{});
    case 128: return f(std::integral_constant<int, 128>{});
    default: return;
  }
}

}  // namespace ftune::cuda::flash
