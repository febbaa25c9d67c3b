// Whole-tensor vector helpers used by the trainer: y += alpha*x, x *= alpha, the sum of
// squares behind global gradient-norm clipping, and dtype conversion (cast, the one CPU op that
// takes BF16/F16: the reference for the CUDA cast and the tests' rounding of inputs). sum_squares adds fixed-size blocks in index
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
  check_scale(x, Device::cpu());
  const int64_t n = x.numel();
  float* xp = x.f32();
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) xp[i] *= alpha;
}

double sum_squares(const Tensor& x) {
  check_sum_squares(x, Device::cpu());
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

void cast(const Tensor& src, Tensor& dst) {
  check_cast(src, dst, Device::cpu());
  const int64_t n = src.numel();
  const DType st = src.dtype(), dt = dst.dtype();
  const void* sp = src.raw();
  void* dp = dst.raw();
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    float v;
    switch (st) {
      case DType::BF16: v = bf16_to_f32(static_cast<const uint16_t*>(sp)[i]); break;
      case DType::F16: v = f16_to_f32(static_cast<const uint16_t*>(sp)[i]); break;
      default: v = static_cast<const float*>(sp)[i]; break;
    }
    switch (dt) {
      case DType::BF16: static_cast<uint16_t*>(dp)[i] = f32_to_bf16(v); break;
      case DType::F16: static_cast<uint16_t*>(dp)[i] = f32_to_f16(v); break;
      default: static_cast<float*>(dp)[i] = v; break;
    }
  }
}

}  // namespace ftune::cpu
