// Flash-attention backward kernels (FlashAttention-2, Dao 2023, Algorithm 2) for causal GQA over
// packed documents, key-block-major:
//  1. flash_delta_kernel: D_i = dO_i . O_i per (token, head), fp32, into the workspace.
//  2. flash_schedule_kernel: the key blocks sorted by their work, heaviest first.
//  3. flash_backward_kernel: one CTA per (block of BN keys [j0, j1), kv head), each warp owning
//     16 keys. The queries that can see those keys are [j0, doc_end(j1 - 1)) (documents are
//     contiguous); the CTA walks them in blocks of BM for every query head of the kv head's
//     group, with Q/dO tiles (and lse, D, doc_start) double-buffered by cp.async. Per block,
//     transposed so that the keys are the rows the warps own:
//       S^T = K Q^T, P^T = exp(scale S^T - lse) (masked: doc_start[i] <= j <= i),
//       dP^T = V dO^T, dS^T = P^T (dP^T - D),
//       dV += P^T dO, dK += dS^T Q   (fp32 registers, written once at the end),
//       dQ += dS K                   (dS^T through shared memory; fp32 atomics into the workspace).
//  4. flash_convert_kernel: dq = scale * workspace accumulator, in T.
// P^T and dS^T go into the tensor cores as 16-bit values, as in FlashAttention-2.
// Semantics: flash_attention.h.
#pragma once
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "backend/cuda/device/flash_common.cuh"
#include "backend/cuda/device/mma.cuh"
#include "backend/cuda/device/reduce.cuh"

namespace ftune::device {

template <typename T>
struct BwdParams {
  const T* q;
  const T* k;
  const T* v;
  const T* d_o;
  const float* lse;
  const float* delta;  // D [n, nh]
  const int32_t* doc_start;
  const int* order;  // key blocks, heaviest first (flash_schedule_kernel)
  float* dq_acc;     // [n, nh, hd], zeroed; receives sum_j dS_ij k_j (unscaled)
  T* dk;
  T* dv;
  int n, nh, nkv, group;
  float scale, scale_log2;
};

// BN keys per CTA (16 per warp), BM queries per step. The fp32 dK and dV accumulators take HD
// registers per thread (2 x 16 keys x HD over 32 lanes), so large head dims use narrower query
// steps (S^T and dP^T take BM / 2 each).
// hd 128 takes 128 keys per CTA (8 warps, one CTA per SM by registers, as FlashAttention-2 does):
// half the dq atomics and Q/dO tile loads per flop of 64-key CTAs (the other head dims, two
// CTAs per SM). The dQ step needs kDch % 16 == 0, which rules 8 warps out for hd 96.
template <int HD>
struct BwdConfig {
  static constexpr int kWarps = HD == 128 ? 8 : 4;
  static constexpr int kBN = 16 * kWarps;
  static constexpr int kBM = HD >= 96 ? 32 : 64;
  static constexpr int kLd = HD + 8;    // padded rows of the Q, dO, K, V tiles
  static constexpr int kLdS = kBM + 8;  // padded rows of the dS^T tile
  // dQ step: warps tile the BM x HD output as (BM / 16) x (kWarps / (BM / 16)).
  static constexpr int kMw = kBM / 16;
  static constexpr int kDw = kWarps / kMw;
  static constexpr int kDch = HD / kDw;  // head-dim columns per warp in the dQ step
  static_assert(kWarps % kMw == 0 && kDch % 16 == 0, "dQ tiling");
  static constexpr int kSmemBytes =
      (2 * kBN * kLd + 4 * kBM * kLd + kBN * kLdS) * 2  // K, V, Q[2], dO[2], dS^T (16-bit)
      + 2 * 3 * kBM * 4                                 // lse[2], D[2], doc_start[2]
      + 16;                                             // the query range's end
};

// One past the last token of token j's document: the first index past j whose doc_start is past
// j (a monotone predicate, documents being contiguous), by binary search.
__device__ inline int flash_document_end(const int32_t* doc_start, int n, int j) {
  int lo = j + 1, hi = n;
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    if (doc_start[mid] > j)
      hi = mid;
    else
      lo = mid + 1;
  }
  return lo;
}

