// RMSNorm forward and backward, matching HF LlamaRMSNorm computed in fp32
// (transformers/models/llama/modeling_llama.py: LlamaRMSNorm.forward):
//   rstd = rsqrt(mean(x^2) + eps);  y = w * (x * rstd).
// Backward, with g = w * dy:  dx = rstd * g - rstd^3 / H * x * sum(g * x);
//   dw += sum over rows of dy * x * rstd.
// add_rms_norm_forward: the residual add of the decoder layer and the next norm, sum = a + b,
// then the forward above on sum.
#include <algorithm>
#include <cmath>

#include "backend/cpu/cpu_kernels.h"

namespace ftune::cpu {

namespace {
void rms_norm_rows(int64_t n, int64_t h, float eps, const float* xp, const float* wp, float* yp,
                   float* rp) {
#pragma omp parallel for schedule(static) if (n * h > kParallelGrain)
  for (int64_t r = 0; r < n; ++r) {
    const float* xr = xp + r * h;
    double ss = 0.0;
    for (int64_t j = 0; j < h; ++j) ss += static_cast<double>(xr[j]) * xr[j];
    const float var = static_cast<float>(ss / static_cast<double>(h));
    const float rs = 1.0f / std::sqrt(var + eps);
    rp[r] = rs;
    float* yr = yp + r * h;
    for (int64_t j = 0; j < h; ++j) yr[j] = wp[j] * (xr[j] * rs);
  }
}
}  // namespace

void rms_norm_forward(const Tensor& x, const Tensor& w, float eps, Tensor& y, Tensor& rstd) {
  const MatrixDims d = check_rms_norm_forward(x, w, eps, y, rstd, Device::cpu());
  rms_norm_rows(d.rows, d.cols, eps, x.f32(), w.f32(), y.f32(), rstd.f32());
}

void add_rms_norm_forward(const Tensor& a, const Tensor& b, const Tensor& w, float eps,
                          Tensor& sum, Tensor& y, Tensor& rstd) {
  const MatrixDims d = check_add_rms_norm_forward(a, b, w, eps, sum, y, rstd, Device::cpu());
  const int64_t total = d.rows * d.cols;
  const float* ap = a.f32();
  const float* bp = b.f32();
  float* sp = sum.f32();
#pragma omp parallel for schedule(static) if (total > kParallelGrain)
  for (int64_t i = 0; i < total; ++i) sp[i] = ap[i] + bp[i];
  rms_norm_rows(d.rows, d.cols, eps, sp, w.f32(), y.f32(), rstd.f32());
}

void rms_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                       Tensor& dx, Tensor* dw, bool accumulate) {
  const MatrixDims d = check_rms_norm_backward(dy, x, w, rstd, dx, dw, Device::cpu());
  const int64_t n = d.rows, h = d.cols;
  const float* g = dy.f32();
  const float* xp = x.f32();
  const float* wp = w.f32();
  const float* rp = rstd.f32();
  float* dxp = dx.f32();
  // dw first, so dx may alias dy. Column blocks per thread, rows summed in order.
  if (dw != nullptr) {
    float* dwp = dw->f32();
    constexpr int64_t kBlock = 64;
    const int64_t blocks = (h + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (n * h > kParallelGrain)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t j0 = b * kBlock, j1 = std::min(h, j0 + kBlock);
      double acc[kBlock] = {};
      for (int64_t r = 0; r < n; ++r) {
        const float* gr = g + r * h;
        const float* xr = xp + r * h;
        const float rs = rp[r];
        for (int64_t j = j0; j < j1; ++j)
          acc[j - j0] += static_cast<double>(gr[j]) * (xr[j] * rs);
      }
      for (int64_t j = j0; j < j1; ++j) dwp[j] += static_cast<float>(acc[j - j0]);
    }
  }
#pragma omp parallel for schedule(static) if (n * h > kParallelGrain)
  for (int64_t r = 0; r < n; ++r) {
    const float* gr = g + r * h;
    const float* xr = xp + r * h;
    const float rs = rp[r];
    double dot = 0.0;  // sum_j w_j dy_j x_j
    for (int64_t j = 0; j < h; ++j) dot += static_cast<double>(wp[j]) * gr[j] * xr[j];
    const float c = static_cast<float>(dot * rs * rs * rs / static_cast<double>(h));
    float* dr = dxp + r * h;
    if (accumulate) {
      for (int64_t j = 0; j < h; ++j) dr[j] += rs * (wp[j] * gr[j]) - c * xr[j];
    } else {
      for (int64_t j = 0; j < h; ++j) dr[j] = rs * (wp[j] * gr[j]) - c * xr[j];
    }
  }
}

}  // namespace ftune::cpu
