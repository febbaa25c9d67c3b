// Dense matrix products through cuBLASLt: a and b F32, BF16 or F16, c F32 or a's dtype, always
// CUBLAS_COMPUTE_32F with fp32 scalars (fp32 accumulation; for F32 inputs true fp32, no TF32,
// so the F32 path matches the CPU reference).
//
// Layout. ftune's tensors are row-major and cuBLAS is column-major; a row-major [r, c] matrix
// read as column-major is its transpose, so
//   C = op(A) op(B)  (row-major)   <=>   C^T = op(B)^T op(A)^T  (column-major)
// and the call passes B as cuBLAS's "A" and A as its "B", with the same transpose flags, m and n
// swapped, and leading dimensions equal to the row strides (the row length, or more for the
// column slices of fused outputs: Tensor::col_slice). The stored (pre-op) matrices described
// to cuBLASLt are then: B: rows = trans_b ? k : n, cols = trans_b ? n : k, ld = b's row stride;
// A: rows = trans_a ? m : k, cols = trans_a ? k : m, ld = a's row stride; C: n x m, ld = c's.
//
// Plans. The matmul descriptor, the four layouts and the heuristic's algorithm depend only on
// the shape, the dtypes, the leading dimensions and the pointers' alignment; they are built once
// per distinct key and kept in CudaContext::ws (no allocation and no heuristic query per call).
// The alignment is part of the key because the heuristic may pick a kernel that needs 16-byte
// aligned operands, and views made by slice_rows can be less aligned than fresh tensors. When
// the heuristic finds no algorithm (odd leading dimensions, say) the call falls back to
// cublasGemmEx with the same compute type.
//
// beta == 0: cuBLAS(Lt) does not read C, so an uninitialised (even NaN) C is fine, as on the CPU.
// No device code: a .cpp file.
#include <algorithm>
#include <climits>
#include <cstdlib>
#include <string>
#include <vector>

#include "backend/cuda/check.h"
#include "backend/cuda/cuda_kernels.h"
#include "core/fp8.h"

namespace ftune::cuda {

struct GemmPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;  // cuBLAS's A (ours b), B, C
  cublasLtMatmulAlgo_t algo{};
  bool use_lt = false;  // false: no algorithm found, use cublasGemmEx
  ~GemmPlan() {
    if (c != nullptr) cublasLtMatrixLayoutDestroy(c);
    if (b != nullptr) cublasLtMatrixLayoutDestroy(b);
    if (a != nullptr) cublasLtMatrixLayoutDestroy(a);
    if (desc != nullptr) cublasLtMatmulDescDestroy(desc);
  }
};

Workspaces::Workspaces() = default;
Workspaces::~Workspaces() {
  gemm_plans.clear();
  if (lt != nullptr) cublasLtDestroy(lt);
}

Tensor workspace_view(Tensor& slot, const Shape& shape, DType dt, int device) {
  const int64_t numel = shape_numel(shape);
  if (!slot.defined() || slot.dtype() != dt || slot.numel() < numel)
    slot = Tensor::empty({std::max<int64_t>(numel, 1)}, dt, Device::cuda(device));
  return slot.slice_rows(0, numel).view(shape);
}

