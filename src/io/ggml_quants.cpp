// Encoders follow ggml's reference quantizers (ggml-quants.c quantize_row_*_ref) in what they
// store; the K-quant scale searches are ftune's own (a weighted least-squares fit per
// sub-block), so the bytes can differ from llama-quantize's while decoding the same way.
#include "io/ggml_quants.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "core/error.h"

namespace ftune {

namespace {

constexpr int kQK = 256;  // QK_K: elements of a K-quant super-block

void put_f16(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}
float get_f16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}
int nearest(float v) { return static_cast<int>(std::nearbyint(v)); }

// ---- Q8_0 ----
void encode_q8_0(const float* x, uint8_t* b) {
  float amax = 0;
  for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f;
  const float id = d != 0 ? 1.0f / d : 0.0f;
  put_f16(b, d);
  for (int j = 0; j < 32; ++j)
    b[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(std::round(x[j] * id)));
}
void decode_q8_0(const uint8_t* b, float* y) {
  const float d = get_f16(b);
  for (int j = 0; j < 32; ++j) y[j] = d * static_cast<float>(static_cast<int8_t>(b[2 + j]));
}

// ---- Q5_0 ----
void encode_q5_0(const float* x, uint8_t* b) {
  float amax = 0, max = 0;
  for (int j = 0; j < 32; ++j) {
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  const float d = max / -16.0f;
  const float id = d != 0 ? 1.0f / d : 0.0f;
  put_f16(b, d);
  uint32_t qh = 0;
  uint8_t* qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    const int q0 = std::min(31, static_cast<int>(x[j] * id + 16.5f));
    const int q1 = std::min(31, static_cast<int>(x[16 + j] * id + 16.5f));
    qs[j] = static_cast<uint8_t>((q0 & 0x0F) | ((q1 & 0x0F) << 4));
    qh |= static_cast<uint32_t>((q0 & 0x10) >> 4) << j;
    qh |= static_cast<uint32_t>((q1 & 0x10) >> 4) << (j + 16);
  }
  std::memcpy(b + 2, &qh, 4);
}
void decode_q5_0(const uint8_t* b, float* y) {
  const float d = get_f16(b);
  uint32_t qh;
  std::memcpy(&qh, b + 2, 4);
  const uint8_t* qs = b + 6;
  for (int j = 0; j < 16; ++j) {
    const int h0 = static_cast<int>(((qh >> j) << 4) & 0x10);
    const int h1 = static_cast<int>((qh >> (j + 12)) & 0x10);
    y[j] = d * static_cast<float>(((qs[j] & 0x0F) | h0) - 16);
    y[j + 16] = d * static_cast<float>(((qs[j] >> 4) | h1) - 16);
  }
}

// ---- Q4_K ----
// Sub-block j's 6-bit scale and min from the 12 packed bytes (ggml get_scale_min_k4).
void q4k_scale_min(int j, const uint8_t* q, int* sc, int* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// Fits x[i] ≈ scale * L[i] - min with L in [0, nmax], min >= 0, weights w: a search over the
// starting step and, for each, the weighted least-squares (scale, min) for the rounded levels.
void fit_scale_min(const float* x, const float* w, int n, int nmax, float* scale, float* min) {
  float lo = x[0], hi = x[0];
  for (int i = 1; i < n; ++i) {
    lo = std::min(lo, x[i]);
    hi = std::max(hi, x[i]);
  }
  lo = std::min(lo, 0.0f);  // the offset only ever lowers values (ggml: min > 0 -> 0)
  if (hi <= lo) {
    *scale = 0;
    *min = -lo;
    return;
  }
  float best_err = INFINITY, best_s = (hi - lo) / nmax, best_m = -lo;
  for (int step = -10; step <= 10; ++step) {
    const float iscale = (static_cast<float>(nmax) + 0.1f * static_cast<float>(step)) / (hi - lo);
    double sw = 0, sl = 0, sll = 0, sx = 0, slx = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(nearest(iscale * (x[i] - lo)), 0, nmax);
      sw += w[i];
      sl += w[i] * l;
      sll += w[i] * l * l;
      sx += w[i] * x[i];
      slx += w[i] * l * x[i];
    }
    // x ≈ s*l + c (c = -min <= 0): normal equations of weighted least squares.
    const double det = sw * sll - sl * sl;
    double s = 0, c = 0;
    if (det > 0) {
      s = (sw * slx - sl * sx) / det;
      c = (sll * sx - sl * slx) / det;
    }
    if (c > 0 || det <= 0) {  // keep the offset <= 0: refit the scale alone with c = 0
      c = 0;
      s = sll > 0 ? slx / sll : 0;
    }
    if (s < 0) continue;
    double err = 0;
    for (int i = 0; i < n; ++i) {
      const int l = s > 0 ? std::clamp(nearest(static_cast<float>((x[i] - c) / s)), 0, nmax) : 0;
      const double diff = s * l + c - x[i];
      err += w[i] * diff * diff;
    }
    if (err < best_err) {
      best_err = static_cast<float>(err);
      best_s = static_cast<float>(s);
      best_m = static_cast<float>(-c);
    }
  }
  *scale = best_s;
  *min = best_m;
}

void encode_q4_k(const float* x, uint8_t* b) {
  float scales[8], mins[8], w[32];
  float sum_x2 = 0;
  for (int i = 0; i < kQK; ++i) sum_x2 += x[i] * x[i];
  const float av_x = std::sqrt(sum_x2 / kQK);
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    for (int l = 0; l < 32; ++l) w[l] = av_x + std::fabs(x[32 * j + l]);  // ggml's weighting
    fit_scale_min(x + 32 * j, w, 32, 15, &scales[j], &mins[j]);
    max_scale = std::max(max_scale, scales[j]);
    max_min = std::max(max_min, mins[j]);
  }
  const float inv_scale = max_scale > 0 ? 63.0f / max_scale : 0.0f;
  const float inv_min = max_min > 0 ? 63.0f / max_min : 0.0f;
  uint8_t* sc = b + 4;
  std::memset(sc, 0, 12);
  for (int j = 0; j < 8; ++j) {
    const int ls = std::min(63, nearest(inv_scale * scales[j]));
    const int lm = std::min(63, nearest(inv_min * mins[j]));
    if (j < 4) {
      sc[j] = static_cast<uint8_t>(ls);
      sc[j + 4] = static_cast<uint8_t>(lm);
    } else {
      sc[j + 4] = static_cast<uint8_t>((ls & 0x0F) | ((lm & 0x0F) << 4));
      sc[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
      sc[j] |= static_cast<uint8_t>((lm >> 4) << 6);
    }
  }
  put_f16(b, max_scale / 63.0f);
  put_f16(b + 2, max_min / 63.0f);
  const float d = get_f16(b), dmin = get_f16(b + 2);
  uint8_t L[kQK];
  for (int j = 0; j < 8; ++j) {
    int s, m;
    q4k_scale_min(j, sc, &s, &m);
    const float dj = d * static_cast<float>(s);
    const float mj = dmin * static_cast<float>(m);
    for (int l = 0; l < 32; ++l) {
      const int q = dj != 0 ? nearest((x[32 * j + l] + mj) / dj) : 0;
      L[32 * j + l] = static_cast<uint8_t>(std::clamp(q, 0, 15));
    }
  }
  // 64 elements per 32 bytes: low nibbles hold the first 32, high nibbles the next 32.
  uint8_t* qs = b + 16;
  for (int j = 0; j < kQK; j += 64)
    for (int l = 0; l < 32; ++l)
      qs[j / 2 + l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
}
void decode_q4_k(const uint8_t* b, float* y) {
  const float d = get_f16(b), dmin = get_f16(b + 2);
  const uint8_t* sc = b + 4;
  const uint8_t* q = b + 16;
  int is = 0;
  for (int j = 0; j < kQK; j += 64) {
    int s, m;
    q4k_scale_min(is, sc, &s, &m);
    const float d1 = d * static_cast<float>(s), m1 = dmin * static_cast<float>(m);
    q4k_scale_min(is + 1, sc, &s, &m);
    const float d2 = d * static_cast<float>(s), m2 = dmin * static_cast<float>(m);
    for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0x0F) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
    q += 32;
    is += 2;
  }
}

// ---- Q6_K ----
// Fits x[i] ≈ scale * L[i], L in [-32, 31], weights x² (ggml make_qx_quants, rmse_type 1).
float fit_scale_symmetric(const float* x, int n) {
  float amax = 0, max = 0;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(x[i]) > amax) {
      amax = std::fabs(x[i]);
      max = x[i];
    }
  }
  if (amax == 0) return 0;
  float best = 0, best_scale = 0;
  for (int step = -9; step <= 9; ++step) {
    const float iscale = -(32.0f + 0.1f * static_cast<float>(step)) / max;
    double slx = 0, sll = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::clamp(nearest(iscale * x[i]), -32, 31);
      const double w = static_cast<double>(x[i]) * x[i];
      slx += w * x[i] * l;
      sll += w * l * l;
    }
    // The best scale for these levels is slx/sll; its error falls as slx²/sll grows.
    if (sll > 0 && slx * slx / sll > best) {
      best = static_cast<float>(slx * slx / sll);
      best_scale = static_cast<float>(slx / sll);
    }
  }
  return best_scale;
}

