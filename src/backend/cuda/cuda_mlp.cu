// SwiGLU activation of the Llama MLP (HF LlamaMLP, act "silu"), elementwise, as in
// src/backend/cpu/cpu_mlp.cpp:
//   out = silu(g) * u, silu(g) = g * sigmoid(g);
//   dgate = dout * u * sigmoid(g) * (1 + g * (1 - sigmoid(g))),  dup = dout * silu(g).
// Separate gate/up tensors, or one fused [N, 2F] buffer (gate = columns [0, F), up = [F, 2F),
// the output of one GEMM with stacked weights). fp32 math on F32/BF16/F16, 16-byte accesses when
// the row length and the pointers allow it. Every element is read before its outputs are
// written by the same thread, so outputs may alias inputs.
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/device/float_types.cuh"
#include "backend/cuda/dispatch.cuh"

namespace ftune::cuda {

namespace {

using device::Chunk;
using device::from_f32;
using device::load_chunk;
using device::store_chunk;
using device::to_f32;

constexpr int kBlock = 256;

__device__ inline float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// Rows of f elements: gate row r at g + r*g_stride, up row at u + r*u_stride, dense outputs.
// Chunks of W never straddle a row (f % W == 0).
struct SwigluLayout {
  int64_t rows, f, g_stride, u_stride, o_stride;
};

template <typename T, int W>
__global__ void swiglu_forward_kernel(SwigluLayout L, const T* g, const T* u, T* out) {
  const int64_t per_row = L.f / W, chunks = L.rows * per_row;
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < chunks;
       c += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = c / per_row, j = (c % per_row) * W;
    const Chunk<T, W> gv = load_chunk<T, W>(g + r * L.g_stride + j);
    const Chunk<T, W> uv = load_chunk<T, W>(u + r * L.u_stride + j);
    Chunk<T, W> ov;
#pragma unroll
    for (int e = 0; e < W; ++e) {
      const float gi = to_f32(gv.v[e]);
      ov.v[e] = from_f32<T>(gi * sigmoid(gi) * to_f32(uv.v[e]));
    }
    store_chunk<T, W>(out + r * L.o_stride + j, ov);
  }
}

// dout rows are dense ([rows, f]); dg/du rows use the gate/up strides.
template <typename T, int W>
__global__ void swiglu_backward_kernel(SwigluLayout L, const T* dout, const T* g, const T* u,
                                       T* dg, T* du) {
  const int64_t per_row = L.f / W, chunks = L.rows * per_row;
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < chunks;
       c += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = c / per_row, j = (c % per_row) * W;
    const Chunk<T, W> dv = load_chunk<T, W>(dout + r * L.o_stride + j);
    const Chunk<T, W> gv = load_chunk<T, W>(g + r * L.g_stride + j);
    const Chunk<T, W> uv = load_chunk<T, W>(u + r * L.u_stride + j);
    Chunk<T, W> dgv, duv;
#pragma unroll
    for (int e = 0; e < W; ++e) {
      const float gi = to_f32(gv.v[e]), ui = to_f32(uv.v[e]), dy = to_f32(dv.v[e]);
      const float s = sigmoid(gi);
      dgv.v[e] = from_f32<T>(dy * ui * (s * (1.0f + gi * (1.0f - s))));
      duv.v[e] = from_f32<T>(dy * (gi * s));
    }
    store_chunk<T, W>(dg + r * L.g_stride + j, dgv);
    store_chunk<T, W>(du + r * L.u_stride + j, duv);
  }
}

template <typename T, typename L>
void with_width(int64_t f, std::initializer_list<const void*> ptrs, L&& launch) {
  if (can_vectorize<T>(f, ptrs))
    launch(std::integral_constant<int, device::kVecWidth<T>>{});
  else
    launch(std::integral_constant<int, 1>{});
}

template <typename T>
void launch_forward(const CudaContext& ctx, const SwigluLayout& L, const T* g, const T* u,
                    T* out) {
  with_width<T>(L.f, {g, u, out}, [&](auto wc) {
    constexpr int W = decltype(wc)::value;
    const int64_t chunks = L.rows * (L.f / W);
    swiglu_forward_kernel<T, W><<<grid_for(chunks, kBlock), kBlock, 0, ctx.stream>>>(L, g, u, out);
  });
}

template <typename T>
void launch_backward(const CudaContext& ctx, const SwigluLayout& L, const T* dout, const T* g,
                     const T* u, T* dg, T* du) {
  with_width<T>(L.f, {dout, g, u, dg, du}, [&](auto wc) {
    constexpr int W = decltype(wc)::value;
    const int64_t chunks = L.rows * (L.f / W);
    swiglu_backward_kernel<T, W>
        <<<grid_for(chunks, kBlock), kBlock, 0, ctx.stream>>>(L, dout, g, u, dg, du);
  });
}

}  // namespace

void swiglu_forward(const CudaContext& ctx, const Tensor& gate, const Tensor& up, Tensor& out) {
  constexpr const char* op = "swiglu_forward";
  check_swiglu_forward(gate, up, out, ctx.dev());
  const int64_t n = gate.numel();
  if (n == 0) return;
  // One row of n elements.
  const SwigluLayout L{1, n, n, n, n};
  dispatch_float(gate.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_forward<T>(ctx, L, gate.data<T>(), up.data<T>(), out.data<T>());
  });
  check_launch(ctx, op);
}

void swiglu_backward(const CudaContext& ctx, const Tensor& dout, const Tensor& gate,
                     const Tensor& up, Tensor& dgate, Tensor& dup) {
  constexpr const char* op = "swiglu_backward";
  check_swiglu_backward(dout, gate, up, dgate, dup, ctx.dev());
  const int64_t n = gate.numel();
  if (n == 0) return;
  const SwigluLayout L{1, n, n, n, n};
  dispatch_float(gate.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_backward<T>(ctx, L, dout.data<T>(), gate.data<T>(), up.data<T>(), dgate.data<T>(),
                       dup.data<T>());
  });
  check_launch(ctx, op);
}

void swiglu_fused_forward(const CudaContext& ctx, const Tensor& gu, Tensor& out) {
  constexpr const char* op = "swiglu_fused_forward";
  const MatrixDims d = check_swiglu_fused_forward(gu, out, ctx.dev());
  const int64_t n = d.rows, f = d.cols;
  if (n * f == 0) return;
  const SwigluLayout L{n, f, 2 * f, 2 * f, f};
  dispatch_float(d.act, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* g = gu.data<T>();
    launch_forward<T>(ctx, L, g, g + f, out.data<T>());
  });
  check_launch(ctx, op);
}

void swiglu_fused_backward(const CudaContext& ctx, const Tensor& dout, const Tensor& gu,
                           Tensor& dgu) {
  constexpr const char* op = "swiglu_fused_backward";
  const MatrixDims d = check_swiglu_fused_backward(dout, gu, dgu, ctx.dev());
  const int64_t n = d.rows, f = d.cols;
  if (n * f == 0) return;
  const SwigluLayout L{n, f, 2 * f, 2 * f, f};
  dispatch_float(d.act, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* g = gu.data<T>();
    T* dg = dgu.data<T>();
    launch_backward<T>(ctx, L, dout.data<T>(), g, g + f, dg, dg + f);
  });
  check_launch(ctx, op);
}

}  // namespace ftune::cuda
