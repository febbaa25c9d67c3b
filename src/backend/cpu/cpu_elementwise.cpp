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

void cast(const Tensor& src, Tensor& dst) {
  constexpr const char* op = "cast";
  auto is_float = [](DType d) { return d == DType::F32 || d == DType::BF16 || d == DType::F16; };
  FTUNE_CHECK(src.defined() && dst.defined() && src.device().is_cpu() && dst.device().is_cpu(),
              "{}: src and dst must be defined host tensors", op);
  FTUNE_CHECK(is_float(src.dtype()) && is_float(dst.dtype()),
              "{}: {} -> {} is not a conversion between F32, BF16 and F16", op,
              dtype_name(src.dtype()), dtype_name(dst.dtype()));
  FTUNE_CHECK(src.numel() == dst.numel() && src.is_contiguous() && dst.is_contiguous(),
              "{}: src {} and dst {} differ in size or are strided", op, shape_str(src.shape()),
              shape_str(dst.shape()));
  dst.copy_from(src.to_dtype(dst.dtype()));
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
