// Export of a model (optionally with a LoRA adapter folded in on the fly, model/merge.h) as one
// GGUF v3 file that llama.cpp loads, laid out as llama.cpp's convert_hf_to_gguf.py lays out a
// Llama (and Mistral) or Qwen2 checkpoint:
//   general.architecture "llama" (Llama, Mistral) or "qwen2", the <arch>.* hyperparameters,
//   tokenizer.* (io/gguf_tokenizer.h), tensors named token_embd, blk.N.attn_{norm,q,k,v,output},
//   blk.N.ffn_{norm,gate,up,down}, output_norm, output (absent when embeddings are tied), the
//   q/k/v biases of Qwen2, and rope_freqs (llama3 RoPE scaling: per-frequency divisors).
// For the llama architecture the q and k rows are permuted as convert_hf_to_gguf does (HF keeps
// each head's rotary pairs as halves [0, d/2) and [d/2, d); llama.cpp's rope pairs neighbours),
// see permute_qk_rows. Qwen2 uses the NeoX rope in llama.cpp and is written unpermuted.
//
// Types (--type): f16, bf16: 2-D weights in that type; q8_0: 2-D weights Q8_0; q4_k_m: llama.cpp's
// Q4_K_M mixture (llama-quant.cpp llama_tensor_get_type): Q4_K, with Q6_K for output.weight (or
// token_embd.weight when there is no output), for attn_v.weight and ffn_down.weight of the layers
// use_more_bits picks (the first and last eighth and every third between), and for rows that
// do not split into 256-element blocks the fallbacks Q4_K -> Q5_0, Q6_K -> Q8_0 (-> F16 when
// not a multiple of 32). Not reproduced: the 70B rule (attn_v Q4_K -> Q5_K at 80 layers).
// 1-D tensors (norms, biases, rope_freqs) stay F32 in every type.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "io/ggml_quants.h"

namespace ftune {

enum class GgufFileType { F16, BF16, Q8_0, Q4_K_M };

// "f16", "bf16", "q8_0", "q4_k_m" (case-insensitive); throws for anything else.
GgufFileType parse_gguf_file_type(const std::string& s);
// llama_ftype numbers for general.file_type: 1, 32, 7, 15.
uint32_t gguf_file_type_number(GgufFileType t);

// The ggml type of one tensor of an export. `shape` outermost first ([rows, cols]); `layer` its
// block (-1 outside the layers); `has_output` whether output.weight is written.
GgmlType gguf_tensor_type(GgufFileType ft, const std::string& gguf_name,
                          const std::vector<int64_t>& shape, int layer, int64_t num_layers,
                          bool has_output);

// llama.cpp's q/k permutation (convert_hf_to_gguf LlamaModel.permute): within each of n_head
// heads of `rows / n_head` rows, row h*d + c*d/2 + i moves to row h*d + 2i + c (c in {0, 1}).
// `cols` = 1 for a bias.
void permute_qk_rows(float* w, int64_t rows, int64_t cols, int64_t n_head);

struct GgufExportOptions {
  std::string model_dir;
  std::string adapter_dir;  // optional: merged on the fly
  std::string out_path;     // the .gguf file
  std::string type = "f16";
  bool overwrite = false;
};

struct GgufExportResult {
  std::string architecture;
  std::map<std::string, int> tensors_per_type;  // ggml type name -> count
  uint64_t file_bytes = 0;
  std::vector<std::string> warnings;
};

// Writes the file (atomically: out_path + ".tmp", renamed at the end). An existing out_path is
// refused unless overwrite.
GgufExportResult export_gguf(const GgufExportOptions& opts);

}  // namespace ftune
