// NF4 (4-bit NormalFloat) weights in the bitsandbytes layout (FORMATS.md §4), as
// bitsandbytes.functional.quantize_4bit(quant_type="nf4") makes them and dequantize_4bit reads
// them, with the optional double quantization of the block scales (compress_statistics, HF's
// bnb_4bit_use_double_quant).
//
// Layout of an [rows, cols] weight (flattened row-major, n = rows*cols elements):
//   packed  U8 [ceil(n/2)]: byte k holds element 2k in the high nibble and 2k+1 in the low one;
//   absmax  one scale per block of `blocksize` (64) elements: F32, or with double quantization
//           U8 codes of the 8-bit dynamic map (nested_code, 256 values), scaled per block of
//           256 scales by nested_absmax (F32) and shifted by nested_offset:
//             amax[b] = fp32(fp32(nested_code[absmax[b]] * nested_absmax[b / 256]) + offset)
//   w[i] = fp32(code[nibble(i)] * amax[i / blocksize])   (code = the 16 NF4 values)
//
// Quantization (bitsandbytes' kQuantizeBlockwise kernel and its CPU twin): per block,
// amax = max |x|, x scaled by the fp32 reciprocal 1/amax, and the code chosen by the 15
// thresholds of bnb's CUDA decision tree (a value on a threshold takes the lower code). ftune
// follows bnb's CUDA kernels, which made the published checkpoints; bnb's CPU path differs in
// rare places: values exactly on four thresholds (nf4.cpp), a block of zeros (CUDA: code 0, as
// 0 * 1/0 is NaN; CPU: code 7; both dequantize to zeros), and its 8-bit table lookup for the
// nested scales. Double quantization: offset = mean(amax), then amax - offset quantized
// blockwise (256) with the signed dynamic map, nearest value by bnb's dQuantize rule (its binary
// search, ties as it resolves them).
#pragma once
#include <array>
#include <cstdint>
#include <string>

#include "core/tensor.h"

namespace ftune {

namespace nf4 {
inline constexpr int64_t kBlockSize = 64;         // bnb_4bit default (quantize_4bit blocksize)
inline constexpr int64_t kNestedBlockSize = 256;  // quantize_blockwise of the absmax
// The 16 NF4 values (bitsandbytes get_4bit_type("nf4")), ascending; code i <-> value kCode[i].
extern const std::array<float, 16> kCode;
// bitsandbytes create_dynamic_map(signed=True): the 256 ascending values of the 8-bit dynamic
// type used for the nested absmax.
const std::array<float, 256>& dynamic_map();
// The NF4 code of a value already scaled into [-1, 1] (NaN -> 0, as bnb's CUDA tree does).
uint8_t quantize_scaled(float x);
// The index of the dynamic-map value nearest to x in [-1, 1] (bnb dQuantize).
uint8_t quantize_dynamic(const std::array<float, 256>& code, float x);
// Whether bitsandbytes accepts this 4-bit block size (32 ... 4096, powers of two).
bool valid_blocksize(int64_t b);
}  // namespace nf4

// A frozen NF4 weight matrix: packed codes and block scales (every tensor on one device).
struct Nf4Weight {
  Shape shape;                 // the logical weight shape, [rows, cols]
  int64_t blocksize = nf4::kBlockSize;
  Tensor packed;               // U8 [ceil(numel/2)]
  Tensor code;                 // F32 [16] (bnb "quant_map")
  Tensor absmax;               // F32 [nblocks], or U8 [nblocks] when nested
  Tensor nested_absmax;        // F32 [ceil(nblocks / nested_blocksize)] (nested only)
  Tensor nested_code;          // F32 [256] (nested only; bnb "nested_quant_map")
  int64_t nested_blocksize = nf4::kNestedBlockSize;
  float nested_offset = 0.0f;

  bool defined() const { return packed.defined(); }
  bool nested() const { return nested_absmax.defined(); }
  int64_t numel() const { return shape_numel(shape); }
  int64_t nblocks() const { return (numel() + blocksize - 1) / blocksize; }
  Device device() const { return packed.device(); }
  // Bytes of all its tensors (what it holds on its device).
  int64_t nbytes() const;
  // A copy on `dev`.
  Nf4Weight to(Device dev) const;
  // Checks that the tensors agree with shape and blocksize; `what` names the weight in errors.
  void validate(const std::string& what) const;
};

// Quantizes a CPU tensor (F32, BF16 or F16, finite; any shape, read flat) as bnb
// quantize_4bit(nf4) does; double_quant = compress_statistics. The result is on the CPU and has
// t's shape.
Nf4Weight quantize_nf4(const Tensor& t, bool double_quant);
// Replaces w's F32 block scales (CPU) by their double quantization around `offset` (bnb uses
// offset = mean of the scales).
void double_quantize_absmax(Nf4Weight& w, float offset);
// The per-block scales as F32 [nblocks] (the nested ones dequantized). CPU weights only.
Tensor nf4_block_absmax(const Nf4Weight& w);
// Dequantizes a CPU weight into `out` (CPU, F32/BF16/F16, numel == w.numel()), rounding each
// fp32 value once into out's dtype, as bnb dequantize_4bit does.
void dequantize_nf4_cpu(const Nf4Weight& w, Tensor& out);

}  // namespace ftune
