// AdamW step on the GPU reproducing torch.optim.AdamW (foreach=False) and its fp32 operation
// order exactly as the CPU reference does (src/backend/cpu/cpu_adamw.cpp, which cites
// torch/optim/adam.py _single_tensor_adam): decay, lerp for m, v = b2 v + (1-b2) g^2,
// denom = sqrt(v)/sqrt(bc2) + eps, p += (-lr/bc1) m / denom. The scalars come from the same
// double-precision host expressions. The _rn intrinsics forbid FMA contraction, so each
// element rounds as the (non-FMA) CPU build does and optimizer states track the CPU's.
#include <cmath>

#include "backend/cuda/cuda_kernels.h"

namespace ftune::cuda {

namespace {

constexpr int kBlock = 256;

__global__ void adamw_kernel(int64_t n, float* p, const float* __restrict__ g, float* m, float* v,
                             float decay, float w1, float w2, float beta2, float eps,
                             float neg_step_size, float bc2_sqrt) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float gi = g[i];
    float pi = __fmul_rn(p[i], decay);
    float mi = m[i];
    // at::lerp: small weights step from the start, large ones from the end (ATen Lerp.h).
    mi = w1 < 0.5f ? __fadd_rn(mi, __fmul_rn(w1, __fsub_rn(gi, mi)))
                   : __fsub_rn(gi, __fmul_rn(__fsub_rn(gi, mi), __fsub_rn(1.0f, w1)));
    const float vi = __fadd_rn(__fmul_rn(v[i], beta2), __fmul_rn(__fmul_rn(w2, gi), gi));
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps);
    pi = __fadd_rn(pi, __fdiv_rn(__fmul_rn(neg_step_size, mi), denom));
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
  }
}

}  // namespace

void adamw_step(const CudaContext& ctx, Tensor& param, const Tensor& grad, Tensor& m, Tensor& v,
                float lr, float beta1, float beta2, float eps, float weight_decay, int64_t step) {
  constexpr const char* op = "adamw_step";
  check_adamw_step(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step, ctx.dev());
  const double b1 = beta1, b2 = beta2;
  const float decay = static_cast<float>(1.0 - static_cast<double>(lr) * weight_decay);
  const float w1 = static_cast<float>(1.0 - b1);
  const float w2 = static_cast<float>(1.0 - b2);
  const double bc1 = 1.0 - std::pow(b1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(b2, static_cast<double>(step));
  const float neg_step_size = static_cast<float>(-(static_cast<double>(lr) / bc1));
  const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));
  const int64_t n = param.numel();
  if (n == 0) return;
  adamw_kernel<<<grid_for(n, kBlock), kBlock, 0, ctx.stream>>>(n, param.f32(), grad.f32(), m.f32(),
                                                               v.f32(), decay, w1, w2, beta2, eps,
                                                               neg_step_size, bc2_sqrt);
  check_launch(ctx, op);
}

}  // namespace ftune::cuda
