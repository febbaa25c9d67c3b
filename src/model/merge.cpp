#include "model/merge.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "backend/ops.h"
#include "core/error.h"
#include "io/atomic_file.h"
#include "io/json_file.h"
#include "model/adapter_io.h"

namespace ftune {

namespace fs = std::filesystem;
using nlohmann::json;

// ---- MergedWeights --------------------------------------------------------------------------

MergedWeights MergedWeights::open(const std::string& model_dir, const std::string& adapter_dir) {
  MergedWeights m;
  m.model_dir_ = model_dir;
  FTUNE_CHECK(fs::is_directory(model_dir), "model folder '{}' does not exist or is not a folder",
              model_dir);
  const std::string cfg_path = model_dir + "/config.json";
  FTUNE_CHECK(fs::exists(cfg_path), "{}: no config.json", model_dir);
  m.config_ = load_hf_config(cfg_path);
  FTUNE_CHECK(!m.config_.raw.contains("quantization_config"),
              "{}: the model is quantized (quantization_config); merge into the unquantized "
              "base model instead", cfg_path);
  m.spec_ = model_spec_from_hf(m.config_, cfg_path);
  m.ckpt_ = CheckpointReader::open_folder(model_dir);
  if (!adapter_dir.empty()) {
    FTUNE_CHECK(fs::is_directory(adapter_dir), "adapter folder '{}' does not exist or is not a "
                "folder", adapter_dir);
    m.lora_ = load_peft_adapter(adapter_dir, m.spec_, Device::cpu());
    for (int l = 0; l < m.spec_.num_layers; ++l)
      for (Proj p : kAllProj)
        if (m.lora_->spec.targets[static_cast<size_t>(p)]) {
          const std::string w = tensor_names::proj_weight(l, p);
          FTUNE_CHECK(m.ckpt_.contains(w), "{}: tensor '{}' is missing (the adapter targets it)",
                      model_dir, w);
          const auto s = m.spec_.proj_shape(p);
          FTUNE_CHECK(m.ckpt_.info(w).shape == Shape({s[0], s[1]}),
                      "{}: tensor '{}' has shape {}, config.json implies [{}, {}]",
                      m.ckpt_.file_of(w), w, shape_str(m.ckpt_.info(w).shape), s[0], s[1]);
          m.adapted_[w] = {l, p};
        }
  }
  // HF module order first (what transformers writes), then whatever else the checkpoint holds.
  std::vector<std::string> order = {tensor_names::embed()};
  for (int l = 0; l < m.spec_.num_layers; ++l) {
    order.push_back(tensor_names::attn_norm(l));
    for (Proj p : kAllProj) {
      if (p == Proj::Gate) order.push_back(tensor_names::mlp_norm(l));
      order.push_back(tensor_names::proj_weight(l, p));
      order.push_back(tensor_names::proj_bias(l, p));
    }
  }
  order.push_back(tensor_names::final_norm());
  order.push_back(tensor_names::lm_head());
  std::set<std::string> seen;
  for (const auto& n : order)
    if (m.ckpt_.contains(n) && seen.insert(n).second) m.names_.push_back(n);
  for (const auto& n : m.ckpt_.names())
    if (seen.insert(n).second) m.names_.push_back(n);
  return m;
}

Tensor MergedWeights::merged_f32(const std::string& name) const {
  Tensor base = ckpt_.tensor(name);
  const DType dt = base.dtype();
  FTUNE_CHECK(dt == DType::F32 || dt == DType::BF16 || dt == DType::F16 || dt == DType::F64,
              "{}: tensor '{}' is {}; only floating-point checkpoints can be merged",
              ckpt_.file_of(name), name, dtype_name(dt));
  Tensor w = base.to_dtype(DType::F32);  // a fresh copy (the file mapping is read-only)
  const auto it = adapted_.find(name);
  if (it == adapted_.end()) return w;
  const auto [layer, proj] = it->second;
  const LoraPair& lp = lora_->layers[static_cast<size_t>(layer)][static_cast<size_t>(proj)];
  // W[out, in] += scaling * B[out, r] @ A[r, in]  (OpenBLAS through the CPU backend).
  static const std::unique_ptr<Ops> ops = make_cpu_ops();
  ops->gemm(lp.B, false, lp.A, false, w, lora_->spec.scaling(), 1.0f);
  return w;
}

// ---- option parsing -------------------------------------------------------------------------

DType parse_merge_dtype(const std::string& s) {
  if (s == "bf16" || s == "bfloat16") return DType::BF16;
  if (s == "fp16" || s == "f16" || s == "float16") return DType::F16;
  if (s == "fp32" || s == "f32" || s == "float32") return DType::F32;
  fail("unknown dtype '{}' (expected bf16, fp16 or fp32)", s);
}

std::string torch_dtype_name(DType dt) {
  switch (dt) {
    case DType::BF16: return "bfloat16";
    case DType::F16: return "float16";
    case DType::F32: return "float32";
    default: fail("no torch dtype name for {}", dtype_name(dt));
  }
}

uint64_t parse_byte_size(const std::string& s) {
  size_t i = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) ++i;
  std::string unit = s.substr(i);
  for (auto& c : unit) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  uint64_t mult = 0;
  if (unit.empty() || unit == "B") mult = 1;
  else if (unit == "KB") mult = 1000;
  else if (unit == "MB") mult = 1000'000;
  else if (unit == "GB") mult = 1000'000'000;
  else if (unit == "KIB") mult = uint64_t{1} << 10;
  else if (unit == "MIB") mult = uint64_t{1} << 20;
  else if (unit == "GIB") mult = uint64_t{1} << 30;
  FTUNE_CHECK(i > 0 && i <= 15 && mult != 0, "invalid size '{}' (expected e.g. 5GB, 500MB, 2GiB "
              "or a number of bytes)", s);
  const uint64_t v = std::stoull(s.substr(0, i)) * mult;
  FTUNE_CHECK(v > 0, "invalid size '{}': must be positive", s);
  return v;
}

