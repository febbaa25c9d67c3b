// lm_head + cross-entropy fused in chunks of rows, so only [chunk, V] logits ever exist, the
// same algorithm as the CPU reference (src/backend/cpu/cpu_cross_entropy.cpp). Per chunk:
//   logits = x_c w^T (cuBLAS);  lse = max + log sum exp(logits - max)   (one block per row);
//   loss_row = lse - logits[target]   (targets == -100 are ignored: HF ignore_index);
//   dlogits = grad_scale * (softmax - onehot(target)) on counted rows, 0 on ignored rows;
//   dx_c = dlogits w (cuBLAS).
// Row losses are kept in double and added on the host in row order, so the total does not
// depend on the chunk size. Targets are checked on a host copy, which also gives the count.
#include <algorithm>
#include <climits>
#include <cmath>

#include "backend/cuda/check.h"
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/device/reduce.cuh"

namespace ftune::cuda {

namespace {

constexpr int32_t kIgnore = -100;
constexpr int kRowBlock = 256;

// Turns one row of logits into its loss and (when grad) its gradient dlogits, in place.
__global__ void cross_entropy_rows_kernel(int64_t vocab, float* logits,
                                          const int32_t* __restrict__ targets, float grad_scale,
                                          bool grad, double* row_loss) {
  __shared__ float fscratch[32];
  __shared__ double dscratch[32];
  const int64_t r = blockIdx.x;
  float* row = logits + r * vocab;
  const int32_t t = targets[r];
  if (t == kIgnore) {  // block-uniform branch
    if (grad)
      for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) row[c] = 0.0f;
    if (threadIdx.x == 0) row_loss[r] = 0.0;
    return;
  }
  const float target_logit = row[t];  // read before any thread overwrites the row
  float mx = -INFINITY;
  for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) mx = fmaxf(mx, row[c]);
  mx = device::block_max(mx, fscratch, -INFINITY);
  double sum = 0.0;
  for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) sum += expf(row[c] - mx);
  sum = device::block_sum(sum, dscratch);  // ends with a barrier: every read above is done
  const double lse = static_cast<double>(mx) + log(sum);
  if (threadIdx.x == 0) row_loss[r] = lse - static_cast<double>(target_logit);
  if (!grad) return;
  const float lse_f = static_cast<float>(lse);
  for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x)
    row[c] = grad_scale * expf(row[c] - lse_f);
  __syncthreads();
  if (threadIdx.x == 0) row[t] -= grad_scale;
}

}  // namespace

CrossEntropyResult lm_head_cross_entropy(const CudaContext& ctx, const Tensor& x, const Tensor& w,
                                         const Tensor& targets, float grad_scale, Tensor* dx,
                                         Tensor* logits, int64_t chunk_tokens) {
  constexpr const char* op = "lm_head_cross_entropy";
  const CrossEntropyDims d =
      check_lm_head_cross_entropy(x, w, targets, dx, logits, chunk_tokens, ctx.dev());
  const int64_t n = d.n, h = d.h, vocab = d.vocab;
  FTUNE_CHECK(vocab <= INT_MAX && h <= INT_MAX, "{}: w {} exceeds the cuBLAS int range", op,
              shape_str(w.shape()));
  const std::vector<int32_t> tg =
      require_indices(ctx, op, "targets", targets, vocab, "the vocabulary", &kIgnore);
  CrossEntropyResult result;
  if (n == 0) return result;

  const int64_t chunk = std::min(chunk_tokens, n);
  FTUNE_CHECK(chunk <= INT32_MAX, "{}: chunk of {} rows exceeds the grid limit", op, chunk);
  const Device dev = Device::cuda(ctx.device);
  Tensor buf = Tensor::empty({chunk, vocab}, DType::F32, dev);
  Tensor row_loss = Tensor::empty({n}, DType::F64, dev);
  FTUNE_CUDA_CHECK(cudaMemsetAsync(row_loss.raw(), 0, row_loss.nbytes(), ctx.stream));
  for (int64_t r0 = 0; r0 < n; r0 += chunk) {
    const int64_t rows = std::min(chunk, n - r0);
    int64_t counted = 0;
    for (int64_t r = r0; r < r0 + rows; ++r) counted += tg[static_cast<size_t>(r)] != kIgnore;
    result.count += counted;
    if (counted == 0 && logits == nullptr) {  // nothing to learn from these rows
      if (dx != nullptr)
        FTUNE_CUDA_CHECK(cudaMemsetAsync(
            dx->f32() + r0 * h, 0, static_cast<size_t>(rows * h) * sizeof(float), ctx.stream));
      continue;
    }
    Tensor lg = buf.slice_rows(0, rows);
    gemm(ctx, x.slice_rows(r0, r0 + rows), false, w, true, lg, 1.0f, 0.0f);
    if (logits != nullptr)
      FTUNE_CUDA_CHECK(cudaMemcpyAsync(logits->f32() + r0 * vocab, lg.f32(),
                                       static_cast<size_t>(rows * vocab) * sizeof(float),
                                       cudaMemcpyDeviceToDevice, ctx.stream));
    cross_entropy_rows_kernel<<<static_cast<unsigned>(rows), kRowBlock, 0, ctx.stream>>>(
        vocab, lg.f32(), targets.i32() + r0, grad_scale, dx != nullptr,
        row_loss.data<double>() + r0);
    check_launch(ctx, op);
    if (dx != nullptr) {
      Tensor dxc = dx->slice_rows(r0, r0 + rows);
      gemm(ctx, lg, false, w, false, dxc, 1.0f, 0.0f);
    }
  }
  std::vector<double> losses(static_cast<size_t>(n));
  FTUNE_CUDA_CHECK(cudaMemcpyAsync(losses.data(), row_loss.raw(), row_loss.nbytes(),
                                   cudaMemcpyDeviceToHost, ctx.stream));
  FTUNE_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  for (double l : losses) result.loss_sum += l;
  return result;
}

}  // namespace ftune::cuda