// The backward CTAs' work varies a lot: key block kb of a document is seen by every later query
// of it. Starting the heaviest first keeps the last wave short (longest-processing-time-first
// list scheduling: within a few percent of the ideal makespan, vs ~30% for document order with
// many packed documents). This single-CTA kernel writes the key blocks into order[0, nkb) by
// decreasing number of query steps, bucketed in quarter octaves (the order within a bucket is
// arbitrary). Dynamic shared memory: kFlashScheduleBins ints.
constexpr int kFlashScheduleBins = 80;

template <int BN, int BM>
__device__ inline int flash_schedule_bin(const int32_t* doc_start, int n, int kb) {
  const int j0 = kb * BN, j1 = min(j0 + BN, n);
  const int steps = (flash_document_end(doc_start, n, j1 - 1) - j0 + BM - 1) / BM;
  const int bin = static_cast<int>(4.0f * log2f(static_cast<float>(steps)));
  return min(bin, kFlashScheduleBins - 1);
}

template <int BN, int BM>
__global__ void flash_schedule_kernel(const int32_t* __restrict__ doc_start, int n,
                                      int* __restrict__ order) {
  extern __shared__ uint4 smem_raw[];
  int* slot = reinterpret_cast<int*>(smem_raw);  // per bin: its count, then its next position
  const int nkb = (n + BN - 1) / BN;
  for (int b = threadIdx.x; b < kFlashScheduleBins; b += blockDim.x) slot[b] = 0;
  __syncthreads();
  for (int kb = threadIdx.x; kb < nkb; kb += blockDim.x)
    atomicAdd(&slot[flash_schedule_bin<BN, BM>(doc_start, n, kb)], 1);
  __syncthreads();
  if (threadIdx.x == 0) {
    int next = 0;
    for (int b = kFlashScheduleBins - 1; b >= 0; --b) {
      const int count = slot[b];
      slot[b] = next;
      next += count;
    }
  }
  __syncthreads();
  for (int kb = threadIdx.x; kb < nkb; kb += blockDim.x)
    order[atomicAdd(&slot[flash_schedule_bin<BN, BM>(doc_start, n, kb)], 1)] = kb;
}

// D_i = dO_i . O_i for every (token, head) row: one warp per row.
template <typename T>
__global__ void flash_delta_kernel(const T* __restrict__ o, const T* __restrict__ d_o,
                                   float* __restrict__ delta, int64_t rows, int hd) {
  using M = MmaTraits<T>;
  const int lane = threadIdx.x & 31;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x >> 5);
  for (int64_t r = (blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x) >> 5; r < rows;
       r += warps) {
    const T* a = o + r * hd;
    const T* b = d_o + r * hd;
    float s = 0.0f;
    for (int c = lane; c < hd; c += 32) s += M::to_float(a[c]) * M::to_float(b[c]);
    s = warp_sum(s);
    if (lane == 0) delta[r] = s;
  }
}

// dq = scale * acc, converted to T.
template <typename T>
__global__ void flash_convert_kernel(const float* __restrict__ acc, T* __restrict__ dq,
                                     int64_t count, float scale) {
  using M = MmaTraits<T>;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += stride)
    dq[i] = M::from_float(scale * acc[i]);
}

