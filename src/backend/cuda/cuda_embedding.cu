// Token embedding lookup and its scatter-add backward (HF nn.Embedding), matching
// src/backend/cpu/cpu_embedding.cpp. Ids are checked on a host copy first (out-of-range ids
// throw, as the interface requires). The backward gives each thread one column and walks the
// tokens in order, so repeated ids accumulate in a fixed order without atomics. The forward
// copies rows of any activation dtype; the backward is F32.
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/device/float_types.cuh"
#include "backend/cuda/dispatch.cuh"

namespace ftune::cuda {

namespace {

constexpr int kBlock = 256;

// Ids outside the table (possible only when the host check is off: ctx.check_values) give NaN
// rows in the forward and are skipped in the backward, instead of reading out of bounds.
template <typename T>
__global__ void embedding_forward_kernel(int64_t n, int64_t h, int64_t vocab,
                                         const T* __restrict__ table,
                                         const int32_t* __restrict__ ids, T* out) {
  const int64_t total = n * h;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / h, j = i % h;
    const int64_t id = ids[r];
    out[i] = id >= 0 && id < vocab ? table[id * h + j] : device::from_f32<T>(NAN);
  }
}

__global__ void embedding_backward_kernel(int64_t n, int64_t h, int64_t vocab,
                                          const float* __restrict__ dy,
                                          const int32_t* __restrict__ ids, float* dtable) {
  const int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (j >= h) return;
  for (int64_t r = 0; r < n; ++r) {
    const int64_t id = ids[r];
    if (id >= 0 && id < vocab) dtable[id * h + j] += dy[r * h + j];
  }
}

}  // namespace

void embedding_forward(const CudaContext& ctx, const Tensor& table, const Tensor& ids,
                       Tensor& out) {
  constexpr const char* op = "embedding_forward";
  const EmbeddingDims d = check_embedding_forward(table, ids, out, ctx.dev());
  const int64_t n = d.n, h = d.h;
  require_indices(ctx, op, "ids", ids, d.vocab, "the table");
  if (n * h == 0) return;
  dispatch_float(d.act, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    embedding_forward_kernel<T><<<grid_for(n * h, kBlock), kBlock, 0, ctx.stream>>>(
        n, h, d.vocab, table.data<T>(), ids.i32(), out.data<T>());
  });
  check_launch(ctx, op);
}

void embedding_backward(const CudaContext& ctx, const Tensor& dy, const Tensor& ids,
                        Tensor& dtable) {
  constexpr const char* op = "embedding_backward";
  const EmbeddingDims d = check_embedding_backward(dy, ids, dtable, ctx.dev());
  const int64_t n = d.n, h = d.h;
  require_indices(ctx, op, "ids", ids, d.vocab, "the table");
  if (n * h == 0) return;
  const int64_t blocks = (h + kBlock - 1) / kBlock;
  embedding_backward_kernel<<<static_cast<unsigned>(blocks), kBlock, 0, ctx.stream>>>(
      n, h, d.vocab, dy.f32(), ids.i32(), dtable.f32());
  check_launch(ctx, op);
}

}  // namespace ftune::cuda
