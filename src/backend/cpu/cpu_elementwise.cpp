// Whole-tensor vector helpers used by the trainer: y += alpha*x, x *= alpha and the sum of
// squares behind global gradient-norm clipping. sum_squares adds fixed-size blocks in index
// order, so its value does not depend on the number of threads.
#include <algorithm>
#include <vector>

#include "backend/cpu/cpu_kernels.h"

namespace ftune::cpu {

void axpy(float alpha, const Tensor& x, Tensor& y) {
  check_axpy(x, y, Device::cpu());
  const int64_t n = x.numel();
  const float* xp = x.f32();
  float* yp = y.f32();
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) yp[i] += alpha * xp[i];
}

void scale(Tensor& x, float alpha) {
  require_tensor("scale", "x", x, DType::F32, Device::cpu());
  const int64_t n = x.numel();
  float* xp = x.f32();
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) xp[i] *= alpha;
}

double sum_squares(const Tensor& x) {
  require_tensor("sum_squares", "x", x, DType::F32, Device::cpu());
  const int64_t n = x.numel();
  const float* xp = x.f32();
  constexpr int64_t kBlock = 4096;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(static_cast<size_t>(blocks), 0.0);
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t b = 0; b < blocks; ++b) {
    double s = 0.0;
    const int64_t end = std::min(n, (b + 1) * kBlock);
    for (int64_t i = b * kBlock; i < end; ++i) s += static_cast<double>(xp[i]) * xp[i];
    partial[static_cast<size_t>(b)] = s;
  }
  double total = 0.0;
  for (double s : partial) total += s;
  return total;
}

}  // namespace ftune::cpu
