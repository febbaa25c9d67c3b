// Causal grouped-query attention over packed documents, straightforward (not yet flash): one
// warp per query row (token i, head h) for the forward and dq, one warp per key row (token j,
// kv head g) for dk/dv, each walking its document in order with the head dimension spread over
// the 32 lanes. Same semantics as the CPU reference (src/backend/cpu/cpu_attention.cpp):
//   token i attends to j in [doc_start[i], i]; query head h reads kv head h / (nh/nkv);
//   lse_i = log sum_j exp(scale q_i.k_j);  o_i = sum_j exp(scale q_i.k_j - lse_i) v_j.
// The forward uses the online softmax (running max and rescaled sums; Milakov & Gimelshein
// 2018), the backward recomputes P from lse (FlashAttention-2 backward):
//   P_ij = exp(scale q_i.k_j - lse_i), D_i = dO_i.O_i, dS_ij = P_ij (dO_i.v_j - D_i),
//   dq_i = scale sum_j dS_ij k_j,  dk_j = scale sum_{i,h in group} dS_ij q_i,
//   dv_j = sum_{i,h in group} P_ij dO_i.
// Every output element is summed by one warp in a fixed order: no atomics, same result on
// every run. Documents are contiguous (checked), so the tokens after j in its document are
// exactly the following tokens whose doc_start equals doc_start[j].
// Activations may be F32, BF16 or F16 (loaded to fp32, all math in fp32, outputs rounded once);
// BF16/F16 inputs with a head_dim that flash_attention.h compiles (16, 32, 64, 96, 128) and
// 16-byte aligned tensors go to the FlashAttention-2 kernels instead (tensor cores, O(N) memory,
// doc_start values trusted: no host copy, so no synchronisation); the kernels below are the
// fallback for everything else (F32, other head dims), which checks doc_start on a host copy.
#include <cmath>
#include <type_traits>

#include "backend/cuda/flash_attention.h"
#include "backend/cuda/cuda_kernels.h"
#include "backend/cuda/device/float_types.cuh"
#include "backend/cuda/device/reduce.cuh"
#include "backend/cuda/dispatch.cuh"