template <typename T, int HD>
__global__ void __launch_bounds__(BwdConfig<HD>::kWarps * 32)
    flash_backward_kernel(const BwdParams<T> p) {
  using Cfg = BwdConfig<HD>;
  using M = MmaTraits<T>;
  constexpr int kThreads = Cfg::kWarps * 32, BM = Cfg::kBM, BN = Cfg::kBN;
  constexpr int LD = Cfg::kLd, LDS = Cfg::kLdS;
  constexpr int KQ = HD / 16;        // k-steps over the head dim
  constexpr int NS = BM / 8;         // n-blocks (queries) of S^T per warp
  constexpr int NO = HD / 8;         // n-blocks of dK, dV per warp
  constexpr int NQ = Cfg::kDch / 8;  // n-blocks of the dQ step per warp

  extern __shared__ uint4 smem_raw[];
  T* k_s = reinterpret_cast<T*>(smem_raw);
  T* v_s = k_s + BN * LD;
  T* q_s = v_s + BN * LD;                                     // two buffers of BM x LD
  T* do_s = q_s + 2 * BM * LD;                                // two buffers of BM x LD
  T* dst_s = do_s + 2 * BM * LD;                              // dS^T, BN x LDS
  float* lse_s = reinterpret_cast<float*>(dst_s + BN * LDS);  // two buffers of BM
  float* delta_s = lse_s + 2 * BM;                            // two buffers of BM
  int* ds_s = reinterpret_cast<int*>(delta_s + 2 * BM);       // two buffers of BM
  int& qend_s = ds_s[2 * BM];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t = lane & 3;
  // 1-D grid, kv heads fastest: CTA b takes the (b / nkv)-th heaviest key block.
  const int kvh = static_cast<int>(blockIdx.x % p.nkv);
  const int j0 = p.order[blockIdx.x / p.nkv] * BN;
  const int j1 = min(j0 + BN, p.n);

  // The queries seeing keys [j0, j1) end with the last key's document.
  if (tid == 0) qend_s = flash_document_end(p.doc_start, p.n, j1 - 1);

  const int64_t q_stride = static_cast<int64_t>(p.nh) * HD;
  const int64_t kv_stride = static_cast<int64_t>(p.nkv) * HD;
  flash_load_tile<HD, BN, kThreads>(k_s, p.k + static_cast<int64_t>(kvh) * HD, kv_stride, j0, j1);
  flash_load_tile<HD, BN, kThreads>(v_s, p.v + static_cast<int64_t>(kvh) * HD, kv_stride, j0, j1);
  __syncthreads();  // qend_s
  const int qend = qend_s;
  const int nqb = (qend - j0 + BM - 1) / BM;
  const int iters = p.group * nqb;

  // Step `it`: query head kvh * group + it / nqb, queries q0 = j0 + (it % nqb) * BM onwards.
  auto load_step = [&](int it, int buf) {
    const int h = kvh * p.group + it / nqb;
    const int q0 = j0 + (it % nqb) * BM;
    flash_load_tile<HD, BM, kThreads>(q_s + buf * BM * LD, p.q + static_cast<int64_t>(h) * HD,
                                      q_stride, q0, qend);
    flash_load_tile<HD, BM, kThreads>(do_s + buf * BM * LD, p.d_o + static_cast<int64_t>(h) * HD,
                                      q_stride, q0, qend);
    for (int c = tid; c < 3 * BM; c += kThreads) {
      const int which = c / BM, col = c % BM;
      const int i = q0 + col;
      const bool valid = i < qend;
      const int64_t row = valid ? static_cast<int64_t>(i) * p.nh + h : 0;
      if (which == 0)
        cp_async_4(lse_s + buf * BM + col, p.lse + row, valid);
      else if (which == 1)
        cp_async_4(delta_s + buf * BM + col, p.delta + row, valid);
      else
        cp_async_4(ds_s + buf * BM + col, p.doc_start + (valid ? i : 0), valid);
    }
  };
  load_step(0, 0);
  cp_async_commit();

  float dk[NO][4], dv[NO][4];
#pragma unroll
  for (int nb = 0; nb < NO; ++nb) {
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[nb][e] = dv[nb][e] = 0.0f;
  }
  const int key_lo = j0 + warp * 16 + g, key_hi = key_lo + 8;  // this thread's C-fragment rows

  for (int it = 0; it < iters; ++it) {
    const int buf = it & 1;
    cp_async_wait<0>();
    __syncthreads();  // step it is in; all warps are done with step it-1 (buffers and dS^T)
    if (it + 1 < iters) {
      load_step(it + 1, buf ^ 1);
      cp_async_commit();
    }
    const int h = kvh * p.group + it / nqb;
    const int q0 = j0 + (it % nqb) * BM;
    const T* qc = q_s + buf * BM * LD;
    const T* doc = do_s + buf * BM * LD;
    const float* lse_c = lse_s + buf * BM;
    const float* delta_c = delta_s + buf * BM;
    const int* ds_c = ds_s + buf * BM;

    // S^T = K Q^T and dP^T = V dO^T (16 keys x BM queries per warp).
    float st[NS][4], dpt[NS][4];
#pragma unroll
    for (int nb = 0; nb < NS; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) st[nb][e] = dpt[nb][e] = 0.0f;
    }
#pragma unroll
    for (int kk = 0; kk < KQ; ++kk) {
      uint32_t a[4];
      ldmatrix_x4(a, k_s + a_frag_offset(lane, LD, warp * 16, kk * 16));
#pragma unroll
      for (int np = 0; np < NS / 2; ++np) {
        uint32_t b[4];
        ldmatrix_x4(b, qc + b_frag_offset(lane, LD, np * 16, kk * 16));
        M::mma(st[2 * np], a, b[0], b[1]);
        M::mma(st[2 * np + 1], a, b[2], b[3]);
      }
      ldmatrix_x4(a, v_s + a_frag_offset(lane, LD, warp * 16, kk * 16));
#pragma unroll
      for (int np = 0; np < NS / 2; ++np) {
        uint32_t b[4];
        ldmatrix_x4(b, doc + b_frag_offset(lane, LD, np * 16, kk * 16));
        M::mma(dpt[2 * np], a, b[0], b[1]);
        M::mma(dpt[2 * np + 1], a, b[2], b[3]);
      }
    }

    // P^T and dS^T in place. Every pair is visible when all BN keys exist, precede the first
    // query, and follow every query's doc start; else mask per element (queries past qend too).
    const bool full = j1 == j0 + BN && q0 >= j0 + BN - 1 && q0 + BM <= qend && ds_c[BM - 1] <= j0;
#pragma unroll
    for (int nb = 0; nb < NS; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int col = nb * 8 + 2 * t + (e & 1);
        float pv = exp2f(st[nb][e] * p.scale_log2 - lse_c[col] * kFlashLog2e);
        if (!full) {
          const int i = q0 + col;
          const int j = e < 2 ? key_lo : key_hi;
          if (!(i < qend && ds_c[col] <= j && j <= i)) pv = 0.0f;
        }
        st[nb][e] = pv;
        dpt[nb][e] = pv * (dpt[nb][e] - delta_c[col]);
      }
    }

    // dS^T to shared memory for the dQ step (this warp's 16 rows).
