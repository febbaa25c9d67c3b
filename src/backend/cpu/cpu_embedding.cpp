// Token embedding lookup and its scatter-add backward (HF nn.Embedding). The backward
// splits columns across threads so repeated ids accumulate in token order without atomics.
#include <algorithm>

#include "backend/cpu/cpu_kernels.h"

namespace ftune::cpu {

namespace {
void check_ids(const char* op, const Tensor& ids, int64_t vocab) {
  const int32_t* id = ids.i32();
  for (int64_t n = 0; n < ids.numel(); ++n)
    FTUNE_CHECK(id[n] >= 0 && id[n] < vocab, "{}: ids[{}] = {} is outside the table [0, {})",
                op, n, id[n], vocab);
}
}  // namespace

void embedding_forward(const Tensor& table, const Tensor& ids, Tensor& out) {
  constexpr const char* op = "embedding_forward";
  require_rank(op, "table", table, DType::F32, 2);
  require_rank(op, "ids", ids, DType::I32, 1);
  const int64_t n = ids.dim(0), h = table.dim(1);
  require_shape(op, "out", out, DType::F32, {n, h});
  check_ids(op, ids, table.dim(0));
  const int32_t* id = ids.i32();
  const float* t = table.f32();
  float* o = out.f32();
#pragma omp parallel for schedule(static) if (n * h > kParallelGrain)
  for (int64_t r = 0; r < n; ++r) std::copy_n(t + id[r] * h, h, o + r * h);
}

void embedding_backward(const Tensor& dy, const Tensor& ids, Tensor& dtable) {
  constexpr const char* op = "embedding_backward";
  require_rank(op, "dtable", dtable, DType::F32, 2);
  require_rank(op, "ids", ids, DType::I32, 1);
  const int64_t n = ids.dim(0), h = dtable.dim(1);
  require_shape(op, "dy", dy, DType::F32, {n, h});
  check_ids(op, ids, dtable.dim(0));
  const int32_t* id = ids.i32();
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
