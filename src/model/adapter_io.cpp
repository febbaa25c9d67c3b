#include "model/adapter_io.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/finite_check.h"
#include "io/json_fields.h"
#include "io/json_file.h"
#include "io/safetensors.h"

namespace ftune {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

void write_text_atomic(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    FTUNE_CHECK(f.good(), "cannot write {}", tmp);
    f << text;
    f.flush();
    FTUNE_CHECK(f.good(), "error writing {}", tmp);
  }
  fs::rename(tmp, path);
}

}  // namespace

void save_peft_adapter(const std::string& dir, LoraWeights& lora, const AdapterMeta& meta) {
  fs::create_directories(dir);
  const LoraSpec& s = lora.spec;
  json cfg = {
      {"alpha_pattern", json::object()},
      {"auto_mapping", nullptr},
      {"base_model_name_or_path", meta.base_model_name_or_path},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"layers_pattern", nullptr},
      {"layers_to_transform", nullptr},
      {"lora_alpha", s.alpha},
      {"lora_dropout", s.dropout},
      {"modules_to_save", nullptr},
      {"peft_type", "LORA"},
      {"r", s.r},
      {"rank_pattern", json::object()},
      {"revision", nullptr},
      {"target_modules", s.target_names()},
      {"task_type", "CAUSAL_LM"},
      {"use_dora", false},
      {"use_rslora", s.use_rslora},
  };
  // An integral alpha is written as an integer, as PEFT configs usually carry it.
  if (s.alpha == static_cast<double>(static_cast<int64_t>(s.alpha)))
    cfg["lora_alpha"] = static_cast<int64_t>(s.alpha);
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (auto& p : lora.params()) {
    Tensor t = p.value->device().is_cpu() ? *p.value : p.value->to(Device::cpu());
    tensors.emplace_back(p.name, t);
  }
  write_safetensors(dir + "/adapter_model.safetensors", tensors, {{"format", "pt"}});
  write_text_atomic(dir + "/adapter_config.json", cfg.dump(2) + "\n");
}

LoraSpec load_adapter_config(const std::string& path) {
  const json cfg = read_json_file(path);
  FTUNE_CHECK(cfg.is_object(), "{}: expected a JSON object", path);
  auto get = [&](const char* key) -> const json& {
    FTUNE_CHECK(cfg.contains(key), "{}: missing key '{}'", path, key);
    return cfg.at(key);
  };
  const json& pt = get("peft_type");
  FTUNE_CHECK(pt.is_string() && pt.get<std::string>() == "LORA",
              "{}: peft_type is {}, only LORA adapters are supported", path, pt.dump());
  LoraSpec s;
  const json& r = get("r");
  FTUNE_CHECK(r.is_number_integer() && r.get<int64_t>() > 0, "{}: r must be a positive integer, got {}",
              path, r.dump());
  s.r = r.get<int64_t>();
  s.alpha = json_number(cfg, "lora_alpha", path, 8.0);
  s.dropout = json_number(cfg, "lora_dropout", path, 0.0);
  s.use_rslora = json_bool(cfg, "use_rslora", path, false);
  FTUNE_CHECK(!json_bool(cfg, "use_dora", path, false),
              "{}: DoRA adapters (use_dora) are not supported", path);
  FTUNE_CHECK(!json_bool(cfg, "fan_in_fan_out", path, false),
              "{}: fan_in_fan_out adapters are not supported", path);
  for (const char* k : {"rank_pattern", "alpha_pattern"}) {
    if (cfg.contains(k) && !cfg.at(k).is_null())
      FTUNE_CHECK(cfg.at(k).empty(), "{}: per-module {} is not supported", path, k);
  }
  // Features that add weights or change which layers are adapted: ftune cannot apply them, so
  // an adapter using them is refused rather than used (or merged) without them.
  if (cfg.contains("bias") && !cfg.at("bias").is_null())
    FTUNE_CHECK(cfg.at("bias").is_string() && cfg.at("bias").get<std::string>() == "none",
                "{}: bias {} is not supported (only \"none\")", path, cfg.at("bias").dump());
  FTUNE_CHECK(!json_bool(cfg, "lora_bias", path, false),
              "{}: lora_bias adapters are not supported", path);
  for (const char* k : {"modules_to_save", "layers_to_transform", "layer_replication"}) {
    if (cfg.contains(k) && !cfg.at(k).is_null())
      FTUNE_CHECK(cfg.at(k).is_array() && cfg.at(k).empty(), "{}: {} is not supported (got {})",
                  path, k, cfg.at(k).dump());
  }
  const json& tm = get("target_modules");
  s.targets.fill(false);
  if (tm.is_string()) {
    FTUNE_CHECK(tm.get<std::string>() == "all-linear",
                "{}: target_modules as a regex ('{}') is not supported; give a list", path,
                tm.get<std::string>());
    s.targets.fill(true);
  } else {
    FTUNE_CHECK(tm.is_array(), "{}: target_modules must be a list", path);
    for (const auto& m : tm) {
      Proj p;
      FTUNE_CHECK(m.is_string() && proj_from_name(m.get<std::string>(), &p),
                  "{}: unsupported target module {} (supported: q_proj, k_proj, v_proj, o_proj, "
                  "gate_proj, up_proj, down_proj)",
                  path, m.dump());
      s.targets[static_cast<size_t>(p)] = true;
    }
  }
  s.validate();
  return s;
}

LoraWeights load_peft_adapter(const std::string& dir, const ModelSpec& model, Device device) {
  const std::string cfg_path = dir + "/adapter_config.json";
  const std::string st_path = dir + "/adapter_model.safetensors";
  FTUNE_CHECK(fs::exists(cfg_path), "{}: no adapter_config.json", dir);
  FTUNE_CHECK(fs::exists(st_path), "{}: no adapter_model.safetensors", dir);
  LoraSpec spec = load_adapter_config(cfg_path);
  SafetensorsFile file = SafetensorsFile::open(st_path);
  LoraWeights w = LoraWeights::allocate(model, spec, device);
  size_t used = 0;
  auto fetch = [&](const std::string& key, const Shape& shape) {
    std::string name = key;
    if (!file.contains(name)) {
      // Older PEFT versions kept the adapter name in the key.
      const std::string alt = key.substr(0, key.size() - 7) + ".default.weight";
      FTUNE_CHECK(file.contains(alt), "{}: tensor '{}' is missing", st_path, key);
      name = alt;
    }
    Tensor t = file.tensor(name);
    FTUNE_CHECK(t.shape() == shape, "{}: tensor '{}' has shape {}, expected {}", st_path, name,
                shape_str(t.shape()), shape_str(shape));
    ++used;
    check_finite(t, fmt::format("{}: tensor '{}'", st_path, name));
    return t.to_dtype(DType::F32);
  };
  for (int l = 0; l < model.num_layers; ++l) {
    for (Proj p : kAllProj) {
      if (!spec.targets[static_cast<size_t>(p)]) continue;
      const auto s = model.proj_shape(p);
      LoraPair& lp = w.layers[static_cast<size_t>(l)][static_cast<size_t>(p)];
      lp.A.copy_from(fetch(tensor_names::lora_a(l, p), {spec.r, s[1]}));
      lp.B.copy_from(fetch(tensor_names::lora_b(l, p), {s[0], spec.r}));
    }
  }
  FTUNE_CHECK(used == file.names().size(),
              "{}: holds {} tensors but the config's target modules account for {} (adapter for a "
              "different model?)",
              st_path, file.names().size(), used);
  return w;
}

}  // namespace ftune