void encode_q6_k(const float* x, uint8_t* b) {
  float scales[16];
  float max_scale = 0, max_abs = 0;
  for (int j = 0; j < 16; ++j) {
    scales[j] = fit_scale_symmetric(x + 16 * j, 16);
    if (std::fabs(scales[j]) > max_abs) {
      max_abs = std::fabs(scales[j]);
      max_scale = scales[j];
    }
  }
  uint8_t* ql = b;
  uint8_t* qh = b + 128;
  int8_t* sc = reinterpret_cast<int8_t*>(b + 192);
  if (max_abs == 0) {
    std::memset(b, 0, 210);
    // All zero: L = 32 everywhere decodes to 0 with any scale; keep d = 0 as ggml does.
    for (int i = 0; i < 128; ++i) ql[i] = 0;
    for (int i = 0; i < 64; ++i) qh[i] = 0xAA;  // high bits 2 -> level 32
    put_f16(b + 208, 0.0f);
    return;
  }
  const float iscale = -128.0f / max_scale;
  put_f16(b + 208, 1.0f / iscale);
  for (int j = 0; j < 16; ++j)
    sc[j] = static_cast<int8_t>(std::min(127, nearest(iscale * scales[j])));
  const float d = get_f16(b + 208);
  uint8_t L[kQK];
  for (int j = 0; j < 16; ++j) {
    const float dj = d * static_cast<float>(sc[j]);
    for (int i = 0; i < 16; ++i) {
      const int l = dj != 0 ? std::clamp(nearest(x[16 * j + i] / dj), -32, 31) : 0;
      L[16 * j + i] = static_cast<uint8_t>(l + 32);
    }
  }
  // Per 128 elements: ql holds the low nibbles of elements l and l+64 (64 bytes), qh the high two
  // bits of l, l+32, l+64, l+96 (32 bytes).
  for (int j = 0; j < kQK; j += 128) {
    for (int l = 0; l < 32; ++l) {
      const uint8_t q1 = L[j + l], q2 = L[j + l + 32], q3 = L[j + l + 64], q4 = L[j + l + 96];
      ql[l] = static_cast<uint8_t>((q1 & 0x0F) | ((q3 & 0x0F) << 4));
      ql[l + 32] = static_cast<uint8_t>((q2 & 0x0F) | ((q4 & 0x0F) << 4));
      qh[l] = static_cast<uint8_t>((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6));
    }
    ql += 64;
    qh += 32;
  }
}
void decode_q6_k(const uint8_t* b, float* y) {
  const float d = get_f16(b + 208);
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const int8_t* sc = reinterpret_cast<const int8_t*>(b + 192);
  for (int n = 0; n < kQK; n += 128) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = ((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * static_cast<float>(sc[is + 0] * q1);
      y[l + 32] = d * static_cast<float>(sc[is + 2] * q2);
      y[l + 64] = d * static_cast<float>(sc[is + 4] * q3);
      y[l + 96] = d * static_cast<float>(sc[is + 6] * q4);
    }
    y += 128;
    ql += 64;
    qh += 32;
    sc += 8;
  }
}

}  // namespace