namespace {

cudaDataType_t cuda_type(DType dt) {
  switch (dt) {
    case DType::BF16: return CUDA_R_16BF;
    case DType::F16: return CUDA_R_16F;
    case DType::F8_E4M3: return CUDA_R_8F_E4M3;
    case DType::F8_E5M2: return CUDA_R_8F_E5M2;
    default: return CUDA_R_32F;
  }
}

// The largest power of two (up to 256) dividing the address.
int64_t alignment_of(const void* p) {
  const auto u = reinterpret_cast<uintptr_t>(p);
  int64_t a = 1;
  while (a < 256 && u % static_cast<uintptr_t>(a * 2) == 0) a *= 2;
  return a;
}

// b_type: cuBLAS's A (our b) when it differs from our a's dtype (FP8: E4M3 with E5M2).
std::unique_ptr<GemmPlan> make_plan(const CudaContext& ctx, const GemmDims& d, bool trans_a,
                                    bool trans_b, int64_t lda, int64_t ldb, int64_t ldc,
                                    const std::vector<int64_t>& align, DType b_type) {
  auto plan = std::make_unique<GemmPlan>();
  const cudaDataType_t ab = cuda_type(d.ab), ct = cuda_type(d.c), bt = cuda_type(b_type);
  FTUNE_CUDA_CHECK(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t op_a = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLAS's A = our b
  const cublasOperation_t op_b = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;  // cuBLAS's B = our a
  FTUNE_CUDA_CHECK(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a,
                                                  sizeof(op_a)));
  FTUNE_CUDA_CHECK(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b,
                                                  sizeof(op_b)));
  const auto u = [](int64_t v) { return static_cast<uint64_t>(v); };
  if (is_fp8(d.ab)) {  // the per-tensor scales: device pointers, set before each call
    // Forward products (E4M3 x E4M3) may use Hopper's fast accumulation (the partial sums stay in
    // the tensor cores' accumulator, not promoted to fp32 every few MMAs), as Transformer
    // Engine does for forward GEMMs; gradients (an E5M2 operand) never do.
    // FTUNE_FP8_FAST_ACCUM=0 turns it off.
    const char* env = std::getenv("FTUNE_FP8_FAST_ACCUM");
    const int8_t fast = (d.ab == DType::F8_E4M3 && b_type == DType::F8_E4M3 &&
                         (env == nullptr || std::string(env) != "0"))
                            ? 1
                            : 0;
    FTUNE_CUDA_CHECK(cublasLtMatmulDescSetAttribute(
        plan->desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, sizeof(fast)));
    const float* none = nullptr;
    FTUNE_CUDA_CHECK(cublasLtMatmulDescSetAttribute(
        plan->desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &none, sizeof(none)));
    FTUNE_CUDA_CHECK(cublasLtMatmulDescSetAttribute(
        plan->desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &none, sizeof(none)));
  }
  FTUNE_CUDA_CHECK(cublasLtMatrixLayoutCreate(&plan->a, bt, u(trans_b ? d.k : d.n),
                                              u(trans_b ? d.n : d.k), ldb));
  FTUNE_CUDA_CHECK(cublasLtMatrixLayoutCreate(&plan->b, ab, u(trans_a ? d.m : d.k),
                                              u(trans_a ? d.k : d.m), lda));
  FTUNE_CUDA_CHECK(cublasLtMatrixLayoutCreate(&plan->c, ct, u(d.n), u(d.m), ldc));

  cublasLtMatmulPreference_t pref = nullptr;
  FTUNE_CUDA_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws_bytes = kLtWorkspaceBytes;
  const auto al = [](int64_t v) { return static_cast<uint32_t>(v); };
  const uint32_t align_a = al(align[0]), align_b = al(align[1]), align_c = al(align[2]);
  cublasStatus_t st = cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof(ws_bytes));
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                              &align_a, sizeof(align_a));
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                              &align_b, sizeof(align_b));
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                              &align_c, sizeof(align_c));
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                              &align_c, sizeof(align_c));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulAlgoGetHeuristic(ctx.ws->lt, plan->desc, plan->a, plan->b, plan->c,
                                        plan->c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  // No algorithm (CUBLAS_STATUS_NOT_SUPPORTED or zero results): the GemmEx fallback.
  plan->use_lt = st == CUBLAS_STATUS_SUCCESS && found > 0;
  if (plan->use_lt) plan->algo = result.algo;
  return plan;
}

}  // namespace

