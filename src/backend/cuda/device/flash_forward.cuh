// Flash-attention forward kernel (FlashAttention-2, Dao 2023) for causal GQA over packed documents:
// one CTA per (block of BM query rows, query head), each warp owning 16 query rows. The keys a
// query block [i0, i1) can see are [doc_start[i0], i1) (documents are contiguous); they are
// walked in blocks of BN with K/V tiles double-buffered in shared memory by cp.async.
// Per key block: S = Q K^T on tensor cores, masked per element (doc_start[i] <= j <= i) unless
// the whole block is visible, online softmax in the log2 domain (running max m and partial row
// sums l in registers), then O += P V with P taken straight from the S accumulators. At the end
// O /= l and lse = m ln 2 + ln l (fp32). Semantics: flash_attention.h.
#pragma once
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>

#include "backend/cuda/device/flash_common.cuh"
#include "backend/cuda/device/mma.cuh"

namespace ftune::device {

template <typename T>
struct FwdParams {
  const T* q;
  const T* k;
  const T* v;
  const int32_t* doc_start;
  T* o;
  float* lse;
  int n, nh, nkv, group;
  float scale_log2;  // scale * log2(e)
};

// Query rows per CTA are 16 per warp; BN keys per block.
template <int HD>
struct FwdConfig {
  static constexpr int kWarps = HD >= 64 ? 8 : 4;
  static constexpr int kBM = 16 * kWarps;
  static constexpr int kBN = 64;
  // CTAs per SM the register budget is sized for (HD <= 64 fits two in 128 registers a thread).
  static constexpr int kMinBlocks = HD <= 64 ? 2 : 1;
  static constexpr int kLd = HD + 8;  // padded row: ldmatrix rows hit distinct bank groups
  static constexpr int kSmemBytes = (kBM + 4 * kBN) * kLd * 2;  // Q, K[2], V[2]
};

template <typename T, int HD>
__global__ void __launch_bounds__(FwdConfig<HD>::kWarps * 32, FwdConfig<HD>::kMinBlocks)
    flash_forward_kernel(const FwdParams<T> p) {
  using Cfg = FwdConfig<HD>;
  using M = MmaTraits<T>;
  constexpr int kThreads = Cfg::kWarps * 32, BM = Cfg::kBM, BN = Cfg::kBN, LD = Cfg::kLd;
  constexpr int KQ = HD / 16;  // k-steps over the head dim
  constexpr int NS = BN / 8;   // n-blocks of S per warp
  constexpr int NO = HD / 8;   // n-blocks of O per warp

  extern __shared__ uint4 smem_raw[];
  T* q_s = reinterpret_cast<T*>(smem_raw);
  T* k_s = q_s + BM * LD;      // two buffers of BN x LD
  T* v_s = k_s + 2 * BN * LD;  // two buffers of BN x LD

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int g = lane >> 2, t = lane & 3;
  // 1-D grid, heads fastest; late query blocks see the most keys, so they go first (a shorter
  // last wave).
  const int h = static_cast<int>(blockIdx.x % p.nh), kvh = h / p.group;
  const int nqb = (p.n + BM - 1) / BM;
  const int i0 = (nqb - 1 - static_cast<int>(blockIdx.x / p.nh)) * BM;
  const int i1 = min(i0 + BM, p.n);
  const int kstart = p.doc_start[i0];
  const int nkb = (i1 - kstart + BN - 1) / BN;
  const int ds_last = p.doc_start[i1 - 1];  // the largest doc_start of the block's rows

  const int64_t q_stride = static_cast<int64_t>(p.nh) * HD;
  const int64_t kv_stride = static_cast<int64_t>(p.nkv) * HD;
  const T* k_base = p.k + static_cast<int64_t>(kvh) * HD;
  const T* v_base = p.v + static_cast<int64_t>(kvh) * HD;

  flash_load_tile<HD, BM, kThreads>(q_s, p.q + static_cast<int64_t>(h) * HD, q_stride, i0, i1);
  flash_load_tile<HD, BN, kThreads>(k_s, k_base, kv_stride, kstart, i1);
  flash_load_tile<HD, BN, kThreads>(v_s, v_base, kv_stride, kstart, i1);
  cp_async_commit();

  // This thread's two rows (C-fragment rows g and g+8 of the warp's 16); rows past the block
  // get doc start INT_MAX so that no key is visible to them.
  const int row_lo = i0 + warp * 16 + g, row_hi = row_lo + 8;
  const int ds_lo = row_lo < i1 ? p.doc_start[row_lo] : INT_MAX;
  const int ds_hi = row_hi < i1 ? p.doc_start[row_hi] : INT_MAX;

  float m_lo = -INFINITY, m_hi = -INFINITY;  // running max of scale*log2e*s
  float l_lo = 0.0f, l_hi = 0.0f;            // this thread's part of the row sums
  float acc[NO][4];
#pragma unroll
  for (int nb = 0; nb < NO; ++nb) acc[nb][0] = acc[nb][1] = acc[nb][2] = acc[nb][3] = 0.0f;
  uint32_t qf[KQ][4];

  for (int kb = 0; kb < nkb; ++kb) {
    cp_async_wait<0>();
    __syncthreads();  // tile kb is in; every warp is done with tile kb-1 (the buffer refilled next)
    if (kb == 0) {
#pragma unroll
      for (int kk = 0; kk < KQ; ++kk)
        ldmatrix_x4(qf[kk], q_s + a_frag_offset(lane, LD, warp * 16, kk * 16));
    }
    if (kb + 1 < nkb) {
      const int nj = kstart + (kb + 1) * BN;
      const int nbuf = (kb + 1) & 1;
      flash_load_tile<HD, BN, kThreads>(k_s + nbuf * BN * LD, k_base, kv_stride, nj, i1);
      flash_load_tile<HD, BN, kThreads>(v_s + nbuf * BN * LD, v_base, kv_stride, nj, i1);
      cp_async_commit();
    }
    const T* kc = k_s + (kb & 1) * BN * LD;
    const T* vc = v_s + (kb & 1) * BN * LD;
    const int j0 = kstart + kb * BN;

    // S = Q K^T (16 x BN per warp).
    float s[NS][4];
#pragma unroll
    for (int nb = 0; nb < NS; ++nb) s[nb][0] = s[nb][1] = s[nb][2] = s[nb][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < KQ; ++kk) {
#pragma unroll
      for (int np = 0; np < NS / 2; ++np) {
        uint32_t b[4];
        ldmatrix_x4(b, kc + b_frag_offset(lane, LD, np * 16, kk * 16));
        M::mma(s[2 * np], qf[kk], b[0], b[1]);
        M::mma(s[2 * np + 1], qf[kk], b[2], b[3]);
      }
    }

    // Scores in the log2 domain: s * scale * log2(e) (before masking, so that any sign of the
    // scale leaves masked scores at -inf).
#pragma unroll
    for (int nb = 0; nb < NS; ++nb) {
#pragma unroll
      for (int e = 0; e < 4; ++e) s[nb][e] *= p.scale_log2;
    }

    // Mask unless every (row, key) pair of the block is visible: all keys j0..j0+BN-1 exist
    // (< i1), are <= the first row, and are >= every row's doc start.
    const bool full = j0 + BN - 1 <= i0 && ds_last <= j0;
    if (!full) {
#pragma unroll
      for (int nb = 0; nb < NS; ++nb) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int j = j0 + nb * 8 + 2 * t + (e & 1);
          const int row = e < 2 ? row_lo : row_hi;
          const int ds = e < 2 ? ds_lo : ds_hi;
          if (!(ds <= j && j <= row)) s[nb][e] = -INFINITY;
        }
      }
    }

