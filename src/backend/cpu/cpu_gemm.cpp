// Dense matrix products and bias terms on the host: gemm through OpenBLAS cblas_sgemm
// (row-major), the broadcast bias add and its column-sum backward. OpenBLAS splits the output
// (not the K reduction) across threads, so results are reproducible for a fixed thread count.
#include <cblas.h>

#include <algorithm>

#include "backend/cpu/cpu_kernels.h"

namespace ftune::cpu {

void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
          float beta) {
  const GemmDims d = check_gemm(a, trans_a, b, trans_b, c, Device::cpu());
  const int64_t m = d.m, n = d.n, k = d.k;
  FTUNE_CHECK(m <= INT32_MAX && n <= INT32_MAX && k <= INT32_MAX,
              "gemm: dimensions [{}, {}, {}] exceed the BLAS int range", m, n, k);
  if (m == 0 || n == 0) return;
  float* cp = c.f32();
  // With beta == 0 the old C (possibly uninitialized, even NaN) must not matter; zero it here
  // instead of relying on the BLAS library's special case.
  const int64_t ldc = c.row_stride();
  if (beta == 0.0f || (k == 0 || alpha == 0.0f)) {
    if (beta == 1.0f) return;
    for (int64_t i = 0; i < m; ++i) {
      float* row = cp + i * ldc;
      for (int64_t j = 0; j < n; ++j) row[j] = beta == 0.0f ? 0.0f : row[j] * beta;
    }
    if (k == 0 || alpha == 0.0f) return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), alpha, a.f32(), static_cast<int>(a.row_stride()), b.f32(),
              static_cast<int>(b.row_stride()), beta, cp, static_cast<int>(ldc));
}

void add_bias(Tensor& y, const Tensor& bias) {
  const MatrixDims d = check_add_bias(y, bias, Device::cpu());
  const int64_t rows = d.rows, cols = d.cols;
  float* yp = y.f32();
  const float* bp = bias.f32();
#pragma omp parallel for schedule(static) if (rows * cols > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    float* row = yp + r * cols;
    for (int64_t j = 0; j < cols; ++j) row[j] += bp[j];
  }
}

void bias_backward(const Tensor& dy, Tensor& dbias) {
  const MatrixDims d = check_bias_backward(dy, dbias, Device::cpu());
  const int64_t rows = d.rows, cols = d.cols;
  const float* g = dy.f32();
  float* db = dbias.f32();
  // Each thread owns a block of columns and sums its rows top to bottom: fixed order.
  constexpr int64_t kBlock = 64;
  const int64_t blocks = (cols + kBlock - 1) / kBlock;
#pragma omp parallel for schedule(static) if (rows * cols > kParallelGrain)
  for (int64_t bi = 0; bi < blocks; ++bi) {
    const int64_t j0 = bi * kBlock, j1 = std::min(cols, j0 + kBlock);
    double acc[kBlock] = {};
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = g + r * cols;
      for (int64_t j = j0; j < j1; ++j) acc[j - j0] += row[j];
    }
    for (int64_t j = j0; j < j1; ++j) db[j] += static_cast<float>(acc[j - j0]);
  }
}

}  // namespace ftune::cpu
