// Element types of tensors and their conversions (bf16/f16 <-> f32, round-to-nearest-even).
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace ftune {

enum class DType : uint8_t {
  F32, F64, F16, BF16, I8, U8, I16, U16, I32, U32, I64, U64, BOOL, F8_E4M3, F8_E5M2, NF4,
};

// Bytes per element (NF4: 0, packed two per byte; use nf4-aware code for it).
size_t dtype_size(DType dt);
// The safetensors name ("F32", "BF16", ...).
std::string_view dtype_name(DType dt);
// Parses a safetensors dtype name; returns false when unknown.
bool dtype_from_name(std::string_view name, DType* out);

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(u >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

}  // namespace ftune
