// FP8 on the host, the reference of the CUDA path (backend/ops.h, "FP8"): per-tensor scaled
// quantization with core/fp8.h's conversions, the scaled product of two code matrices (codes
// decoded exactly into fp32, one sgemm, the scales folded into alpha) and a plain transpose.
#include <cblas.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/cpu/cpu_kernels.h"
#include "core/fp8.h"

namespace ftune::cpu {

namespace {

// The 256 values of a format's codes.
const std::array<float, 256>& code_values(Fp8Format f) {
  static const auto make = [](Fp8Format fmt) {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) t[static_cast<size_t>(c)] = fp8_to_f32(static_cast<uint8_t>(c), fmt);
    return t;
  };
  static const std::array<float, 256> e4m3 = make(Fp8Format::E4M3), e5m2 = make(Fp8Format::E5M2);
  return f == Fp8Format::E4M3 ? e4m3 : e5m2;
}

// The codes of a [rows, cols] matrix as fp32 values (exact).
std::vector<float> decode(const Tensor& t) {
  const auto& lut = code_values(fp8_format(t.dtype()));
  const auto* p = t.data<uint8_t>();
  std::vector<float> out(static_cast<size_t>(t.numel()));
  for (size_t i = 0; i < out.size(); ++i) out[i] = lut[p[i]];
  return out;
}

}  // namespace

void quantize_fp8(const Tensor& x, Tensor& q, Tensor& scale) {
  const int64_t n = check_quantize_fp8(x, q, scale, Device::cpu());
  const Fp8Format f = fp8_format(q.dtype());
  const float* xp = x.f32();
  float amax = 0.0f;
  for (int64_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(xp[i]));
  const Fp8Scale s = fp8_scale_for(amax, fp8_max(f));
  auto* qp = q.data<uint8_t>();
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) qp[i] = f32_to_fp8(xp[i] * s.inv, f);
  scale.f32()[0] = s.scale;
}

void gemm_fp8(const Tensor& a, const Tensor& a_scale, const Tensor& b, const Tensor& b_scale,
              Tensor& c, float alpha, float beta) {
  const GemmDims d = check_gemm_fp8(a, a_scale, b, b_scale, c, Device::cpu());
  const int64_t m = d.m, n = d.n, k = d.k;
  FTUNE_CHECK(m <= INT32_MAX && n <= INT32_MAX && k <= INT32_MAX,
              "gemm_fp8: dimensions [{}, {}, {}] exceed the BLAS int range", m, n, k);
  if (m == 0 || n == 0) return;
  float* cp = c.f32();
  const int64_t ldc = c.row_stride();
  if (beta == 0.0f) {  // c may be uninitialised
    for (int64_t i = 0; i < m; ++i) std::fill(cp + i * ldc, cp + i * ldc + n, 0.0f);
  }
  if (k == 0) {
    if (beta != 0.0f && beta != 1.0f)
      for (int64_t i = 0; i < m; ++i)
        for (int64_t j = 0; j < n; ++j) cp[i * ldc + j] *= beta;
    return;
  }
  const std::vector<float> av = decode(a), bv = decode(b);
  const float ab = alpha * a_scale.f32()[0] * b_scale.f32()[0];
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), ab, av.data(), static_cast<int>(k), bv.data(),
              static_cast<int>(k), beta, cp, static_cast<int>(ldc));
}

void transpose(const Tensor& src, Tensor& dst) {
  check_transpose(src, dst, Device::cpu());
  const int64_t R = src.dim(0), C = src.dim(1);
  const size_t es = dtype_size(src.dtype());
  const auto* s = static_cast<const unsigned char*>(src.raw());
  auto* t = static_cast<unsigned char*>(dst.raw());
#pragma omp parallel for schedule(static) if (R * C > kParallelGrain)
  for (int64_t r = 0; r < R; ++r)
    for (int64_t c = 0; c < C; ++c)
      std::memcpy(t + (static_cast<size_t>(c * R + r) * es), s + (static_cast<size_t>(r * C + c) * es), es);
}

}  // namespace ftune::cpu
