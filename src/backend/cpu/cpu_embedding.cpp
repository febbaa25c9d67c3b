// Token embedding lookup and its scatter-add backward (HF nn.Embedding). The backward
// splits columns across threads so repeated ids accumulate in token order without atomics.
#include <algorithm>

#include "backend/cpu/cpu_kernels.h"

namespace ftune::cpu {

void embedding_forward(const Tensor& table, const Tensor& ids, Tensor& out) {
  const EmbeddingDims d = check_embedding_forward(table, ids, out, Device::cpu());
  const int64_t n = d.n, h = d.h;
  const int32_t* id = ids.i32();
  check_indices("embedding_forward", "ids", id, n, d.vocab, "the table");
  const float* t = table.f32();
  float* o = out.f32();
#pragma omp parallel for schedule(static) if (n * h > kParallelGrain)
  for (int64_t r = 0; r < n; ++r) std::copy_n(t + id[r] * h, h, o + r * h);
}

void embedding_backward(const Tensor& dy, const Tensor& ids, Tensor& dtable) {
  const EmbeddingDims d = check_embedding_backward(dy, ids, dtable, Device::cpu());
  const int64_t n = d.n, h = d.h;
  const int32_t* id = ids.i32();
  check_indices("embedding_backward", "ids", id, n, d.vocab, "the table");
  const float* g = dy.f32();
  float* dt = dtable.f32();
  constexpr int64_t kBlock = 64;
  const int64_t blocks = (h + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n * h > kParallelGrain)
  for (int64_t b = 0; b < blocks; ++b) {
    const int64_t j0 = b * kBlock, j1 = std::min(h, j0 + kBlock);
    for (int64_t r = 0; r < n; ++r) {
      float* dst = dt + id[r] * h;
      const float* src = g + r * h;
      for (int64_t j = j0; j < j1; ++j) dst[j] += src[j];
    }
  }
}

}  // namespace ftune::cpu