    // Online softmax, rows g (lo) and g+8 (hi); the 4 threads of a quad share a row.
    float mx_lo = -INFINITY, mx_hi = -INFINITY;
#pragma unroll
    for (int nb = 0; nb < NS; ++nb) {
      mx_lo = fmaxf(mx_lo, fmaxf(s[nb][0], s[nb][1]));
      mx_hi = fmaxf(mx_hi, fmaxf(s[nb][2], s[nb][3]));
    }
#pragma unroll
    for (int off = 1; off <= 2; off <<= 1) {
      mx_lo = fmaxf(mx_lo, __shfl_xor_sync(0xffffffffu, mx_lo, off));
      mx_hi = fmaxf(mx_hi, __shfl_xor_sync(0xffffffffu, mx_hi, off));
    }
    const float mnew_lo = fmaxf(m_lo, mx_lo), mnew_hi = fmaxf(m_hi, mx_hi);
    // A row with nothing visible yet keeps m = -inf; subtract 0 instead (its p are all 0).
    const float msub_lo = mnew_lo == -INFINITY ? 0.0f : mnew_lo;
    const float msub_hi = mnew_hi == -INFINITY ? 0.0f : mnew_hi;
    const float alpha_lo = exp2f(m_lo - msub_lo), alpha_hi = exp2f(m_hi - msub_hi);
    m_lo = mnew_lo;
    m_hi = mnew_hi;
    float sum_lo = 0.0f, sum_hi = 0.0f;
#pragma unroll
    for (int nb = 0; nb < NS; ++nb) {
      s[nb][0] = exp2f(s[nb][0] - msub_lo);
      s[nb][1] = exp2f(s[nb][1] - msub_lo);
      s[nb][2] = exp2f(s[nb][2] - msub_hi);
      s[nb][3] = exp2f(s[nb][3] - msub_hi);
      sum_lo += s[nb][0] + s[nb][1];
      sum_hi += s[nb][2] + s[nb][3];
    }
    l_lo = l_lo * alpha_lo + sum_lo;
    l_hi = l_hi * alpha_hi + sum_hi;
#pragma unroll
    for (int nb = 0; nb < NO; ++nb) {
      acc[nb][0] *= alpha_lo;
      acc[nb][1] *= alpha_lo;
      acc[nb][2] *= alpha_hi;
      acc[nb][3] *= alpha_hi;
    }

