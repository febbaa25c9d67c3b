// bitsandbytes 4-bit weights in safetensors (FORMATS.md §4), as transformers' save_pretrained
// writes a model loaded with BitsAndBytesConfig(load_in_4bit=True): for a quantized linear's
// weight W (e.g. "model.layers.0.self_attn.q_proj.weight")
//   W                                      U8 [ceil(n/2), 1]  packed codes (high nibble first)
//   W.absmax                               F32 [nblocks], or U8 [nblocks] with double quant
//   W.quant_map                            F32 [16]
//   W.nested_absmax, W.nested_quant_map    F32 [ceil(nblocks/256)], F32 [256] (double quant)
//   W.quant_state.bitsandbytes__nf4        U8: UTF-8 JSON {quant_type, blocksize, dtype, shape,
//                                          nested_blocksize, nested_dtype, nested_offset}
// (bitsandbytes functional.py QuantState.as_dict(packed=True)), and config.json carries
// quantization_config {quant_method: "bitsandbytes", load_in_4bit: true, ...}.
#pragma once
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/nf4.h"
#include "io/hf_config.h"
#include "io/safetensors.h"

namespace ftune {

// config.json's quantization_config, when it describes bitsandbytes 4-bit weights.
struct Bnb4bitConfig {
  std::string quant_type = "nf4";
  bool double_quant = false;
  std::string compute_dtype;  // bnb_4bit_compute_dtype ("bfloat16", ...; "" when absent)
};

// nullopt without quantization_config; throws (naming the file and key) for a quantization
// ftune cannot load: another quant_method, 8-bit, or a 4-bit quant type other than nf4.
std::optional<Bnb4bitConfig> bnb4bit_config(const HFModelConfig& cfg, const std::string& origin);

// Whether the checkpoint stores `weight_name` as bnb 4-bit (a U8 tensor with a quant_state).
bool is_bnb4bit_weight(const CheckpointReader& ckpt, const std::string& weight_name);

// Reads one quantized weight (CPU tensors, copied out of the mapping; nothing dequantized).
// `expected` is the weight's logical [out, in] shape. Errors name `origin`, the tensor and the
// problem: a missing absmax/quant_map/quant_state/nested tensor, quant type fp4, a blocksize or
// shape that does not fit, malformed quant_state JSON.
Nf4Weight read_bnb4bit_weight(const CheckpointReader& ckpt, const std::string& weight_name,
                              const Shape& expected, const std::string& origin);

// The tensors save_pretrained writes for `weight_name` holding `w` (CPU), in that layout;
// `dtype_name` is the quant_state dtype ("bfloat16", "float16" or "float32").
std::vector<std::pair<std::string, Tensor>> bnb4bit_tensors(const std::string& weight_name,
                                                            const Nf4Weight& w,
                                                            const std::string& dtype_name);

}  // namespace ftune
