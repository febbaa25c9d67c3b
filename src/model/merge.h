// Folding a PEFT LoRA adapter into its base model (PEFT merge_and_unload): every adapted
// projection's weight becomes W + scaling * B @ A (scaling = lora_alpha / r, or
// lora_alpha / sqrt(r) with use_rslora; A [r, in], B [out, r]; FORMATS.md §3), computed in fp32.
//
// MergedWeights reads one tensor at a time from the base checkpoint, so a caller that writes each
// tensor before asking for the next (merge_lora below, the GGUF export) holds one tensor of the
// model in memory, never the model twice.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/lora.h"
#include "model/model_spec.h"

namespace ftune {

class MergedWeights {
 public:
  // The base model folder (config.json + safetensors) and, when adapter_dir is not empty, a
  // PEFT adapter for it. Errors name the file and the key or tensor: missing adapter files, an
  // adapter made for other shapes, unsupported adapter features (DoRA, fan_in_fan_out, bias
  // training, modules_to_save, per-layer patterns), quantized base checkpoints.
  static MergedWeights open(const std::string& model_dir, const std::string& adapter_dir);

  const std::string& model_dir() const { return model_dir_; }
  const HFModelConfig& config() const { return config_; }
  const ModelSpec& spec() const { return spec_; }
  bool has_adapter() const { return lora_.has_value(); }
  const LoraSpec* adapter_spec() const { return lora_ ? &lora_->spec : nullptr; }
  // Every tensor of the base checkpoint: embeddings, then the layers in order (norms and
  // projections in module order), the final norm and lm_head, then any others sorted by name.
  const std::vector<std::string>& names() const { return names_; }
  const TensorInfo& info(const std::string& name) const { return ckpt_.info(name); }
  // Whether the adapter changes `name` (a targeted projection's weight).
  bool adapted(const std::string& name) const { return adapted_.count(name) != 0; }
  // `name` converted to F32, with the adapter folded in when it is adapted: a fresh tensor.
  Tensor merged_f32(const std::string& name) const;

 private:
  std::string model_dir_;
  HFModelConfig config_;
  ModelSpec spec_;
  CheckpointReader ckpt_;
  std::optional<LoraWeights> lora_;
  std::map<std::string, std::pair<int, Proj>> adapted_;  // weight name -> (layer, projection)
  std::vector<std::string> names_;
};

// The storage dtype named by a --dtype value (bf16, fp16, fp32, or bfloat16, float16, float32);
// throws for anything else.
DType parse_merge_dtype(const std::string& s);
// transformers' names: "bfloat16", "float16", "float32".
std::string torch_dtype_name(DType dt);
// A size like transformers' max_shard_size: "5GB" (10^9), "500MB", "2GiB" (2^30), "100KB",
// "4096" (bytes). Throws for anything else or zero.
uint64_t parse_byte_size(const std::string& s);

struct MergeOptions {
  std::string model_dir;
  std::string adapter_dir;  // empty: the base model is re-written (re-sharded, converted)
  std::string out_dir;
  std::string dtype;        // empty: the base config.json's torch_dtype (else its tensors' dtype)
  uint64_t max_shard_bytes = 5'000'000'000;  // transformers' default "5GB"
  bool overwrite = false;   // replace a non-empty out_dir
};

struct MergeResult {
  DType dtype = DType::F32;
  std::vector<std::string> weight_files;  // file names inside out_dir
  uint64_t total_bytes = 0;               // tensor bytes (index metadata.total_size)
  int adapted_tensors = 0;
};

// Writes out_dir as an HF model folder: config.json (torch_dtype set to the output dtype), the
// weights as model.safetensors, or model-0000i-of-0000N.safetensors shards of at most
// max_shard_bytes plus model.safetensors.index.json (metadata.total_size, weight_map), the
// tokenizer files found in model_dir (tokenizer.json, tokenizer_config.json,
// special_tokens_map.json, chat_template.jinja, tokenizer.model) and generation_config.json
// (copied, or made from config.json's bos/eos/pad ids). Atomic: everything is written into a
// temporary folder beside out_dir that is renamed to out_dir at the end; a non-empty out_dir is
// refused unless overwrite.
MergeResult merge_lora(const MergeOptions& opts);

// The output folder contract shared by merge_lora and file exports: throws when `path` exists
// and is not empty (a folder) or exists at all (a file), unless overwrite.
void check_output_path(const std::string& path, bool is_folder, bool overwrite,
                       const std::string& what);

}  // namespace ftune
