#include "model/architecture.h"

#include <fmt/format.h>

namespace ftune {

namespace {
struct ProjRow {
  Proj p;
  const char* name;
  const char* module;
};
constexpr std::array<ProjRow, kNumProj> kProjRows = {{
    {Proj::Q, "q_proj", "self_attn.q_proj"},
    {Proj::K, "k_proj", "self_attn.k_proj"},
    {Proj::V, "v_proj", "self_attn.v_proj"},
    {Proj::O, "o_proj", "self_attn.o_proj"},
    {Proj::Gate, "gate_proj", "mlp.gate_proj"},
    {Proj::Up, "up_proj", "mlp.up_proj"},
    {Proj::Down, "down_proj", "mlp.down_proj"},
}};
static_assert(kProjRows.size() == kNumProj, "one row per projection");
}  // namespace

std::string_view proj_name(Proj p) { return kProjRows[static_cast<size_t>(p)].name; }
std::string_view proj_module(Proj p) { return kProjRows[static_cast<size_t>(p)].module; }

bool proj_from_name(std::string_view name, Proj* out) {
  for (const auto& r : kProjRows) {
    if (name == r.name) {
      *out = r.p;
      return true;
    }
  }
  return false;
}

const ArchInfo* find_architecture(std::string_view model_type, std::string_view hf_class) {
  for (const auto& a : kArchitectures) {
    if (!model_type.empty() && model_type == a.model_type) return &a;
  }
  for (const auto& a : kArchitectures) {
    if (!hf_class.empty() && hf_class == a.hf_class) return &a;
  }
  return nullptr;
}

std::string supported_architectures() {
  std::string s;
  for (const auto& a : kArchitectures) {
    if (!s.empty()) s += ", ";
    s += a.model_type;
  }
  return s;
}

namespace tensor_names {
std::string embed() { return "model.embed_tokens.weight"; }
std::string final_norm() { return "model.norm.weight"; }
std::string lm_head() { return "lm_head.weight"; }
std::string attn_norm(int l) { return fmt::format("model.layers.{}.input_layernorm.weight", l); }
std::string mlp_norm(int l) {
  return fmt::format("model.layers.{}.post_attention_layernorm.weight", l);
}
std::string proj_weight(int l, Proj p) {
  return fmt::format("model.layers.{}.{}.weight", l, proj_module(p));
}
std::string proj_bias(int l, Proj p) {
  return fmt::format("model.layers.{}.{}.bias", l, proj_module(p));
}
std::string lora_a(int l, Proj p) {
  return fmt::format("base_model.model.model.layers.{}.{}.lora_A.weight", l, proj_module(p));
}
std::string lora_b(int l, Proj p) {
  return fmt::format("base_model.model.model.layers.{}.{}.lora_B.weight", l, proj_module(p));
}
}  // namespace tensor_names

}  // namespace ftune