// ---- output folder ----------------------------------------------------------------------------

void check_output_path(const std::string& path, bool is_folder, bool overwrite,
                       const std::string& what) {
  FTUNE_CHECK(!path.empty(), "{}: the output path is empty", what);
  if (!fs::exists(path) || overwrite) return;
  if (is_folder) {
    FTUNE_CHECK(fs::is_directory(path), "{}: output '{}' exists and is not a folder", what, path);
    FTUNE_CHECK(fs::is_empty(path), "{}: output folder '{}' is not empty (use --overwrite to "
                "replace it)", what, path);
  } else {
    fail("{}: output file '{}' exists (use --overwrite to replace it)", what, path);
  }
}

namespace {

void write_text(const std::string& path, const std::string& text) {
  AtomicFile f(path);
  f.write(text.data(), text.size());
  f.commit();
}

// A folder built under a temporary name beside the target and renamed over it at the end;
// removed again when the merge fails.
class StagedFolder {
 public:
  explicit StagedFolder(const std::string& target) : target_(fs::absolute(target).lexically_normal()) {
    if (target_.filename().empty()) target_ = target_.parent_path();
    tmp_ = target_.parent_path() / (target_.filename().string() + ".tmp-" + std::to_string(::getpid()));
    fs::create_directories(target_.parent_path());
    fs::remove_all(tmp_);
    fs::create_directory(tmp_);
  }
  ~StagedFolder() {
    std::error_code ec;
    if (!committed_) fs::remove_all(tmp_, ec);
  }
  std::string path() const { return tmp_.string(); }
  void commit() {
    fsync_folder(tmp_.string());
    fs::path old;
    if (fs::exists(target_)) {  // an empty folder, or one --overwrite replaces
      old = target_.parent_path() / (target_.filename().string() + ".old-" + std::to_string(::getpid()));
      fs::remove_all(old);
      fs::rename(target_, old);
    }
    fs::rename(tmp_, target_);
    committed_ = true;
    fsync_folder(target_.parent_path().string());
    if (!old.empty()) fs::remove_all(old);
  }

