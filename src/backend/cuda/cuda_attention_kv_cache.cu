// Attention of new queries against one sequence's KV cache (backend/ops.h,
// attention_kv_cache), for generation: query t (position past + t) attends to cache rows
// [0, past + t]; query head h reads kv head h / (nh/nkv). Reference: the CPU op
// (src/backend/cpu/cpu_attention_kv_cache.cpp), which tests/cuda compares against.
//
// One block per (query, head) row, split over the keys ("flash-decoding" inside a block): warp
// w walks keys w, w + kWarps, ... with the online softmax (running max and rescaled sums), the
// head dimension spread over its 32 lanes; the warps' partial (max, sum, weighted values) are
// then combined in shared memory. Decoding one token has only nh rows, so splitting the keys
// over warps is what keeps the SMs busy. Loads widen to fp32, math is fp32, o is rounded once.
#include <cmath>
#include <type_traits>

#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/device/float_types.cuh"
#include "backend/cuda/device/reduce.cuh"
#include "backend/cuda/dispatch.cuh"

namespace ftune::cuda {

namespace {

using device::from_f32;
using device::to_f32;

constexpr int kWarps = 8;
constexpr int kMaxHeadDim = 256;

struct KvDims {
  int64_t rows;  // T * nh
  int64_t past;
  int nh, nkv, hd, group;
};

// K = ceil(hd / 32) elements per lane: element c = lane + 32 e.
template <int K, typename T>
__global__ void attention_kv_cache_kernel(KvDims d, float scale, const T* __restrict__ q,
                                          const T* __restrict__ kc, const T* __restrict__ vc,
                                          T* __restrict__ o) {
  __shared__ float s_acc[kWarps][kMaxHeadDim];
  __shared__ float s_max[kWarps], s_sum[kWarps];
  const int64_t row = blockIdx.x;  // t * nh + h
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t t = row / d.nh;
  const int g = static_cast<int>(row % d.nh) / d.group;
  const int64_t last = d.past + t;
  float qv[K], acc[K];
#pragma unroll
  for (int e = 0; e < K; ++e) {
    const int c = lane + 32 * e;
    qv[e] = c < d.hd ? to_f32(q[row * d.hd + c]) : 0.0f;
    acc[e] = 0.0f;
  }
  float mx = -INFINITY, sum = 0.0f;
  for (int64_t j = warp; j <= last; j += kWarps) {
    const T* kj = kc + (j * d.nkv + g) * d.hd;
    float s = 0.0f;
#pragma unroll
    for (int e = 0; e < K; ++e) {
      const int c = lane + 32 * e;
      if (c < d.hd) s += qv[e] * to_f32(kj[c]);
    }
    s = scale * device::warp_sum(s);
    if (s > mx) {  // rescale what was summed so far to the new maximum
      const float corr = expf(mx - s);
      sum *= corr;
#pragma unroll
      for (int e = 0; e < K; ++e) acc[e] *= corr;
      mx = s;
    }
    const float p = expf(s - mx);
    sum += p;
    const T* vj = vc + (j * d.nkv + g) * d.hd;
#pragma unroll
    for (int e = 0; e < K; ++e) {
      const int c = lane + 32 * e;
      if (c < d.hd) acc[e] += p * to_f32(vj[c]);
    }
  }
#pragma unroll
  for (int e = 0; e < K; ++e) {
    const int c = lane + 32 * e;
    if (c < d.hd) s_acc[warp][c] = acc[e];
  }
  if (lane == 0) {
    s_max[warp] = mx;
    s_sum[warp] = sum;
  }
  __syncthreads();
  // Combine the warps: a warp that saw no key has max -inf and sum 0 (weight exp(-inf) = 0);
  // key 0 is always seen by warp 0, so the overall maximum is finite.
  float m = -INFINITY;
  for (int w = 0; w < kWarps; ++w) m = fmaxf(m, s_max[w]);
  float total = 0.0f;
  for (int w = 0; w < kWarps; ++w) total += s_sum[w] * expf(s_max[w] - m);
  const float inv = 1.0f / total;
  for (int c = threadIdx.x; c < d.hd; c += blockDim.x) {
    float v = 0.0f;
    for (int w = 0; w < kWarps; ++w) v += s_acc[w][c] * expf(s_max[w] - m);
    o[row * d.hd + c] = from_f32<T>(v * inv);
  }
}

// Calls f(std::integral_constant<int, K>) with the smallest K in {1, 2, 4, 8}, 32 K >= hd.
template <typename F>
void dispatch_lanes(int hd, F&& f) {
  if (hd <= 32)
    f(std::integral_constant<int, 1>{});
  else if (hd <= 64)
    f(std::integral_constant<int, 2>{});
  else if (hd <= 128)
    f(std::integral_constant<int, 4>{});
  else
    f(std::integral_constant<int, 8>{});
}

}  // namespace

void attention_kv_cache(const CudaContext& ctx, const Tensor& q, const Tensor& k_cache,
                        const Tensor& v_cache, int64_t past, float scale, Tensor& o) {
  constexpr const char* op = "attention_kv_cache";
  const AttentionDims a = check_attention_kv_cache(q, k_cache, v_cache, past, o, ctx.dev());
  FTUNE_CHECK(a.hd > 0 && a.hd <= kMaxHeadDim,
              "{}: head_dim {} is not supported by the CUDA kernel (1..{})", op, a.hd,
              kMaxHeadDim);
  FTUNE_CHECK(a.nh <= (1 << 16), "{}: {} heads are too many", op, a.nh);
  const int64_t rows = a.n * a.nh;
  FTUNE_CHECK(rows <= INT32_MAX, "{}: q {} exceeds the grid limit", op, shape_str(q.shape()));
  if (rows == 0) return;
  const KvDims d{rows, past, static_cast<int>(a.nh), static_cast<int>(a.nkv),
                 static_cast<int>(a.hd), static_cast<int>(a.group)};
  dispatch_float(a.act, op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_lanes(d.hd, [&](auto kc) {
      attention_kv_cache_kernel<decltype(kc)::value, T>
          <<<static_cast<unsigned>(rows), 32 * kWarps, 0, ctx.stream>>>(
              d, scale, q.data<T>(), k_cache.data<T>(), v_cache.data<T>(), o.data<T>());
    });
  });
  check_launch(ctx, op);
}

}  // namespace ftune::cuda
