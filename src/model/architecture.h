// The architecture table and the one home of HF tensor names (DESIGN.md: "HF tensor names live
// in one table; the architecture list is one table with a test that loops over all of it").
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace ftune {

// The seven projections LoRA may adapt, in PEFT's usual order.
enum class Proj : uint8_t { Q, K, V, O, Gate, Up, Down };
constexpr int kNumProj = 7;
inline constexpr std::array<Proj, kNumProj> kAllProj = {Proj::Q,    Proj::K,  Proj::V,   Proj::O,
                                                 Proj::Gate, Proj::Up, Proj::Down};

// "q_proj", "gate_proj", ...: the PEFT target_modules names.
std::string_view proj_name(Proj p);
// Module path inside a decoder layer: "self_attn.q_proj", "mlp.down_proj", ...
std::string_view proj_module(Proj p);
// Parses "q_proj" etc.; false when unknown.
bool proj_from_name(std::string_view name, Proj* out);

struct ArchInfo {
  const char* model_type;  // config.json model_type
  const char* hf_class;    // config.json architectures[0]
  bool qkv_bias;           // q/k/v projections always carry a bias (qwen2)
  bool config_attention_bias;  // config's attention_bias adds biases to q/k/v/o (llama)
};

inline constexpr std::array<ArchInfo, 3> kArchitectures = {{
    {"llama", "LlamaForCausalLM", false, true},
    {"mistral", "MistralForCausalLM", false, false},
    {"qwen2", "Qwen2ForCausalLM", true, false},
}};

// Finds the architecture by model_type or HF class name; nullptr when unknown.
const ArchInfo* find_architecture(std::string_view model_type, std::string_view hf_class);
// "llama, mistral, qwen2" for error messages.
std::string supported_architectures();

// HF tensor names.
namespace tensor_names {
std::string embed();
std::string final_norm();
std::string lm_head();
std::string attn_norm(int layer);
std::string mlp_norm(int layer);
std::string proj_weight(int layer, Proj p);
std::string proj_bias(int layer, Proj p);
// PEFT adapter keys: base_model.model.model.layers.{i}.<module>.lora_{A,B}.weight
std::string lora_a(int layer, Proj p);
std::string lora_b(int layer, Proj p);
}  // namespace tensor_names

}  // namespace ftune
