// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), table-driven, and the "masked" form
// that TFRecord / TensorBoard event files frame every record with (FORMATS.md §6;
// tensorflow/core/lib/hash/crc32c.h Mask()).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace ftune {

// CRC32C of `size` bytes, continuing from `crc` (0 to start): crc32c(a+b) ==
// crc32c_extend(crc32c(a), b).
uint32_t crc32c_extend(uint32_t crc, const void* data, size_t size);
inline uint32_t crc32c(const void* data, size_t size) { return crc32c_extend(0, data, size); }
inline uint32_t crc32c(std::string_view s) { return crc32c(s.data(), s.size()); }

// TFRecord mask: rotate right by 15 and add a constant, so that a CRC stored inside data that
// is itself CRC'd does not produce degenerate values.
inline uint32_t crc32c_mask(uint32_t crc) {
  return ((crc >> 15) | (crc << 17)) + 0xA282EAD8u;
}
inline uint32_t crc32c_unmask(uint32_t masked) {
  uint32_t rot = masked - 0xA282EAD8u;
  return (rot >> 17) | (rot << 15);
}

}  // namespace ftune