    // O += P V: the S accumulators of n-blocks 2kk, 2kk+1 are the A fragment of k-step kk.
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk) {
      uint32_t a[4];
      a[0] = M::pack(s[2 * kk][0], s[2 * kk][1]);
      a[1] = M::pack(s[2 * kk][2], s[2 * kk][3]);
      a[2] = M::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
      a[3] = M::pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
      for (int dp = 0; dp < NO / 2; ++dp) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, vc + a_frag_offset(lane, LD, kk * 16, dp * 16));
        M::mma(acc[2 * dp], a, b[0], b[1]);
        M::mma(acc[2 * dp + 1], a, b[2], b[3]);
      }
    }
  }

  // Full row sums, then O = acc / l and lse = ln(2^m l). Every valid row sees itself: l > 0.
#pragma unroll
  for (int off = 1; off <= 2; off <<= 1) {
    l_lo += __shfl_xor_sync(0xffffffffu, l_lo, off);
    l_hi += __shfl_xor_sync(0xffffffffu, l_hi, off);
  }
  const float inv_lo = row_lo < i1 ? 1.0f / l_lo : 0.0f;
  const float inv_hi = row_hi < i1 ? 1.0f / l_hi : 0.0f;
  // Stage the warp's 16 rows of O in its own rows of the Q tile (only this warp read them, at
  // kb == 0), then store them with 16-byte writes: each row's HD values are contiguous in o.
  T* stage = q_s + warp * 16 * LD;
#pragma unroll
  for (int nb = 0; nb < NO; ++nb) {
    *reinterpret_cast<uint32_t*>(stage + g * LD + nb * 8 + 2 * t) =
        M::pack(acc[nb][0] * inv_lo, acc[nb][1] * inv_lo);
    *reinterpret_cast<uint32_t*>(stage + (g + 8) * LD + nb * 8 + 2 * t) =
        M::pack(acc[nb][2] * inv_hi, acc[nb][3] * inv_hi);
  }
  __syncwarp();
  constexpr int kChunks = HD / 8;
#pragma unroll
  for (int c = lane; c < 16 * kChunks; c += 32) {
    const int r = c / kChunks, ch = c % kChunks;
    const int row = i0 + warp * 16 + r;
    if (row < i1)
      *reinterpret_cast<uint4*>(p.o + (static_cast<int64_t>(row) * p.nh + h) * HD + ch * 8) =
          *reinterpret_cast<const uint4*>(stage + r * LD + ch * 8);
  }
  if (t == 0) {
    if (row_lo < i1) p.lse[static_cast<int64_t>(row_lo) * p.nh + h] = m_lo * kFlashLn2 + logf(l_lo);
    if (row_hi < i1) p.lse[static_cast<int64_t>(row_hi) * p.nh + h] = m_hi * kFlashLn2 + logf(l_hi);
  }
}

}  // namespace ftune::device
