// Host-side parts of the flash-attention kernels (flash_attention.h): the supported head dims,
// the backward workspace size and the argument checks both launchers share.
#include "backend/cuda/flash_attention.h"

#include <cuda_runtime.h>

#include <cstdint>
#include <limits>

#include "backend/cuda/flash_attention_common.h"
#include "core/error.h"

namespace ftune::cuda {

bool flash_attention_supported(int head_dim) {
  return head_dim == 16 || head_dim == 32 || head_dim == 64 || head_dim == 96 || head_dim == 128;
}

size_t flash_attention_workspace_bytes(int64_t n_tokens, int nh, int nkv, int hd) {
  // The dq accumulator, D, then the key-block order (at most one block per 16 tokens), each
  // starting on a 256-byte boundary.
  auto round_up = [](size_t b) { return (b + 255) / 256 * 256; };
  const size_t rows = static_cast<size_t>(n_tokens) * static_cast<size_t>(nh);
  const size_t key_blocks = (static_cast<size_t>(n_tokens) + 15) / 16;
  return round_up(rows * static_cast<size_t>(hd) * sizeof(float)) + round_up(rows * sizeof(float)) +
         round_up(key_blocks * sizeof(int));
}

namespace flash {

void check_arguments(const char* op, int64_t n, int nh, int nkv, int hd) {
  FTUNE_CHECK(n >= 0 && n <= std::numeric_limits<int32_t>::max(),
              "{}: n = {} tokens is outside [0, 2^31)", op, n);
  FTUNE_CHECK(nh > 0 && nkv > 0, "{}: nh = {} and nkv = {} must be positive", op, nh, nkv);
  FTUNE_CHECK(nh % nkv == 0, "{}: {} query heads are not a multiple of {} kv heads", op, nh, nkv);
  FTUNE_CHECK(flash_attention_supported(hd),
              "{}: head_dim {} is not supported (16, 32, 64, 96 or 128)", op, hd);
}

void check_aligned(const char* op, const char* name, const void* p) {
  FTUNE_CHECK(reinterpret_cast<uintptr_t>(p) % 16 == 0, "{}: {} is not 16-byte aligned", op, name);
}

void check_launch_error(const char* op) {
  const cudaError_t e = cudaGetLastError();
  FTUNE_CHECK(e == cudaSuccess, "{}: kernel launch failed: {}", op, cudaGetErrorString(e));
}

}  // namespace flash
}  // namespace ftune::cuda
