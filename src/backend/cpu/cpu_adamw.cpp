// AdamW, reproducing torch.optim.AdamW with foreach=False, capturable=False
// (torch/optim/adam.py _single_tensor_adam with decoupled weight decay), including its
// fp32 operation order:
//   param.mul_(1 - lr*wd)
//   exp_avg.lerp_(grad, 1-b1)                      (m + w (g - m); torch's lerp for w < 0.5)
//   exp_avg_sq.mul_(b2).addcmul_(grad, grad, 1-b2)
//   bc1 = 1 - b1^t; bc2 = 1 - b2^t; step_size = lr / bc1        (Python doubles)
//   denom = sqrt(v) / sqrt(bc2) + eps
//   param.addcdiv_(m, denom, value=-step_size)     (p + (-step_size * m) / denom)
// Mathematically: p = p(1-lr wd) - lr * (m/bc1) / (sqrt(v/bc2) + eps).
#include <cmath>

#include "backend/cpu/cpu_kernels.h"

namespace ftune::cpu {

void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, float lr, float beta1,
                float beta2, float eps, float weight_decay, int64_t step) {
  check_adamw_step(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step, Device::cpu());

  const double b1 = beta1, b2 = beta2;
  const float decay = static_cast<float>(1.0 - static_cast<double>(lr) * weight_decay);
  const float w1 = static_cast<float>(1.0 - b1);  // lerp weight
  const float w2 = static_cast<float>(1.0 - b2);
  const double bc1 = 1.0 - std::pow(b1, static_cast<double>(step));
  const double bc2 = 1.0 - std::pow(b2, static_cast<double>(step));
  const float neg_step_size = static_cast<float>(-(static_cast<double>(lr) / bc1));
  const float bc2_sqrt = static_cast<float>(std::sqrt(bc2));

  const int64_t n = param.numel();
  float* p = param.f32();
  const float* g = grad.f32();
  float* mp = m.f32();
  float* vp = v.f32();
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    p[i] *= decay;
    // at::lerp: small weights step from the start, large ones from the end (ATen Lerp.h).
    mp[i] = w1 < 0.5f ? mp[i] + w1 * (g[i] - mp[i]) : g[i] - (g[i] - mp[i]) * (1.0f - w1);
    vp[i] = vp[i] * beta2 + w2 * g[i] * g[i];
    const float denom = std::sqrt(vp[i]) / bc2_sqrt + eps;
    p[i] = p[i] + neg_step_size * mp[i] / denom;
  }
}

}  // namespace ftune::cpu
