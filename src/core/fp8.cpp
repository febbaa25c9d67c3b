#include "core/fp8.h"

#include <cmath>

#include "core/error.h"

namespace ftune {

namespace {

struct Layout {
  int mant_bits, bias;
  float max;
  uint8_t max_code;  // magnitude bits of the largest finite value
  uint8_t nan_code;  // magnitude bits of the canonical NaN
};

Layout layout(Fp8Format f) {
  return f == Fp8Format::E4M3 ? Layout{3, 7, 448.0f, 0x7E, 0x7F} : Layout{2, 15, 57344.0f, 0x7B, 0x7F};
}

}  // namespace

DType fp8_dtype(Fp8Format f) { return f == Fp8Format::E4M3 ? DType::F8_E4M3 : DType::F8_E5M2; }

Fp8Format fp8_format(DType dt) {
  FTUNE_CHECK(is_fp8(dt), "fp8: {} is not an 8-bit float dtype", dtype_name(dt));
  return dt == DType::F8_E4M3 ? Fp8Format::E4M3 : Fp8Format::E5M2;
}

bool is_fp8(DType dt) { return dt == DType::F8_E4M3 || dt == DType::F8_E5M2; }

float fp8_max(Fp8Format f) { return layout(f).max; }

uint8_t f32_to_fp8(float x, Fp8Format f) {
  const Layout L = layout(f);
  const uint8_t sign = std::signbit(x) ? 0x80 : 0x00;
  if (std::isnan(x)) return static_cast<uint8_t>(sign | L.nan_code);
  const double a = std::fabs(static_cast<double>(x));
  if (a >= L.max) return static_cast<uint8_t>(sign | L.max_code);  // saturate (infinities too)
  const int min_exp = 1 - L.bias;                                  // of the smallest normal
  // Subnormals (and zero): multiples of 2^(min_exp - mant_bits), rounded to nearest even. A
  // value that rounds up to 2^min_exp gets code 1 << mant_bits, the smallest normal: right.
  if (a < std::ldexp(1.0, min_exp)) {
    const double q = std::nearbyint(std::ldexp(a, L.mant_bits - min_exp));  // ties to even
    return static_cast<uint8_t>(sign | static_cast<uint8_t>(q));
  }
  int e = 0;
  const double m = std::frexp(a, &e);  // a = m 2^e, m in [0.5, 1)
  e -= 1;                              // a = (2m) 2^e, 2m in [1, 2)
  double q = std::nearbyint((2.0 * m - 1.0) * (1 << L.mant_bits));
  if (q == (1 << L.mant_bits)) {  // rounded up into the next binade
    q = 0;
    e += 1;
  }
  const int code = ((e + L.bias) << L.mant_bits) | static_cast<int>(q);
  // a < max, so rounding can reach at most max itself (the encodings above it are NaN/inf).
  return static_cast<uint8_t>(sign | static_cast<uint8_t>(code > L.max_code ? L.max_code : code));
}

float fp8_to_f32(uint8_t code, Fp8Format f) {
  const Layout L = layout(f);
  const bool neg = (code & 0x80) != 0;
  const int mag = code & 0x7F;
  const int exp_field = mag >> L.mant_bits, mant = mag & ((1 << L.mant_bits) - 1);
  float v;
  if (f == Fp8Format::E4M3 && mag == 0x7F) {
    v = std::nanf("");
  } else if (f == Fp8Format::E5M2 && exp_field == 0x1F) {
    v = mant == 0 ? INFINITY : std::nanf("");
  } else if (exp_field == 0) {
    v = static_cast<float>(std::ldexp(static_cast<double>(mant), 1 - L.bias - L.mant_bits));
  } else {
    v = static_cast<float>(
        std::ldexp(1.0 + static_cast<double>(mant) / (1 << L.mant_bits), exp_field - L.bias));
  }
  return neg ? -v : v;
}

}  // namespace ftune
