// Rotary position embedding, half-split layout (HF apply_rotary_pos_emb with rotate_half), in
// place, as in src/backend/cpu/cpu_rope.cpp: for i < hd/2,
//   x'[i] = x[i] cos - x[i+hd/2] sin;  x'[i+hd/2] = x[i+hd/2] cos + x[i] sin.
// The backward is the same rotation with -sin. One thread per (token, head, i) pair; positions
// are range-checked on a host copy before the launch.
#include "backend/cuda/cuda_kernels.h"

namespace ftune::cuda {

namespace {

constexpr int kBlock = 256;

__global__ void rope_kernel(int64_t n, int64_t heads, int64_t half, float sign, float* x,
                            const int32_t* __restrict__ pos, const float* __restrict__ cos,
                            const float* __restrict__ sin) {
  const int64_t total = n * heads * half;
  for (int64_t w = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; w < total;
       w += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = w % half;
    const int64_t th = w / half;  // token * heads + head
    const int64_t t = th / heads;
    const int64_t p = pos[t];
    const float c = cos[p * half + i];
    const float si = sign * sin[p * half + i];
    float* row = x + th * 2 * half;
    const float a = row[i], b = row[i + half];
    row[i] = a * c - b * si;
    row[i + half] = b * c + a * si;
  }
}

void rope_apply(const CudaContext& ctx, const char* op, Tensor& x, const Tensor& positions,
                const Tensor& cos, const Tensor& sin, float sign) {
  const RopeDims d = check_rope(op, x, positions, cos, sin, ctx.dev());
  const int64_t n = d.n, heads = d.heads, half = d.half;
  require_indices(ctx, op, "positions", positions, d.table_len, "the rope table");
  const int64_t total = n * heads * half;
  if (total == 0) return;
  rope_kernel<<<grid_for(total, kBlock), kBlock, 0, ctx.stream>>>(
      n, heads, half, sign, x.f32(), positions.i32(), cos.f32(), sin.f32());
  check_launch(ctx, op);
}

}  // namespace

void rope_forward(const CudaContext& ctx, Tensor& x, const Tensor& positions, const Tensor& cos,
                  const Tensor& sin) {
  rope_apply(ctx, "rope_forward", x, positions, cos, sin, 1.0f);
}

void rope_backward(const CudaContext& ctx, Tensor& dx, const Tensor& positions, const Tensor& cos,
                   const Tensor& sin) {
  rope_apply(ctx, "rope_backward", dx, positions, cos, sin, -1.0f);
}

}  // namespace ftune::cuda
