// SwiGLU activation of the Llama MLP (HF LlamaMLP, act "silu"), elementwise, as in
// src/backend/cpu/cpu_mlp.cpp:
//   out = silu(g) * u, silu(g) = g * sigmoid(g);
//   dgate = dout * u * sigmoid(g) * (1 + g * (1 - sigmoid(g))),  dup = dout * silu(g).
#include "backend/cuda/cuda_kernels.h"

namespace ftune::cuda {

namespace {

constexpr int kBlock = 256;

__device__ inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

__global__ void swiglu_forward_kernel(int64_t n, const float* __restrict__ g,
                                      const float* __restrict__ u, float* out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = g[i] * sigmoid(g[i]) * u[i];
}

__global__ void swiglu_backward_kernel(int64_t n, const float* dout, const float* g, const float* u,
                                       float* dgate, float* dup) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float gi = g[i], ui = u[i], dy = dout[i];
    const float s = sigmoid(gi);
    dgate[i] = dy * ui * (s * (1.0f + gi * (1.0f - s)));
    dup[i] = dy * (gi * s);
  }
}
}  // namespace

void swiglu_forward(const CudaContext& ctx, const Tensor& gate, const Tensor& up, Tensor& out) {
  constexpr const char* op = "swiglu_forward";
  check_swiglu_forward(gate, up, out, ctx.dev());
  const int64_t n = gate.numel();
  if (n == 0) return;
  swiglu_forward_kernel<<<grid_for(n, kBlock), kBlock, 0, ctx.stream>>>(n, gate.f32(), up.f32(),
                                                                        out.f32());
  check_launch(ctx, op);
}

void swiglu_backward(const CudaContext& ctx, const Tensor& dout, const Tensor& gate,
                     const Tensor& up, Tensor& dgate, Tensor& dup) {
  constexpr const char* op = "swiglu_backward";
  check_swiglu_backward(dout, gate, up, dgate, dup, ctx.dev());
  const int64_t n = gate.numel();
  if (n == 0) return;
  // Each element is read before its outputs are written, so dgate/dup may alias the inputs.
  swiglu_backward_kernel<<<grid_for(n, kBlock), kBlock, 0, ctx.stream>>>(
      n, dout.f32(), gate.f32(), up.f32(), dgate.f32(), dup.f32());
  check_launch(ctx, op);
}

}  // namespace ftune::cuda
