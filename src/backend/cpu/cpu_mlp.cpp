// SwiGLU activation of the Llama MLP (HF LlamaMLP: down(act_fn(gate(x)) * up(x)), act "silu"):
//   out = silu(g) * u, silu(g) = g * sigmoid(g);
//   dgate = dout * u * sigmoid(g) * (1 + g * (1 - sigmoid(g))),  dup = dout * silu(g).
// The fused variants read gate and up from one [N, 2F] buffer (the output of one GEMM with the
// gate and up weights stacked): gate = columns [0, F), up = columns [F, 2F).
#include <cmath>

#include "backend/cpu/cpu_kernels.h"

namespace ftune::cpu {

namespace {
float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

// out = silu(g) u; dg, du from dy (all read before written, so outputs may alias inputs).
inline void swiglu_grad(float dyi, float gi, float ui, float* dg, float* du) {
  const float s = sigmoid(gi);
  *dg = dyi * ui * (s * (1.0f + gi * (1.0f - s)));
  *du = dyi * (gi * s);
}
}  // namespace

void swiglu_fused_forward(const Tensor& gu, Tensor& out) {
  const MatrixDims d = check_swiglu_fused_forward(gu, out, Device::cpu());
  const int64_t n = d.rows, f = d.cols;
  const float* in = gu.f32();
  float* o = out.f32();
#pragma omp parallel for schedule(static) if (n * f > kParallelGrain)
  for (int64_t r = 0; r < n; ++r) {
    const float* g = in + r * 2 * f;
    const float* u = g + f;
    for (int64_t j = 0; j < f; ++j) o[r * f + j] = g[j] * sigmoid(g[j]) * u[j];
  }
}

void swiglu_fused_backward(const Tensor& dout, const Tensor& gu, Tensor& dgu) {
  const MatrixDims d = check_swiglu_fused_backward(dout, gu, dgu, Device::cpu());
  const int64_t n = d.rows, f = d.cols;
  const float* dy = dout.f32();
  const float* in = gu.f32();
  float* out = dgu.f32();
#pragma omp parallel for schedule(static) if (n * f > kParallelGrain)
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t j = 0; j < f; ++j) {
      const int64_t gi = r * 2 * f + j, ui = gi + f;
      const float g = in[gi], u = in[ui];
      swiglu_grad(dy[r * f + j], g, u, out + gi, out + ui);
    }
  }
}

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
    swiglu_grad(dy[i], g[i], u[i], dg + i, du + i);
  }
}

}  // namespace ftune::cpu
