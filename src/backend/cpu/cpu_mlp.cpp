// SwiGLU activation of the Llama MLP (HF LlamaMLP: down(act_fn(gate(x)) * up(x)), act "silu"):
//   out = silu(g) * u, silu(g) = g * sigmoid(g);
//   dgate = dout * u * sigmoid(g) * (1 + g * (1 - sigmoid(g))),  dup = dout * silu(g).
#include <cmath>

#include "backend/cpu/cpu_kernels.h"

namespace ftune::cpu {

namespace {
float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
}  // namespace

void swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& out) {
  check_swiglu_forward(gate, up, out, Device::cpu());
  const int64_t n = gate.numel();
  const float* g = gate.f32();
  const float* u = up.f32();
  float* o = out.f32();
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) o[i] = g[i] * sigmoid(g[i]) * u[i];
}

void swiglu_backward(const Tensor& dout, const Tensor& gate, const Tensor& up, Tensor& dgate,
                     Tensor& dup) {
  check_swiglu_backward(dout, gate, up, dgate, dup, Device::cpu());
  const int64_t n = gate.numel();
  const float* dy = dout.f32();
  const float* g = gate.f32();
  const float* u = up.f32();
  float* dg = dgate.f32();
  float* du = dup.f32();
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    // Read everything first: outputs may alias inputs (e.g. dgate written over gate).
    const float gi = g[i], ui = u[i], dyi = dy[i];
    const float s = sigmoid(gi);
    dg[i] = dyi * ui * (s * (1.0f + gi * (1.0f - s)));
    du[i] = dyi * (gi * s);
  }
}

}  // namespace ftune::cpu