#pragma unroll
    for (int nb = 0; nb < NS; ++nb) {
      T* row_lo = dst_s + (warp * 16 + g) * LDS + nb * 8 + 2 * t;
      *reinterpret_cast<uint32_t*>(row_lo) = M::pack(dpt[nb][0], dpt[nb][1]);
      *reinterpret_cast<uint32_t*>(row_lo + 8 * LDS) = M::pack(dpt[nb][2], dpt[nb][3]);
    }

    // dV += P^T dO and dK += dS^T Q: the S^T accumulators of n-blocks 2kq, 2kq+1 are the A
    // fragment of k-step kq (queries 16kq..16kq+15).
#pragma unroll
    for (int kq = 0; kq < BM / 16; ++kq) {
      uint32_t a[4];
      a[0] = M::pack(st[2 * kq][0], st[2 * kq][1]);
      a[1] = M::pack(st[2 * kq][2], st[2 * kq][3]);
      a[2] = M::pack(st[2 * kq + 1][0], st[2 * kq + 1][1]);
      a[3] = M::pack(st[2 * kq + 1][2], st[2 * kq + 1][3]);
#pragma unroll
      for (int dp = 0; dp < NO / 2; ++dp) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, doc + a_frag_offset(lane, LD, kq * 16, dp * 16));
        M::mma(dv[2 * dp], a, b[0], b[1]);
        M::mma(dv[2 * dp + 1], a, b[2], b[3]);
      }
      a[0] = M::pack(dpt[2 * kq][0], dpt[2 * kq][1]);
      a[1] = M::pack(dpt[2 * kq][2], dpt[2 * kq][3]);
      a[2] = M::pack(dpt[2 * kq + 1][0], dpt[2 * kq + 1][1]);
      a[3] = M::pack(dpt[2 * kq + 1][2], dpt[2 * kq + 1][3]);
