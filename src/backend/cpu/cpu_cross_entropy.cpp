// lm_head + cross-entropy fused in chunks of rows, so only [chunk, V] logits ever exist
// (the memory trick of Unsloth / Liger fused linear cross-entropy). Per chunk:
//   logits = x_c w^T (sgemm);  lse = max + log sum exp(logits - max);
//   loss_row = lse - logits[target]   (targets == -100 are ignored: HF ignore_index);
//   dlogits = grad_scale * (softmax - onehot(target)) on counted rows, 0 on ignored rows;
//   dx_c = dlogits w (sgemm).
// Row losses are kept in double and summed in row order, so the total does not depend on the
// chunk size or the thread count; the total is added to loss_sum (F64 [1]).
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_kernels.h"

namespace ftune::cpu {

void lm_head_cross_entropy(const Tensor& x, const Tensor& w, const Tensor& targets,
                           float grad_scale, Tensor& loss_sum, Tensor* dx, Tensor* logits,
                           int64_t chunk_tokens) {
  constexpr const char* op = "lm_head_cross_entropy";
  constexpr int32_t kIgnore = -100;
  const CrossEntropyDims d =
      check_lm_head_cross_entropy(x, w, targets, loss_sum, dx, logits, chunk_tokens,
                                  Device::cpu());
  const int64_t n = d.n, h = d.h, vocab = d.vocab;
  FTUNE_CHECK(vocab <= INT32_MAX && h <= INT32_MAX, "{}: w {} exceeds the BLAS int range", op,
              shape_str(w.shape()));
  const int32_t* tg = targets.i32();
  check_indices(op, "targets", tg, n, vocab, "the vocabulary", &kIgnore);

  const int64_t chunk = std::min(chunk_tokens, std::max<int64_t>(n, 1));
  std::vector<float> buf(static_cast<size_t>(chunk * vocab));
  std::vector<double> row_loss(static_cast<size_t>(n), 0.0);
  const float* xp = x.f32();
  const float* wp = w.f32();
  for (int64_t r0 = 0; r0 < n; r0 += chunk) {
    const int64_t rows = std::min(chunk, n - r0);
    int64_t counted = 0;
    for (int64_t r = r0; r < r0 + rows; ++r) counted += tg[r] != kIgnore;
    if (counted == 0 && logits == nullptr) {  // nothing to learn from these rows
      if (dx != nullptr) std::fill_n(dx->f32() + r0 * h, rows * h, 0.0f);
      continue;
    }
    float* lg = buf.data();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
                static_cast<int>(vocab), static_cast<int>(h), 1.0f, xp + r0 * h,
                static_cast<int>(h), wp, static_cast<int>(h), 0.0f, lg, static_cast<int>(vocab));
    if (logits != nullptr) std::copy_n(lg, rows * vocab, logits->f32() + r0 * vocab);
#pragma omp parallel for schedule(static) if (rows * vocab > kParallelGrain)
    for (int64_t rr = 0; rr < rows; ++rr) {
      float* row = lg + rr * vocab;
      const int32_t t = tg[r0 + rr];
      if (t == kIgnore) {
        if (dx != nullptr) std::fill_n(row, vocab, 0.0f);
        continue;
      }
      const float mx = *std::max_element(row, row + vocab);
      double sum = 0.0;
      for (int64_t c = 0; c < vocab; ++c) sum += std::exp(row[c] - mx);
      const double lse = mx + std::log(sum);
      row_loss[static_cast<size_t>(r0 + rr)] = lse - row[t];
      if (dx != nullptr) {
        const float lse_f = static_cast<float>(lse);
        for (int64_t c = 0; c < vocab; ++c) row[c] = grad_scale * std::exp(row[c] - lse_f);
        row[t] -= grad_scale;
      }
    }
    if (dx != nullptr)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows),
                  static_cast<int>(h), static_cast<int>(vocab), 1.0f, lg,
                  static_cast<int>(vocab), wp, static_cast<int>(h), 0.0f, dx->f32() + r0 * h,
                  static_cast<int>(h));
  }
  double total = 0.0;
  for (double l : row_loss) total += l;
  loss_sum.data<double>()[0] += total;
}

}  // namespace ftune::cpu