namespace ftune::cuda {

namespace {

using device::from_f32;
using device::to_f32;

constexpr int kWarpsPerBlock = 4;
constexpr int kMaxHeadDim = 256;

// Per-lane slice of a head_dim vector: element c = lane + 32 e for e < K (0 beyond hd).
template <int K>
struct LaneVec {
  float x[K];
  template <typename T>
  __device__ void load(const T* p, int hd, int lane) {
#pragma unroll
    for (int e = 0; e < K; ++e) {
      const int c = lane + 32 * e;
      x[e] = c < hd ? to_f32(p[c]) : 0.0f;
    }
  }
  template <typename T>
  __device__ void store(T* p, int hd, int lane) const {
#pragma unroll
    for (int e = 0; e < K; ++e) {
      const int c = lane + 32 * e;
      if (c < hd) p[c] = from_f32<T>(x[e]);
    }
  }
  __device__ void fill(float v) {
#pragma unroll
    for (int e = 0; e < K; ++e) x[e] = v;
  }
  // Full dot product with a vector in global memory, reduced over the warp (all lanes get it).
  template <typename T>
  __device__ float dot(const T* p, int hd, int lane) const {
    float s = 0.0f;
#pragma unroll
    for (int e = 0; e < K; ++e) {
      const int c = lane + 32 * e;
      if (c < hd) s += x[e] * to_f32(p[c]);
    }
    return device::warp_sum(s);
  }
  // this += a * p (p in global memory).
  template <typename T>
  __device__ void add_scaled(float a, const T* p, int hd, int lane) {
#pragma unroll
    for (int e = 0; e < K; ++e) {
      const int c = lane + 32 * e;
      if (c < hd) x[e] += a * to_f32(p[c]);
    }
  }
};

struct AttnDims {
  int64_t n;
  int nh, nkv, hd, group;
};

template <int K, typename T>
__global__ void attention_forward_kernel(AttnDims d, float scale, const T* __restrict__ q,
                                         const T* __restrict__ k, const T* __restrict__ v,
                                         const int32_t* __restrict__ ds, T* o, float* lse) {
  const int64_t row = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;  // warp-uniform
  const int lane = threadIdx.x & 31;
  if (row >= d.n * d.nh) return;
  const int64_t i = row / d.nh;
  const int g = static_cast<int>(row % d.nh) / d.group;
  LaneVec<K> qi, acc;
  qi.load(q + row * d.hd, d.hd, lane);
  acc.fill(0.0f);
  float mx = -INFINITY, sum = 0.0f;
  // max(.., 0): memory-safe on unchecked bad values (ctx.check_values off).
  for (int64_t j = (ds[i] > 0 ? static_cast<int64_t>(ds[i]) : int64_t{0}); j <= i; ++j) {
    const int64_t kv = (j * d.nkv + g) * d.hd;
    const float s = scale * qi.dot(k + kv, d.hd, lane);
    if (s > mx) {  // rescale what was summed so far to the new maximum
      const float corr = expf(mx - s);
      sum *= corr;
#pragma unroll
      for (int e = 0; e < K; ++e) acc.x[e] *= corr;
      mx = s;
    }
    const float p = expf(s - mx);
    sum += p;
    acc.add_scaled(p, v + kv, d.hd, lane);
  }
  const float inv = 1.0f / sum;
#pragma unroll
  for (int e = 0; e < K; ++e) acc.x[e] *= inv;
  acc.store(o + row * d.hd, d.hd, lane);
  if (lane == 0) lse[row] = mx + logf(sum);
}

// dq for query row (i, h), and D_i = dO_i . O_i saved for the dk/dv kernel.
template <int K, typename T>
__global__ void attention_backward_dq_kernel(
    AttnDims d, float scale, const T* __restrict__ q, const T* __restrict__ k,
    const T* __restrict__ v, const T* __restrict__ o, const float* __restrict__ lse,
    const T* __restrict__ d_o, const int32_t* __restrict__ ds, T* dq, float* delta) {
  const int64_t row = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (row >= d.n * d.nh) return;
  const int64_t i = row / d.nh;
  const int g = static_cast<int>(row % d.nh) / d.group;
  LaneVec<K> qi, gi, acc;
  qi.load(q + row * d.hd, d.hd, lane);
  gi.load(d_o + row * d.hd, d.hd, lane);
  const float di = gi.dot(o + row * d.hd, d.hd, lane);
  if (lane == 0) delta[row] = di;
  const float li = lse[row];
  acc.fill(0.0f);
  for (int64_t j = (ds[i] > 0 ? static_cast<int64_t>(ds[i]) : int64_t{0}); j <= i; ++j) {
    const int64_t kv = (j * d.nkv + g) * d.hd;
    const float p = expf(scale * qi.dot(k + kv, d.hd, lane) - li);
    const float dsc = scale * (p * (gi.dot(v + kv, d.hd, lane) - di));
    acc.add_scaled(dsc, k + kv, d.hd, lane);
  }
  acc.store(dq + row * d.hd, d.hd, lane);
}

// dk, dv for key row (j, g): every later query of j's document, every head of group g.
template <int K, typename T>
__global__ void attention_backward_dkv_kernel(
    AttnDims d, float scale, const T* __restrict__ q, const T* __restrict__ k,
    const T* __restrict__ v, const float* __restrict__ lse, const T* __restrict__ d_o,
    const float* __restrict__ delta, const int32_t* __restrict__ ds, T* dk, T* dv) {
  const int64_t row = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32;
  const int lane = threadIdx.x & 31;
  if (row >= d.n * d.nkv) return;
  const int64_t j = row / d.nkv;
  const int g = static_cast<int>(row % d.nkv);
  LaneVec<K> kj, vj, dkj, dvj;
  kj.load(k + row * d.hd, d.hd, lane);
  vj.load(v + row * d.hd, d.hd, lane);
  dkj.fill(0.0f);
  dvj.fill(0.0f);
  const int32_t doc = ds[j];
  for (int64_t i = j; i < d.n && ds[i] == doc; ++i) {
    for (int h = g * d.group; h < (g + 1) * d.group; ++h) {
      const int64_t qrow = i * d.nh + h;
      const T* qi = q + qrow * d.hd;
      const T* gi = d_o + qrow * d.hd;
      const float p = expf(scale * kj.dot(qi, d.hd, lane) - lse[qrow]);
      const float dsc = scale * (p * (vj.dot(gi, d.hd, lane) - delta[qrow]));
      dkj.add_scaled(dsc, qi, d.hd, lane);
      dvj.add_scaled(p, gi, d.hd, lane);
    }
  }
  dkj.store(dk + row * d.hd, d.hd, lane);
  dvj.store(dv + row * d.hd, d.hd, lane);
}

// The CUDA-only limits on top of the shared checks (head_dim that the lane slices hold, int
// head counts, the grid size), then doc_start's values on a host copy.
AttnDims check_cuda_attention(const CudaContext& ctx, const char* op, const AttentionDims& a,
                              const Tensor& q, const Tensor& doc_start) {
  FTUNE_CHECK(a.hd > 0 && a.hd <= kMaxHeadDim,
              "{}: head_dim {} is not supported by the CUDA attention kernel (1..{})", op, a.hd,
              kMaxHeadDim);
  FTUNE_CHECK(a.nh <= (1 << 16), "{}: {} heads are too many", op, a.nh);
  const int64_t warps = a.n * a.nh;
  FTUNE_CHECK((warps + kWarpsPerBlock - 1) / kWarpsPerBlock <= INT32_MAX,
              "{}: q {} exceeds the grid limit", op, shape_str(q.shape()));
  require_doc_start_values(ctx, op, doc_start);
  return AttnDims{a.n, static_cast<int>(a.nh), static_cast<int>(a.nkv), static_cast<int>(a.hd),
                  static_cast<int>(a.group)};
}

constexpr size_t kDescribedDocuments = 8;

// The described documents of doc_start (describe_documents), or null.
Workspaces::DescribedDocuments* find_documents(const CudaContext& ctx, const Tensor& doc_start) {
  if (ctx.ws == nullptr) return nullptr;
  for (auto& d : ctx.ws->documents)
    if (d.doc_start.raw() == doc_start.raw() && d.doc_start.numel() == doc_start.numel()) return &d;
  return nullptr;
}

// The device arrays cuDNN reads for heads (nh, nkv) of head dim hd: the lengths and the ragged
// offsets of q/o, k/v and lse (made on first use for these dims, on ctx.stream).
CudnnRagged ragged_for(const CudaContext& ctx, Workspaces::DescribedDocuments& d, int nh,
                       int nkv, int hd) {
  const int64_t batch = d.docs.batch;
  const int32_t* lengths = d.index.i32();
  const int32_t* cu = lengths + batch;
  auto [it, fresh] = d.offsets.try_emplace(std::make_tuple(nh, nkv, hd));
  if (fresh) {
    it->second = Tensor::empty({3 * (batch + 1)}, DType::I32, Device::cuda(ctx.device));
    cudnn_scale_offsets(cu, batch, nh, nkv, hd, it->second.i32(), ctx.stream);
  }
  const int32_t* off = it->second.i32();
  return CudnnRagged{lengths, off, off + (batch + 1), off + 2 * (batch + 1)};
}

// Whether the FlashAttention kernels take this call (see the header).
bool use_flash(const AttentionDims& a, std::initializer_list<const void*> ptrs) {
  return (a.act == DType::BF16 || a.act == DType::F16) && a.nh <= (1 << 16) &&
         a.hd <= kMaxHeadDim && flash_attention_supported(static_cast<int>(a.hd)) &&
         all_aligned(ptrs, 16);
}

unsigned warp_grid(int64_t warps) {
  return static_cast<unsigned>((warps + kWarpsPerBlock - 1) / kWarpsPerBlock);
}

// Calls f(std::integral_constant<int, K>) with the smallest K in {1, 2, 4, 8}, 32 K >= hd.
template <typename F>
void dispatch_head_dim(int hd, F&& f) {
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

void describe_documents(const CudaContext& ctx, const Tensor& doc_start,
                        const std::vector<int32_t>& host) {
  if (ctx.ws == nullptr || !cudnn_attention_enabled()) return;
  FTUNE_CHECK(static_cast<int64_t>(host.size()) == doc_start.numel(),
              "describe_documents: {} host values for a doc_start of {}", host.size(),
              doc_start.numel());
  auto& list = ctx.ws->documents;
  for (auto it = list.begin(); it != list.end();)
    it = it->doc_start.raw() == doc_start.raw() ? list.erase(it) : it + 1;
  if (list.size() >= kDescribedDocuments) list.erase(list.begin());
  Workspaces::DescribedDocuments d;
  d.doc_start = doc_start;
  d.docs = cudnn_documents(host);
  std::vector<int32_t> index(d.docs.lengths);
  index.insert(index.end(), d.docs.cu_tokens.begin(), d.docs.cu_tokens.end());
  d.index = Tensor::from_ints(index, {static_cast<int64_t>(index.size())}).to(ctx.dev());
  list.push_back(std::move(d));
}

void attention_forward(const CudaContext& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                       const Tensor& doc_start, float scale, Tensor& o, Tensor& lse) {
  constexpr const char* op = "attention_forward";
  const AttentionDims a = check_attention_forward(q, k, v, doc_start, o, lse, ctx.dev());
  if (use_flash(a, {q.raw(), k.raw(), v.raw(), o.raw()})) {
    if (a.n == 0) return;
    const int nh = static_cast<int>(a.nh), nkv = static_cast<int>(a.nkv);
    const int hd = static_cast<int>(a.hd);
    if (auto* d = find_documents(ctx, doc_start)) {
      if (cudnn_attention_forward(ctx, d->docs, ragged_for(ctx, *d, nh, nkv, hd), a.act, q.raw(),
                                  k.raw(), v.raw(), nh, nkv, hd, scale, o.raw(), lse.f32()))
        return;
    }
    dispatch_float(a.act, op, [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (!std::is_same_v<T, float>)
        flash_attention_forward<T>(q.data<T>(), k.data<T>(), v.data<T>(), doc_start.i32(), a.n,
                                   static_cast<int>(a.nh), static_cast<int>(a.nkv),
                                   static_cast<int>(a.hd), scale, o.data<T>(), lse.f32(),
                                   ctx.stream);
    });
    check_launch(ctx, op);
    return;
  }
  const AttnDims d = check_cuda_attention(ctx, op, a, q, doc_start);
  if (d.n == 0) return;
  constexpr int block = 32 * kWarpsPerBlock;
  dispatch_float(q.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_head_dim(d.hd, [&](auto kc) {
      attention_forward_kernel<decltype(kc)::value, T>
          <<<warp_grid(d.n * d.nh), block, 0, ctx.stream>>>(d, scale, q.data<T>(), k.data<T>(),
                                                            v.data<T>(), doc_start.i32(),
                                                            o.data<T>(), lse.f32());
    });
  });
  check_launch(ctx, op);
}

void attention_backward(const CudaContext& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                        const Tensor& o, const Tensor& lse, const Tensor& d_o,
                        const Tensor& doc_start, float scale, Tensor& dq, Tensor& dk, Tensor& dv) {
  constexpr const char* op = "attention_backward";
  const AttentionDims a =
      check_attention_backward(q, k, v, o, lse, d_o, doc_start, dq, dk, dv, ctx.dev());
  if (use_flash(a, {q.raw(), k.raw(), v.raw(), o.raw(), d_o.raw(), dq.raw(), dk.raw(),
                    dv.raw()})) {
    if (a.n == 0) return;
    FTUNE_CHECK(ctx.ws != nullptr, "{}: no workspaces", op);
    const int nh = static_cast<int>(a.nh), nkv = static_cast<int>(a.nkv);
    const int hd = static_cast<int>(a.hd);
    if (auto* d = find_documents(ctx, doc_start)) {
      if (cudnn_attention_backward(ctx, d->docs, ragged_for(ctx, *d, nh, nkv, hd), a.act, q.raw(),
                                   k.raw(), v.raw(), o.raw(), lse.f32(), d_o.raw(), nh, nkv, hd,
                                   scale, dq.raw(), dk.raw(), dv.raw()))
        return;
    }
    const size_t bytes = flash_attention_workspace_bytes(a.n, nh, nkv, hd);
    Tensor ws = workspace_view(ctx.ws->attn_workspace, {static_cast<int64_t>(bytes)}, DType::U8,
                               ctx.device);
    dispatch_float(a.act, op, [&](auto tag) {
      using T = typename decltype(tag)::type;
      if constexpr (!std::is_same_v<T, float>)
        flash_attention_backward<T>(q.data<T>(), k.data<T>(), v.data<T>(), o.data<T>(),
                                    lse.f32(), d_o.data<T>(), doc_start.i32(), a.n, nh, nkv, hd,
                                    scale, dq.data<T>(), dk.data<T>(), dv.data<T>(), ws.raw(),
                                    ctx.stream);
    });
    check_launch(ctx, op);
    return;
  }
  const AttnDims d = check_cuda_attention(ctx, op, a, q, doc_start);
  if (d.n == 0) return;
  Tensor delta = Tensor::empty({d.n, d.nh}, DType::F32, Device::cuda(ctx.device));
  constexpr int block = 32 * kWarpsPerBlock;
  dispatch_float(q.dtype(), op, [&](auto tag) {
    using T = typename decltype(tag)::type;
    dispatch_head_dim(d.hd, [&](auto kc) {
      constexpr int K = decltype(kc)::value;
      attention_backward_dq_kernel<K, T><<<warp_grid(d.n * d.nh), block, 0, ctx.stream>>>(
          d, scale, q.data<T>(), k.data<T>(), v.data<T>(), o.data<T>(), lse.f32(), d_o.data<T>(),
          doc_start.i32(), dq.data<T>(), delta.f32());
      check_launch(ctx, op);
      attention_backward_dkv_kernel<K, T><<<warp_grid(d.n * d.nkv), block, 0, ctx.stream>>>(
          d, scale, q.data<T>(), k.data<T>(), v.data<T>(), lse.f32(), d_o.data<T>(), delta.f32(),
          doc_start.i32(), dk.data<T>(), dv.data<T>());
      check_launch(ctx, op);
    });
  });
}

}  // namespace ftune::cuda