 private:
  fs::path target_, tmp_;
  bool committed_ = false;
};

struct Shard {
  std::vector<SafetensorsStreamWriter::TensorEntry> entries;
  uint64_t bytes = 0;
};

// transformers' split_torch_state_dict_into_shards: tensors in order, a new shard when the next
// tensor would take the current one past the limit (a tensor larger than the limit gets a shard
// of its own).
std::vector<Shard> plan_shards(const MergedWeights& m, DType dt, uint64_t max_bytes) {
  std::vector<Shard> shards(1);
  for (const auto& name : m.names()) {
    const TensorInfo& ti = m.info(name);
    const uint64_t bytes = static_cast<uint64_t>(shape_numel(ti.shape)) * dtype_size(dt);
    if (!shards.back().entries.empty() && shards.back().bytes + bytes > max_bytes)
      shards.emplace_back();
    shards.back().entries.push_back({name, dt, ti.shape});
    shards.back().bytes += bytes;
  }
  return shards;
}

DType default_dtype(const MergedWeights& m) {
  const std::string& td = m.config().torch_dtype;
  if (td == "bfloat16") return DType::BF16;
  if (td == "float16") return DType::F16;
  if (td == "float32") return DType::F32;
  for (const auto& n : m.names()) {  // no (usable) torch_dtype: the checkpoint's own dtype
    const DType dt = m.info(n).dtype;
    if (dt == DType::BF16 || dt == DType::F16 || dt == DType::F32) return dt;
  }
  return DType::F32;
}

}  // namespace

MergeResult merge_lora(const MergeOptions& o) {
  check_output_path(o.out_dir, true, o.overwrite, "merge");
  FTUNE_CHECK(o.max_shard_bytes > 0, "merge: the maximum shard size must be positive");
  const MergedWeights m = MergedWeights::open(o.model_dir, o.adapter_dir);
  MergeResult r;
  r.dtype = o.dtype.empty() ? default_dtype(m) : parse_merge_dtype(o.dtype);
  for (const auto& n : m.names())
    if (m.adapted(n)) ++r.adapted_tensors;

  StagedFolder out(o.out_dir);
  const std::vector<Shard> shards = plan_shards(m, r.dtype, o.max_shard_bytes);
  json weight_map = json::object();
  for (size_t s = 0; s < shards.size(); ++s) {
    const std::string file = shards.size() == 1
                                 ? std::string("model.safetensors")
                                 : fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, shards.size());
    r.weight_files.push_back(file);
    SafetensorsStreamWriter w(out.path() + "/" + file, shards[s].entries, {{"format", "pt"}});
    for (const auto& e : shards[s].entries) {
      // One tensor at a time: read, merge in fp32, convert, write, drop.
      Tensor t = m.merged_f32(e.name);
      w.write(r.dtype == DType::F32 ? t : t.to_dtype(r.dtype));
      weight_map[e.name] = file;
    }
    w.commit();
    r.total_bytes += shards[s].bytes;
  }
  if (shards.size() > 1) {
    json index = {{"metadata", {{"total_size", r.total_bytes}}}, {"weight_map", weight_map}};
    write_text(out.path() + "/model.safetensors.index.json", index.dump(2) + "\n");
  }

  json cfg = m.config().raw;
  cfg["torch_dtype"] = torch_dtype_name(r.dtype);
  if (cfg.contains("dtype")) cfg["dtype"] = torch_dtype_name(r.dtype);  // transformers v5 name
  write_text(out.path() + "/config.json", cfg.dump(2) + "\n");

  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                        "chat_template.jinja", "tokenizer.model", "generation_config.json"}) {
    const fs::path src = fs::path(o.model_dir) / f;
    if (fs::exists(src)) fs::copy_file(src, fs::path(out.path()) / f);
  }
  if (!fs::exists(fs::path(out.path()) / "generation_config.json")) {
    json gen = {{"_from_model_config", true}};
    for (const char* k : {"bos_token_id", "eos_token_id", "pad_token_id"})
      if (cfg.contains(k) && !cfg[k].is_null()) gen[k] = cfg[k];
    write_text(out.path() + "/generation_config.json", gen.dump(2) + "\n");
  }
  out.commit();
  return r;
}

}  // namespace ftune
