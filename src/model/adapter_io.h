// PEFT LoRA adapters on disk (FORMATS.md §3): adapter_config.json + adapter_model.safetensors,
// written exactly as PEFT writes them so `PeftModel.from_pretrained` loads them, and read back
// whether ftune or PEFT wrote them.
#pragma once
#include <string>

#include "model/lora.h"
#include "model/model_spec.h"

namespace ftune {

struct AdapterMeta {
  std::string base_model_name_or_path;
};

// Writes dir/adapter_config.json and dir/adapter_model.safetensors (each atomically).
void save_peft_adapter(const std::string& dir, LoraWeights& lora, const AdapterMeta& meta);

// Reads an adapter for `model`; errors name the file and the key/tensor at fault.
LoraWeights load_peft_adapter(const std::string& dir, const ModelSpec& model, Device device);

// Parses adapter_config.json alone.
LoraSpec load_adapter_config(const std::string& path);

}  // namespace ftune