void gemm(const CudaContext& ctx, const Tensor& a, bool trans_a, const Tensor& b, bool trans_b,
          Tensor& c, float alpha, float beta) {
  const GemmDims d = check_gemm(a, trans_a, b, trans_b, c, ctx.dev());
  const int64_t m = d.m, n = d.n, k = d.k;
  FTUNE_CHECK(
      m <= INT_MAX && n <= INT_MAX && k <= INT_MAX && a.row_stride() <= INT_MAX &&
          b.row_stride() <= INT_MAX && c.row_stride() <= INT_MAX,
      "gemm: dimensions [{}, {}, {}] exceed the cuBLAS int range", m, n, k);
  FTUNE_CHECK(ctx.blas != nullptr && ctx.ws != nullptr && ctx.ws->lt != nullptr,
              "gemm: no cuBLAS handles");
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
  // Leading dimensions: the row strides (column slices of fused outputs are row-strided views).
  const int64_t lda = a.row_stride(), ldb = b.row_stride(), ldc = c.row_stride();
  // cuBLAS's A is our b, its B our a, its C/D our c.
  const std::vector<int64_t> align = {alignment_of(b.raw()), alignment_of(a.raw()),
                                      alignment_of(c.raw())};
  const std::vector<int64_t> key = {m,
                                    n,
                                    k,
                                    trans_a,
                                    trans_b,
                                    static_cast<int64_t>(d.ab),
                                    static_cast<int64_t>(d.c),
                                    lda,
                                    ldb,
                                    ldc,
                                    align[0],
                                    align[1],
                                    align[2]};
  auto& slot = ctx.ws->gemm_plans[key];
  if (!slot) slot = make_plan(ctx, d, trans_a, trans_b, lda, ldb, ldc, align, d.ab);
  const GemmPlan& plan = *slot;
  if (plan.use_lt) {
    FTUNE_CUDA_CHECK(cublasLtMatmul(ctx.ws->lt, plan.desc, &alpha, b.raw(), plan.a, a.raw(),
                                    plan.b, &beta, c.raw(), plan.c, c.raw(), plan.c, &plan.algo,
                                    ctx.ws->lt_workspace.raw(), kLtWorkspaceBytes, ctx.stream));
    return;
  }
  FTUNE_CUDA_CHECK(cublasGemmEx(ctx.blas, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, static_cast<int>(n),
                                static_cast<int>(m), static_cast<int>(k), &alpha, b.raw(),
                                cuda_type(d.ab), static_cast<int>(ldb), a.raw(), cuda_type(d.ab),
                                static_cast<int>(lda), &beta, c.raw(), cuda_type(d.c),
                                static_cast<int>(ldc), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

// FP8: c = alpha sa sb a b^T + beta c with a [M,K], b [N,K] K-major, i.e. our gemm with
// trans_b (cuBLAS's "TN", the one layout Hopper's FP8 tensor cores take). The scales are device
// pointers (CUBLASLT_MATMUL_DESC_{A,B}_SCALE_POINTER; cuBLAS's A is our b). Forward products
// use fast accumulation (make_plan says when). Shapes with no FP8 kernel (K or the
// leading dimensions not multiples of 16, unaligned views) decode the codes to F32 and take the
// F32 gemm, then scale: slower, and as exact as the CPU's fp32 sums (the FP8 tensor cores add
// with less alignment precision: about 1e-3 relative).
void gemm_fp8(const CudaContext& ctx, const Tensor& a, const Tensor& a_scale, const Tensor& b,
              const Tensor& b_scale, Tensor& c, float alpha, float beta) {
  const GemmDims d = check_gemm_fp8(a, a_scale, b, b_scale, c, ctx.dev());
  const int64_t m = d.m, n = d.n, k = d.k;
  FTUNE_CHECK(m <= INT_MAX && n <= INT_MAX && k <= INT_MAX && c.row_stride() <= INT_MAX,
              "gemm_fp8: dimensions [{}, {}, {}] exceed the cuBLAS int range", m, n, k);
  FTUNE_CHECK(ctx.blas != nullptr && ctx.ws != nullptr && ctx.ws->lt != nullptr,
              "gemm_fp8: no cuBLAS handles");
  if (m == 0 || n == 0) return;
  const int64_t ldc = c.row_stride();
  const std::vector<int64_t> align = {alignment_of(b.raw()), alignment_of(a.raw()),
                                      alignment_of(c.raw())};
  const std::vector<int64_t> key = {-8, m, n, k, static_cast<int64_t>(a.dtype()),
                                    static_cast<int64_t>(b.dtype()), static_cast<int64_t>(d.c),
                                    ldc, align[0], align[1], align[2]};
  auto& slot = ctx.ws->gemm_plans[key];
  if (!slot) {
    GemmDims pd = d;
    pd.ab = a.dtype();
    // k % 16: Hopper's FP8 kernels need 16-byte rows; the heuristic may still find none.
    if (k % 16 == 0 && k > 0) {
      slot = make_plan(ctx, pd, false, true, k, k, ldc, align, b.dtype());
    } else {
      slot = std::make_unique<GemmPlan>();  // use_lt false: the fallback
    }
  }
  const GemmPlan& plan = *slot;
  if (plan.use_lt) {
    const float* sa = b_scale.f32();  // cuBLAS's A is our b
    const float* sb = a_scale.f32();
    FTUNE_CUDA_CHECK(cublasLtMatmulDescSetAttribute(
        plan.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sa, sizeof(sa)));
    FTUNE_CUDA_CHECK(cublasLtMatmulDescSetAttribute(
        plan.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sb, sizeof(sb)));
    FTUNE_CUDA_CHECK(cublasLtMatmul(ctx.ws->lt, plan.desc, &alpha, b.raw(), plan.a, a.raw(),
                                    plan.b, &beta, c.raw(), plan.c, c.raw(), plan.c, &plan.algo,
                                    ctx.ws->lt_workspace.raw(), kLtWorkspaceBytes, ctx.stream));
    return;
  }
  const Tensor af = fp8_decode(ctx, a), bf = fp8_decode(ctx, b);
  Tensor acc = Tensor::empty({m, n}, DType::F32, ctx.dev());
  gemm(ctx, af, false, bf, true, acc, 1.0f, 0.0f);
  fp8_epilogue(ctx, acc, a_scale, b_scale, alpha, beta, c);
}

}  // namespace ftune::cuda
