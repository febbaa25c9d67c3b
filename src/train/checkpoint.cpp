#include "train/checkpoint.h"

#include <cmath>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "core/error.h"
#include "core/finite_check.h"
#include "io/json_fields.h"
#include "io/json_file.h"
#include "io/safetensors.h"
#include "train/resume_logs.h"

namespace ftune {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::vector<std::pair<int64_t, fs::path>> list_checkpoints(const std::string& output_dir) {
  std::vector<std::pair<int64_t, fs::path>> v;
  const fs::path root = fs::path(output_dir) / "checkpoints";
  if (!fs::exists(root)) return v;
  const std::regex re("step-([0-9]+)");
  for (const auto& e : fs::directory_iterator(root)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (e.is_directory() && std::regex_match(name, m, re) &&
        fs::exists(e.path() / "trainer_state.json"))
      v.emplace_back(std::stoll(m[1]), e.path());
  }
  std::sort(v.begin(), v.end());
  return v;
}

}  // namespace

std::string save_checkpoint(const std::string& output_dir, LoraWeights& lora, const AdamW& opt,
                            const TrainerState& st, const AdapterMeta& meta, int64_t keep_last) {
  const fs::path root = fs::path(output_dir) / "checkpoints";
  fs::create_directories(root);
  const fs::path final_dir = root / ("step-" + std::to_string(st.global_step));
  const fs::path tmp = root / (".tmp-step-" + std::to_string(st.global_step));
  remove_stale_checkpoint_temps(output_dir);  // this step's or an earlier killed run's
  fs::create_directories(tmp);
  save_peft_adapter(tmp.string(), lora, meta);
  std::vector<std::pair<std::string, Tensor>> state;
  for (auto& [name, t] : opt.state())
    state.emplace_back(name, t.device().is_cpu() ? t : t.to(Device::cpu()));
  write_safetensors((tmp / "optimizer.safetensors").string(), state);
  json j = {{"global_step", st.global_step},
                  {"epoch", st.epoch},
                  {"batch_in_epoch", st.batch_in_epoch},
                  {"world_size", st.world_size},
                  {"tokens_seen", st.tokens_seen},
                  {"elapsed_s", st.elapsed_s},
                  {"optimizer_steps", opt.steps_taken()},
                  {"config_fingerprint", st.config_fingerprint}};
  if (st.loss_scaler.skipped_steps > 0) j["skipped_steps"] = st.loss_scaler.skipped_steps;
  if (st.loss_scaler.scale > 0) {
    j["loss_scale"] = st.loss_scaler.scale;
    j["loss_scale_good_steps"] = st.loss_scaler.good_steps;
  }
  {
    std::ofstream f(tmp / "trainer_state.json");
    f << j.dump(2) << "\n";
    FTUNE_CHECK(f.good(), "checkpoint: cannot write {}", (tmp / "trainer_state.json").string());
  }
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  if (keep_last > 0) {
    auto all = list_checkpoints(output_dir);
    while (static_cast<int64_t>(all.size()) > keep_last) {
      fs::remove_all(all.front().second);
      all.erase(all.begin());
    }
  }
  return final_dir.string();
}

std::optional<std::string> latest_checkpoint(const std::string& output_dir) {
  auto all = list_checkpoints(output_dir);
  if (all.empty()) return std::nullopt;
  return all.back().second.string();
}

std::string checkpoint_fingerprint(const std::string& dir) {
  const std::string sf = dir + "/trainer_state.json";
  return json_string(read_json_file(sf), "config_fingerprint", sf, std::string());
}

int64_t checkpoint_world_size(const std::string& dir) {
  const std::string sf = dir + "/trainer_state.json";
  return json_int(read_json_file(sf), "world_size", sf, 1);
}

TrainerState load_checkpoint(const std::string& dir, LoraWeights& lora, AdamW& opt) {
  const json j = read_json_file(dir + "/trainer_state.json");
  SafetensorsFile adapter = SafetensorsFile::open(dir + "/adapter_model.safetensors");
  for (auto& p : lora.params()) {
    FTUNE_CHECK(adapter.contains(p.name), "{}: checkpoint lacks '{}' (different LoRA settings?)",
                dir, p.name);
    Tensor t = adapter.tensor(p.name);
    FTUNE_CHECK(t.shape() == p.value->shape() && t.dtype() == DType::F32,
                "{}: '{}' is {} {}, expected F32 {}", dir, p.name, dtype_name(t.dtype()),
                shape_str(t.shape()), shape_str(p.value->shape()));
    check_finite(t, fmt::format("{}/adapter_model.safetensors: tensor '{}'", dir, p.name));
    p.value->copy_from(p.value->device().is_cpu() ? t : t.to(p.value->device()));
  }
  SafetensorsFile optf = SafetensorsFile::open(dir + "/optimizer.safetensors");
  std::vector<std::pair<std::string, Tensor>> state;
  for (const auto& n : optf.names()) state.emplace_back(n, optf.tensor(n));
  for (const auto& [name, t] : state)
    check_finite(t, fmt::format("{}/optimizer.safetensors: tensor '{}'", dir, name));
  const std::string sf = dir + "/trainer_state.json";
  const int64_t optimizer_steps = json_int(j, "optimizer_steps", sf);
  TrainerState st;
  st.global_step = json_int(j, "global_step", sf);
  st.epoch = json_int(j, "epoch", sf);
  st.batch_in_epoch = json_int(j, "batch_in_epoch", sf);
  st.world_size = json_int(j, "world_size", sf, 1);
  st.tokens_seen = json_int(j, "tokens_seen", sf, 0);
  st.elapsed_s = json_number(j, "elapsed_s", sf, 0.0);
  st.config_fingerprint = json_string(j, "config_fingerprint", sf, std::string());
  FTUNE_CHECK(st.global_step >= 0 && st.epoch >= 0 && st.batch_in_epoch >= 0 && optimizer_steps >= 0,
              "{}: global_step, epoch, batch_in_epoch and optimizer_steps must be >= 0", sf);
  FTUNE_CHECK(st.world_size >= 1, "{}: world_size must be >= 1, got {}", sf, st.world_size);
  st.loss_scaler.skipped_steps = json_int(j, "skipped_steps", sf, 0);
  st.loss_scaler.scale = json_number(j, "loss_scale", sf, 0.0);
  st.loss_scaler.good_steps = json_int(j, "loss_scale_good_steps", sf, 0);
  FTUNE_CHECK(st.loss_scaler.skipped_steps >= 0 && st.loss_scaler.good_steps >= 0 &&
                  std::isfinite(st.loss_scaler.scale) && st.loss_scaler.scale >= 0,
              "{}: skipped_steps, loss_scale and loss_scale_good_steps must be >= 0", sf);
  FTUNE_CHECK(st.global_step == optimizer_steps + st.loss_scaler.skipped_steps,
              "{}: global_step {} is not optimizer_steps {} + skipped_steps {}", sf,
              st.global_step, optimizer_steps, st.loss_scaler.skipped_steps);
  opt.load_state(state, optimizer_steps);
  return st;
}

}  // namespace ftune
