// Dense matrix products and bias terms on the host: gemm through OpenBLAS cblas_sgemm
// (row-major), the broadcast bias add and its column-sum backward. OpenBLAS splits the output
// (not the K reduction) across threads, so results are reproducible for a fixed thread count.
#include <cblas.h>

#include <algorithm>

#include "backend/cpu/cpu_kernels.h"

namespace ftune::cpu {

void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
          float beta) {
  constexpr const char* op = "gemm";
  require_rank(op, "a", a, DType::F32, 2);
  require_rank(op, "b", b, DType::F32, 2);
  require_rank(op, "c", c, DType::F32, 2);
  const int64_t m = trans_a ? a.dim(1) : a.dim(0);
  const int64_t k = trans_a ? a.dim(0) : a.dim(1);
  const int64_t kb = trans_b ? b.dim(1) : b.dim(0);
  const int64_t n = trans_b ? b.dim(0) : b.dim(1);
  FTUNE_CHECK(k == kb, "gemm: op(a) is [{}, {}] but op(b) is [{}, {}] (a {}{}, b {}{})", m, k, kb,
              n, shape_str(a.shape()), trans_a ? "^T" : "", shape_str(b.shape()),
              trans_b ? "^T" : "");
  FTUNE_CHECK(c.dim(0) == m && c.dim(1) == n, "gemm: c is {} but op(a)*op(b) is [{}, {}]",
              shape_str(c.shape()), m, n);
  FTUNE_CHECK(m <= INT32_MAX && n <= INT32_MAX && k <= INT32_MAX,
              "gemm: dimensions [{}, {}, {}] exceed the BLAS int range", m, n, k);
  if (m == 0 || n == 0) return;
  float* cp = c.f32();
  // With beta == 0 the old C (possibly uninitialized, even NaN) must not matter; zero it here
  // instead of relying on the BLAS library's special case.
  if (beta == 0.0f) c.zero_();
  if (k == 0 || alpha == 0.0f) {
    if (beta != 0.0f && beta != 1.0f) scale(c, beta);
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), alpha, a.f32(), static_cast<int>(a.dim(1)), b.f32(),
              static_cast<int>(b.dim(1)), beta, cp, static_cast<int>(n));
}

void add_bias(Tensor& y, const Tensor& bias) {
  constexpr const char* op = "add_bias";
  require_rank(op, "y", y, DType::F32, 2);
  require_rank(op, "bias", bias, DType::F32, 1);
  FTUNE_CHECK(bias.dim(0) == y.dim(1), "add_bias: y is {} but bias is {}", shape_str(y.shape()),
              shape_str(bias.shape()));
  const int64_t rows = y.dim(0), cols = y.dim(1);
  float* yp = y.f32();
  const float* bp = bias.f32();
#pragma omp parallel for schedule(static) if (rows * cols > kParallelGrain)
  for (int64_t r = 0; r < rows; ++r) {
    float* row = yp + r * cols;
    for (int64_t j = 0; j < cols; ++j) row[j] += bp[j];
  }
}

void bias_backward(const Tensor& dy, Tensor& dbias) {
  constexpr const char* op = "bias_backward";
  require_rank(op, "dy", dy, DType::F32, 2);
  require_rank(op, "dbias", dbias, DType::F32, 1);
  FTUNE_CHECK(dbias.dim(0) == dy.dim(1), "bias_backward: dy is {} but dbias is {}",
              shape_str(dy.shape()), shape_str(dbias.shape()));
  const int64_t rows = dy.dim(0), cols = dy.dim(1);
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
