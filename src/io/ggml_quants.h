// ggml tensor types that ftune writes into GGUF files, with their block layouts exactly as ggml
// defines them (ggml-common.h block_q8_0, block_q5_0, block_q4_K, block_q6_K; ggml.h
// ggml_type numbers), an encoder (quantizer) per type and a reference decoder (dequantizer)
// used by the tests. Elements run along a tensor's rows (ggml's ne[0]); a row's length must be a
// multiple of the type's block size.
//
//   F32, F16, BF16   1 element per "block", little-endian IEEE / bfloat16 (round to nearest even)
//   Q8_0   32 elements, 34 bytes: fp16 d, int8 q[32];                       x = d*q
//   Q5_0   32 elements, 22 bytes: fp16 d, u8 qh[4] (5th bits), u8 qs[16];   x = d*(q-16)
//   Q4_K  256 elements, 144 bytes: fp16 d, fp16 dmin, u8 scales[12] (8 x 6-bit scale and min),
//         u8 qs[128] (4-bit q);                  x = d*sc_j*q - dmin*m_j for sub-block j of 32
//   Q6_K  256 elements, 210 bytes: u8 ql[128] (low 4 bits), u8 qh[64] (high 2 bits), int8
//         scales[16], fp16 d;                    x = d*sc_j*(q-32) for sub-block j of 16
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace ftune {

enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q5_0 = 6, Q8_0 = 8, Q4_K = 12, Q6_K = 14, BF16 = 30,
};

struct GgmlTypeTraits {
  GgmlType type;
  std::string_view name;  // ggml_type_name: "f32", "q4_K", ...
  int64_t block_elems;    // elements per block
  size_t block_bytes;     // bytes per block
};

inline constexpr std::array<GgmlTypeTraits, 7> kGgmlTypes = {{
    {GgmlType::F32, "f32", 1, 4},
    {GgmlType::F16, "f16", 1, 2},
    {GgmlType::BF16, "bf16", 1, 2},
    {GgmlType::Q8_0, "q8_0", 32, 34},
    {GgmlType::Q5_0, "q5_0", 32, 22},
    {GgmlType::Q4_K, "q4_K", 256, 144},
    {GgmlType::Q6_K, "q6_K", 256, 210},
}};

const GgmlTypeTraits& ggml_traits(GgmlType t);
// Bytes of `n` elements of type t; throws unless n is a multiple of the block size.
size_t ggml_bytes(GgmlType t, int64_t n);
// Encodes n floats (a multiple of the block size) into dst (ggml_bytes(t, n) bytes).
void ggml_encode(GgmlType t, const float* x, int64_t n, uint8_t* dst);
// Decodes n elements back to floats (the reference dequantization, ggml's dequantize_row_*).
void ggml_decode(GgmlType t, const uint8_t* src, int64_t n, float* y);

}  // namespace ftune
