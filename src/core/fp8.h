// 8-bit floats for the FP8 base-weight GEMMs (model.fp8_base): OCP E4M3 ("e4m3fn": bias 7, 3
// mantissa bits, no infinities, max 448, NaN = S.1111.111) and E5M2 (bias 15, 2 mantissa bits,
// max 57344, IEEE-like infinities and NaNs). These are the reference conversions the CUDA
// backend is tested against bit for bit: the encoders round to nearest even and saturate to the
// largest finite value (infinities too), as CUDA's __nv_cvt_float_to_fp8(x, __NV_SATFINITE, .)
// does; NaN stays NaN.
//
// Per-tensor scaling (Ops::quantize_fp8): value ~= fp8 * scale with scale = amax / max_finite,
// the codes computed as encode(x * (max_finite / amax)) so the largest |x| lands on max_finite.
#pragma once
#include <cstdint>

#include "core/dtype.h"

namespace ftune {

enum class Fp8Format : uint8_t { E4M3, E5M2 };

// The tensor dtype of a format and back (F8_E4M3 / F8_E5M2; anything else throws).
DType fp8_dtype(Fp8Format f);
Fp8Format fp8_format(DType dt);
bool is_fp8(DType dt);

// The largest finite value: 448 (E4M3), 57344 (E5M2).
float fp8_max(Fp8Format f);

uint8_t f32_to_fp8(float x, Fp8Format f);
float fp8_to_f32(uint8_t code, Fp8Format f);

// The scale pair of per-tensor scaling for a tensor whose largest magnitude is amax: `scale`
// multiplies a code's value back to the tensor's, `inv` multiplies the tensor before encoding.
// amax == 0 (an all-zero tensor), or so small that max_finite / amax overflows (below ~1e-36:
// only zeros and fp32 subnormals), gives 1 and 1 (the codes are then zeros). Plain fp32
// arithmetic, the same on every backend. Inputs are expected finite: an infinite element makes
// amax infinite and every code 0 or NaN (the trainer's non-finite check then skips the step).
struct Fp8Scale {
  float scale, inv;
};
inline Fp8Scale fp8_scale_for(float amax, float max_finite) {
  const float inv = max_finite / amax;
  if (amax == 0.0f || inv > 3.4028234e38f) return {1.0f, 1.0f};
  return {amax / max_finite, inv};
}

}  // namespace ftune