#pragma unroll
      for (int dp = 0; dp < NO / 2; ++dp) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, qc + a_frag_offset(lane, LD, kq * 16, dp * 16));
        M::mma(dk[2 * dp], a, b[0], b[1]);
        M::mma(dk[2 * dp + 1], a, b[2], b[3]);
      }
    }
    __syncthreads();  // dS^T complete

    // dQ (BM x HD) += dS K: warp (mq, dw) takes queries 16mq.. and head-dim columns dw*kDch..;
    // A = dS, read transposed from dS^T; B = K, stored [key][dim].
    {
      const int mq = warp % Cfg::kMw, dw = warp / Cfg::kMw;
      float dq[NQ][4];
#pragma unroll
      for (int nb = 0; nb < NQ; ++nb) dq[nb][0] = dq[nb][1] = dq[nb][2] = dq[nb][3] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < BN / 16; ++kk) {
        uint32_t a[4];
        ldmatrix_x4_trans(a, dst_s + b_frag_offset(lane, LDS, kk * 16, mq * 16));
#pragma unroll
        for (int dp = 0; dp < NQ / 2; ++dp) {
          uint32_t b[4];
          ldmatrix_x4_trans(b, k_s + a_frag_offset(lane, LD, kk * 16, dw * Cfg::kDch + dp * 16));
          M::mma(dq[2 * dp], a, b[0], b[1]);
          M::mma(dq[2 * dp + 1], a, b[2], b[3]);
        }
      }
      const int i_lo = q0 + mq * 16 + g, i_hi = i_lo + 8;
      float* acc_lo =
          p.dq_acc + (static_cast<int64_t>(i_lo) * p.nh + h) * HD + dw * Cfg::kDch + 2 * t;
      float* acc_hi =
          p.dq_acc + (static_cast<int64_t>(i_hi) * p.nh + h) * HD + dw * Cfg::kDch + 2 * t;
#pragma unroll
      for (int nb = 0; nb < NQ; ++nb) {
#if __CUDA_ARCH__ >= 900
        if (i_lo < qend)
          atomicAdd(reinterpret_cast<float2*>(acc_lo + nb * 8), make_float2(dq[nb][0], dq[nb][1]));
        if (i_hi < qend)
          atomicAdd(reinterpret_cast<float2*>(acc_hi + nb * 8), make_float2(dq[nb][2], dq[nb][3]));
#else
        if (i_lo < qend) {
          atomicAdd(acc_lo + nb * 8, dq[nb][0]);
          atomicAdd(acc_lo + nb * 8 + 1, dq[nb][1]);
        }
        if (i_hi < qend) {
          atomicAdd(acc_hi + nb * 8, dq[nb][2]);
          atomicAdd(acc_hi + nb * 8 + 1, dq[nb][3]);
        }
#endif
      }
    }
  }

  // dK = scale * sum dS^T Q, dV = sum P^T dO; each CTA owns its keys' rows.
  T* dk_lo = p.dk + (static_cast<int64_t>(key_lo) * p.nkv + kvh) * HD + 2 * t;
  T* dk_hi = p.dk + (static_cast<int64_t>(key_hi) * p.nkv + kvh) * HD + 2 * t;
  T* dv_lo = p.dv + (static_cast<int64_t>(key_lo) * p.nkv + kvh) * HD + 2 * t;
  T* dv_hi = p.dv + (static_cast<int64_t>(key_hi) * p.nkv + kvh) * HD + 2 * t;
#pragma unroll
  for (int nb = 0; nb < NO; ++nb) {
    if (key_lo < j1) {
      *reinterpret_cast<uint32_t*>(dk_lo + nb * 8) =
          M::pack(dk[nb][0] * p.scale, dk[nb][1] * p.scale);
      *reinterpret_cast<uint32_t*>(dv_lo + nb * 8) = M::pack(dv[nb][0], dv[nb][1]);
    }
    if (key_hi < j1) {
      *reinterpret_cast<uint32_t*>(dk_hi + nb * 8) =
          M::pack(dk[nb][2] * p.scale, dk[nb][3] * p.scale);
      *reinterpret_cast<uint32_t*>(dv_hi + nb * 8) = M::pack(dv[nb][2], dv[nb][3]);
    }
  }
}

}  // namespace ftune::device
