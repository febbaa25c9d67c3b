#include "core/dtype.h"

#include <array>
#include <cmath>

namespace ftune {

namespace {
struct DTypeInfo {
  DType dt;
  const char* name;
  size_t size;
};
constexpr std::array<DTypeInfo, 16> kDTypes = {{
    {DType::F32, "F32", 4},     {DType::F64, "F64", 8},         {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2},   {DType::I8, "I8", 1},           {DType::U8, "U8", 1},
    {DType::I16, "I16", 2},     {DType::U16, "U16", 2},         {DType::I32, "I32", 4},
    {DType::U32, "U32", 4},     {DType::I64, "I64", 8},         {DType::U64, "U64", 8},
    {DType::BOOL, "BOOL", 1},   {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E5M2, "F8_E5M2", 1},
    {DType::NF4, "NF4", 0},
}};
static_assert(kDTypes.size() == static_cast<size_t>(DType::NF4) + 1, "one row per DType");
}  // namespace

size_t dtype_size(DType dt) { return kDTypes[static_cast<size_t>(dt)].size; }
std::string_view dtype_name(DType dt) { return kDTypes[static_cast<size_t>(dt)].name; }

bool dtype_from_name(std::string_view name, DType* out) {
  for (const auto& d : kDTypes) {
    if (d.dt != DType::NF4 && name == d.name) {
      *out = d.dt;
      return true;
    }
  }
  return false;
}

float f16_to_f32(uint16_t h) {
  const uint32_t sign = (h >> 15) & 1u, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  float v;
  if (exp == 0) {
    v = std::ldexp(static_cast<float>(mant), -24);
  } else if (exp == 31) {
    v = mant ? NAN : INFINITY;
  } else {
    v = std::ldexp(static_cast<float>(mant | 0x400u), static_cast<int>(exp) - 25);
  }
  return sign ? -v : v;
}

uint16_t f32_to_f16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t absu = u & 0x7fffffffu;
  if (absu > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);
  if (absu >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // overflow -> inf
  if (absu < 0x38800000u) {  // subnormal or zero in f16
    float a;
    std::memcpy(&a, &absu, 4);
    const float scaled = a * 16777216.0f;  // 2^24
    const uint32_t m = static_cast<uint32_t>(std::nearbyint(scaled));
    return static_cast<uint16_t>(sign | m);
  }
  uint32_t e = ((absu >> 23) - 112u) << 10;
  uint32_t m = (absu >> 13) & 0x3ffu;
  uint32_t rest = absu & 0x1fffu;
  uint32_t r = e | m;
  if (rest > 0x1000u || (rest == 0x1000u && (m & 1u))) r += 1;
  return static_cast<uint16_t>(sign | r);
}

}  // namespace ftune
