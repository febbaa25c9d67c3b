// Dense fp32 matrix product through cublasSgemm. ftune's tensors are row-major and cuBLAS is
// column-major; a row-major [r, c] matrix read as column-major is its transpose, so
//   C = op(A) op(B)  (row-major)   <=>   C^T = op(B)^T op(A)^T  (column-major)
// and the call passes B before A with the same transpose flags, m and n swapped and the
// leading dimensions equal to the stored row lengths. No device code: a .cpp file.
// The handle keeps cuBLAS's default math mode (true fp32, no TF32; set in cuda_ops.cpp).
#include <climits>

#include "backend/cuda/check.h"
#include "backend/cuda/cuda_kernels.h"

namespace ftune::cuda {

void gemm(const CudaContext& ctx, const Tensor& a, bool trans_a, const Tensor& b, bool trans_b,
          Tensor& c, float alpha, float beta) {
  const GemmDims d = check_gemm(a, trans_a, b, trans_b, c, ctx.dev());
  const int64_t m = d.m, n = d.n, k = d.k;
  FTUNE_CHECK(
      m <= INT_MAX && n <= INT_MAX && k <= INT_MAX && a.dim(1) <= INT_MAX && b.dim(1) <= INT_MAX,
      "gemm: dimensions [{}, {}, {}] exceed the cuBLAS int range", m, n, k);
  FTUNE_CHECK(ctx.blas != nullptr, "gemm: no cuBLAS handle");
  if (m == 0 || n == 0) return;
  if (k == 0 || alpha == 0.0f) {
    // C = beta C; with beta == 0 the old C (possibly NaN) must not leak through.
    FTUNE_CHECK(c.is_contiguous(), "gemm: k == 0 or alpha == 0 with a strided c");
    if (beta == 0.0f)
      FTUNE_CUDA_CHECK(cudaMemsetAsync(c.raw(), 0, c.nbytes(), ctx.stream));
    else if (beta != 1.0f)
      scale(ctx, c, beta);
    return;
  }
  // cuBLAS does not read C when beta == 0 (cuBLAS docs, cublas<t>gemm), matching the CPU path.
  FTUNE_CUDA_CHECK(cublasSgemm(ctx.blas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                               trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, static_cast<int>(n),
                               static_cast<int>(m), static_cast<int>(k), &alpha, b.f32(),
                               static_cast<int>(b.row_stride()), a.f32(),
                               static_cast<int>(a.row_stride()), &beta, c.f32(),
                               static_cast<int>(c.row_stride())));
}

}  // namespace ftune::cuda
