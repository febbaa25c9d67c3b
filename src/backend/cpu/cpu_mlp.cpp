// SwiGLU activation of the Llama MLP (HF LlamaMLP: down(act_fn(gate(x)) * up(x)), act "silu"):
//   out = silu(g) * u, silu(g) = g * sigmoid(g);
//   dgate = dout * u * sigmoid(g) * (1 + g * (1 - sigmoid(g))),  dup = dout * silu(g).
#include <cmath>

#include "backend/cpu/cpu_kernels.h"

namespace ftune::cpu {

namespace {
float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

void check_same(const char* op, const char* name, const Tensor& t, const Tensor& gate) {
  require_tensor(op, name, t, DType::F32);
  FTUNE_CHECK(t.shape() == gate.shape(), "{}: gate is {} but {} is {}", op,
              shape_str(gate.shape()), name, shape_str(t.shape()));
}
}  // namespace

void swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& out) {
  constexpr const char* op = "swiglu_forward";
  require_tensor(op, "gate", gate, DType::F32);
  check_same(op, "up", up, gate);
  check_same(op, "out", out, gate);
  const int64_t n = gate.numel();
  const float* g = gate.f32();
  const float* u = up.f32();
  float* o = out.f32();
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) o[i] = g[i] * sigmoid(g[i]) * u[i];
}

void swiglu_backward(const Tensor& dout, const Tensor& gate, const Tensor& up, Tensor& dgate,
                     Tensor& dup) {
  constexpr const char* op = "swiglu_backward";
  require_tensor(op, "gate", gate, DType::F32);
  check_same(op, "dout", dout, gate);
  check_same(op, "up", up, gate);
  check_same(op, "dgate", dgate, gate);
  check_same(op, "dup", dup, gate);
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