const GgmlTypeTraits& ggml_traits(GgmlType t) {
  for (const auto& tr : kGgmlTypes)
    if (tr.type == t) return tr;
  fail("ggml type {} is not supported", static_cast<uint32_t>(t));
}

size_t ggml_bytes(GgmlType t, int64_t n) {
  const GgmlTypeTraits& tr = ggml_traits(t);
  FTUNE_CHECK(n >= 0 && n % tr.block_elems == 0, "{}: {} elements are not a whole number of "
              "{}-element blocks", tr.name, n, tr.block_elems);
  return static_cast<size_t>(n / tr.block_elems) * tr.block_bytes;
}

void ggml_encode(GgmlType t, const float* x, int64_t n, uint8_t* dst) {
  const GgmlTypeTraits& tr = ggml_traits(t);
  (void)ggml_bytes(t, n);
  switch (t) {
    case GgmlType::F32: std::memcpy(dst, x, static_cast<size_t>(n) * 4); return;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) put_f16(dst + 2 * i, x[i]);
      return;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = f32_to_bf16(x[i]);
        std::memcpy(dst + 2 * i, &h, 2);
      }
      return;
    default: break;
  }
  for (int64_t blk = 0; blk < n / tr.block_elems; ++blk) {
    const float* xb = x + blk * tr.block_elems;
    uint8_t* b = dst + static_cast<size_t>(blk) * tr.block_bytes;
    switch (t) {
      case GgmlType::Q8_0: encode_q8_0(xb, b); break;
      case GgmlType::Q5_0: encode_q5_0(xb, b); break;
      case GgmlType::Q4_K: encode_q4_k(xb, b); break;
      case GgmlType::Q6_K: encode_q6_k(xb, b); break;
      default: fail("ggml_encode: unhandled type {}", tr.name);
    }
  }
}

void ggml_decode(GgmlType t, const uint8_t* src, int64_t n, float* y) {
  const GgmlTypeTraits& tr = ggml_traits(t);
  (void)ggml_bytes(t, n);
  switch (t) {
    case GgmlType::F32: std::memcpy(y, src, static_cast<size_t>(n) * 4); return;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) y[i] = get_f16(src + 2 * i);
      return;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        y[i] = bf16_to_f32(h);
      }
      return;
    default: break;
  }
  for (int64_t blk = 0; blk < n / tr.block_elems; ++blk) {
    const uint8_t* b = src + static_cast<size_t>(blk) * tr.block_bytes;
    float* yb = y + blk * tr.block_elems;
    switch (t) {
      case GgmlType::Q8_0: decode_q8_0(b, yb); break;
      case GgmlType::Q5_0: decode_q5_0(b, yb); break;
      case GgmlType::Q4_K: decode_q4_k(b, yb); break;
      case GgmlType::Q6_K: decode_q6_k(b, yb); break;
      default: fail("ggml_decode: unhandled type {}", tr.name);
    }
  }
}

}  // namespace ftune
