// lm_head + cross-entropy fused in chunks of rows, so only [chunk, V] logits ever exist, the
// same algorithm as the CPU reference (src/backend/cpu/cpu_cross_entropy.cpp). Per chunk:
//   logits = x_c w^T (cuBLASLt, act inputs, F32 logits);
//   lse = max + log sum exp(logits - max)   (one block per row, one pass: per-thread running
//   max and rescaled sum, then combined across the block);
//   loss_row = lse - logits[target]   (targets == -100 are ignored: HF ignore_index);
//   dlogits = grad_scale * (softmax - onehot(target)) on counted rows, 0 on ignored rows, stored
//   in act (in place over the F32 logits when act is F32);
//   dx_c = dlogits w (cuBLASLt);
//   loss_sum += sum of the chunk's row losses (one block adds them in row order, in double).
// Nothing is copied to the host: targets are not validated here (the batch builder does it). A
// target outside [0, V) other than -100 adds NaN to loss_sum and gives its row a zero gradient,
// so a bad batch shows in the loss instead of reading out of bounds.
// The chunk buffers live in CudaContext::ws and are reused across calls (grown when a larger
// chunk is asked for). Memory per chunk row: V * (4 + act bytes) + 8 bytes; at the Llama-3
// vocabulary (128256) and bf16, 1024 rows take 770 MB, 512 rows 385 MB.
#include <algorithm>
#include <climits>
#include <cmath>

#include "backend/cuda/check.h"
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/device/float_types.cuh"
#include "backend/cuda/device/reduce.cuh"
#include "backend/cuda/dispatch.cuh"

namespace ftune::cuda {

namespace {

using device::from_f32;

constexpr int32_t kIgnore = -100;
constexpr int kRowBlock = 512;

// One row of F32 logits -> its loss, and (when grad) dlogits in T. dlogits may be the logits
// row itself (T = float): every read of the row ends before the first write (barriers below).
template <typename T>
__global__ void cross_entropy_rows_kernel(int64_t vocab, const float* logits,
                                          const int32_t* __restrict__ targets, float grad_scale,
                                          bool grad, T* dlogits, double* row_loss) {
  __shared__ float fscratch[32];
  __shared__ double dscratch[32];
  const int64_t r = blockIdx.x;
  const float* row = logits + r * vocab;
  T* drow = dlogits + r * vocab;
  const int32_t t = targets[r];
  const bool ignored = t == kIgnore;
  const bool valid = t >= 0 && t < vocab;
  if (ignored || !valid) {  // block-uniform branch
    if (grad)
      for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) drow[c] = from_f32<T>(0.0f);
    if (threadIdx.x == 0) row_loss[r] = ignored ? 0.0 : static_cast<double>(NAN);
    return;
  }
  const float target_logit = row[t];  // read before any thread overwrites the row
  // Per thread: running max m and sum s of exp(l - m) over its columns.
  float m = -INFINITY;
  double s = 0.0;
  for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) {
    const float l = row[c];
    if (l > m) {
      s = s * exp(static_cast<double>(m) - l) + 1.0;  // m = -inf at first: exp(-inf) = 0
      m = l;
    } else {
      s += expf(l - m);
    }
  }
  const float mx = device::block_max(m, fscratch, -INFINITY);
  // Threads without columns (vocab < blockDim) have m = -inf, s = 0: contribute 0.
  double scaled = m == -INFINITY ? 0.0 : s * exp(static_cast<double>(m) - mx);
  const double sum = device::block_sum(scaled, dscratch);  // ends with a barrier
  const double lse = static_cast<double>(mx) + log(sum);
  if (threadIdx.x == 0) row_loss[r] = lse - static_cast<double>(target_logit);
  if (!grad) return;
  const float lse_f = static_cast<float>(lse);
  for (int64_t c = threadIdx.x; c < vocab; c += blockDim.x) {
    float g = grad_scale * expf(row[c] - lse_f);
    if (c == t) g -= grad_scale;
    drow[c] = from_f32<T>(g);
  }
}

// *loss_sum += sum of rows values, in index order within a fixed tree (one block).
__global__ void add_row_losses_kernel(int64_t rows, const double* __restrict__ row_loss,
                                      double* loss_sum) {
  __shared__ double scratch[32];
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < rows; i += blockDim.x) s += row_loss[i];
  s = device::block_sum(s, scratch);
  if (threadIdx.x == 0) *loss_sum += s;
}

}  // namespace

void lm_head_cross_entropy(const CudaContext& ctx, const Tensor& x, const Tensor& w,
                           const Tensor& targets, float grad_scale, Tensor& loss_sum, Tensor* dx,
                           Tensor* logits, int64_t chunk_tokens) {
  constexpr const char* op = "lm_head_cross_entropy";
  const CrossEntropyDims d =
      check_lm_head_cross_entropy(x, w, targets, loss_sum, dx, logits, chunk_tokens, ctx.dev());
  const int64_t n = d.n, h = d.h, vocab = d.vocab;
  FTUNE_CHECK(vocab <= INT_MAX && h <= INT_MAX, "{}: w {} exceeds the cuBLAS int range", op,
              shape_str(w.shape()));
  FTUNE_CHECK(ctx.ws != nullptr, "{}: no workspaces", op);
  if (n == 0) return;

  const int64_t chunk = std::min(chunk_tokens, n);
  FTUNE_CHECK(chunk <= INT32_MAX, "{}: chunk of {} rows exceeds the grid limit", op, chunk);
  const bool f32 = d.act == DType::F32;
  Tensor lg_buf = workspace_view(ctx.ws->ce_logits, {chunk, vocab}, DType::F32, ctx.device);
  Tensor dl_buf;
  if (dx != nullptr && !f32)
    dl_buf = workspace_view(ctx.ws->ce_dlogits, {chunk, vocab}, d.act, ctx.device);
  Tensor row_loss = workspace_view(ctx.ws->ce_row_loss, {chunk}, DType::F64, ctx.device);
  for (int64_t r0 = 0; r0 < n; r0 += chunk) {
    const int64_t rows = std::min(chunk, n - r0);
    Tensor lg = lg_buf.slice_rows(0, rows);
    gemm(ctx, x.slice_rows(r0, r0 + rows), false, w, true, lg, 1.0f, 0.0f);
    if (logits != nullptr)
      FTUNE_CUDA_CHECK(cudaMemcpyAsync(logits->f32() + r0 * vocab, lg.f32(),
                                       static_cast<size_t>(rows * vocab) * sizeof(float),
                                       cudaMemcpyDeviceToDevice, ctx.stream));
    Tensor dl = dx == nullptr ? lg : (f32 ? lg : dl_buf.slice_rows(0, rows));
    dispatch_float(d.act, op, [&](auto tag) {
      using T = typename decltype(tag)::type;
      // Without dx nothing is written; the pointer is unused.
      T* dlp = dx != nullptr ? dl.data<T>() : nullptr;
      cross_entropy_rows_kernel<T><<<static_cast<unsigned>(rows), kRowBlock, 0, ctx.stream>>>(
          vocab, lg.f32(), targets.i32() + r0, grad_scale, dx != nullptr, dlp, row_loss.data<double>());
    });
    check_launch(ctx, op);
    add_row_losses_kernel<<<1, 256, 0, ctx.stream>>>(rows, row_loss.data<double>(),
                                                     loss_sum.data<double>());
    check_launch(ctx, op);
    if (dx != nullptr) {
      Tensor dxc = dx->slice_rows(r0, r0 + rows);
      gemm(ctx, dl, false, w, false, dxc, 1.0f, 0.0f);
    }
  }
}

}  // namespace ftune::cuda
