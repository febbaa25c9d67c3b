// Emulator stand-in for src/backend/cuda/device/mma.cuh (same API): cp.async, ldmatrix and
// mma.sync m16n8k16 implemented on the host from their PTX ISA definitions, as warp
// collectives over the fibers of emu.h. Found before the real header through the include path.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "backend/cuda/device/mma_fragments.cuh"
#include "emu.h"

namespace ftune::device {

// cp.async: the copies of a thread land when it waits (cp.async.wait_group 0), not before.
struct PendingCopy {
  void* dst;
  const void* src;
  int bytes;  // 0: zero-fill
  int size;
};
inline std::vector<std::vector<PendingCopy>>& pending() {
  static std::vector<std::vector<PendingCopy>> p(1024);
  return p;
}

inline void cp_async_16(void* smem, const void* gmem, bool valid) {
  pending()[static_cast<size_t>(emu::linear_tid())].push_back({smem, gmem, valid ? 16 : 0, 16});
}
inline void cp_async_4(void* smem, const void* gmem, bool valid) {
  pending()[static_cast<size_t>(emu::linear_tid())].push_back({smem, gmem, valid ? 4 : 0, 4});
}
inline void cp_async_commit() {}
template <int N>
inline void cp_async_wait() {
  static_assert(N == 0, "the emulator lands every copy at a wait");
  auto& q = pending()[static_cast<size_t>(emu::linear_tid())];
  for (const PendingCopy& c : q) {
    if (c.bytes)
      std::memcpy(c.dst, c.src, static_cast<size_t>(c.size));
    else
      std::memset(c.dst, 0, static_cast<size_t>(c.size));
  }
  q.clear();
}

// ldmatrix.x4: lanes 8i..8i+7 give the rows of matrix i; register i of lane l gets row l/4,
// elements 2(l%4), 2(l%4)+1 (non-transposed) or column l/4, rows 2(l%4), 2(l%4)+1 (.trans).
inline void ldmatrix_emu(uint32_t (&r)[4], const void* row, bool trans) {
  const void** ptrs = emu::warp_ptrs();
  const int l = emu::lane_id();
  ptrs[l] = row;
  emu::warp_sync();
  for (int i = 0; i < 4; ++i) {
    uint16_t lo, hi;
    if (!trans) {
      const auto* p = static_cast<const uint16_t*>(ptrs[8 * i + l / 4]);
      lo = p[2 * (l % 4)];
      hi = p[2 * (l % 4) + 1];
    } else {
      lo = static_cast<const uint16_t*>(ptrs[8 * i + 2 * (l % 4)])[l / 4];
      hi = static_cast<const uint16_t*>(ptrs[8 * i + 2 * (l % 4) + 1])[l / 4];
    }
    r[i] = static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
  }
  emu::warp_sync();
}
inline void ldmatrix_x4(uint32_t (&r)[4], const void* row) { ldmatrix_emu(r, row, false); }
inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* row) { ldmatrix_emu(r, row, true); }

template <typename T>
inline float half_bits_to_float(uint16_t b) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    __nv_bfloat16_raw r;
    r.x = b;
    return __bfloat162float(__nv_bfloat16(r));
  } else {
    __half_raw r;
    r.x = b;
    return __half2float(__half(r));
  }
}

// mma.m16n8k16.row.col, fragments per the PTX ISA (g = lane/4, t = lane%4):
//   A a0 (g, 2t..) a1 (g+8, 2t..) a2 (g, 2t+8..) a3 (g+8, 2t+8..); B b0 (k 2t.., n g)
//   b1 (k 2t+8.., n g); C c0,c1 (g, 2t..) c2,c3 (g+8, 2t..).
template <typename T>
inline void mma_emu(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  uint32_t* w = emu::warp_words();
  const int l = emu::lane_id();
  for (int i = 0; i < 4; ++i) w[l * 8 + i] = a[i];
  w[l * 8 + 4] = b0;
  w[l * 8 + 5] = b1;
  emu::warp_sync();
  float A[16][16], B[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    auto lo = [&](int i) {
      return half_bits_to_float<T>(static_cast<uint16_t>(w[lane * 8 + i] & 0xffff));
    };
    auto hi = [&](int i) {
      return half_bits_to_float<T>(static_cast<uint16_t>(w[lane * 8 + i] >> 16));
    };
    A[g][2 * t] = lo(0), A[g][2 * t + 1] = hi(0);
    A[g + 8][2 * t] = lo(1), A[g + 8][2 * t + 1] = hi(1);
    A[g][2 * t + 8] = lo(2), A[g][2 * t + 9] = hi(2);
    A[g + 8][2 * t + 8] = lo(3), A[g + 8][2 * t + 9] = hi(3);
    B[2 * t][g] = lo(4), B[2 * t + 1][g] = hi(4);
    B[2 * t + 8][g] = lo(5), B[2 * t + 9][g] = hi(5);
  }
  emu::warp_sync();
  const int g = l / 4, t = l % 4;
  const int rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
  for (int e = 0; e < 4; ++e) {
    float s = d[e];
    for (int k = 0; k < 16; ++k) s += A[rows[e]][k] * B[k][cols[e]];
    d[e] = s;
  }
}

template <typename T>
struct MmaTraits;

template <>
struct MmaTraits<__nv_bfloat16> {
  static void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    mma_emu<__nv_bfloat16>(d, a, b0, b1);
  }
  static uint32_t pack(float lo, float hi) {
    const __nv_bfloat16 l = __float2bfloat16_rn(lo), h = __float2bfloat16_rn(hi);
    uint16_t lb, hb;
    std::memcpy(&lb, &l, 2);
    std::memcpy(&hb, &h, 2);
    return static_cast<uint32_t>(lb) | (static_cast<uint32_t>(hb) << 16);
  }
  static float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
  static __nv_bfloat16 from_float(float x) { return __float2bfloat16_rn(x); }
};

template <>
struct MmaTraits<__half> {
  static void mma(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    mma_emu<__half>(d, a, b0, b1);
  }
  static uint32_t pack(float lo, float hi) {
    const __half l = __float2half_rn(lo), h = __float2half_rn(hi);
    uint16_t lb, hb;
    std::memcpy(&lb, &l, 2);
    std::memcpy(&hb, &h, 2);
    return static_cast<uint32_t>(lb) | (static_cast<uint32_t>(hb) << 16);
  }
  static float to_float(__half x) { return __half2float(x); }
  static __half from_float(float x) { return __float2half_rn(x); }
};

}  // namespace ftune::device
