// LoRA merge (model/merge.h, `ftune merge`): every merged tensor of the golden fixtures, whose
// adapters PEFT wrote (tests/golden/make_goldens.py; plain and rsLoRA scaling, all seven or two
// target modules, llama/mistral/qwen2, tied and untied embeddings), must equal W + s * B @ A
// computed here in double from the base and adapter files; shards, index, dtypes, refusals and
// the atomic output folder.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "io/safetensors.h"
#include "model/merge.h"
#include "support/test_support.h"

using namespace ftune;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

json read_json(const std::string& path) {
  std::ifstream f(path);
  return json::parse(f);
}

std::vector<double> as_double(const Tensor& t) {
  const Tensor f = t.to_dtype(DType::F32);
  const float* p = f.f32();
  return std::vector<double>(p, p + f.numel());
}

// name -> expected values (double), computed from the fixture's files alone.
std::map<std::string, std::vector<double>> expected_merge(const std::string& fixture) {
  const json cfg = read_json(fixture + "/adapter/adapter_config.json");
  const double r = cfg["r"].get<double>(), alpha = cfg["lora_alpha"].get<double>();
  const double s = cfg.value("use_rslora", false) ? alpha / std::sqrt(r) : alpha / r;
  const SafetensorsFile base = SafetensorsFile::open(fixture + "/model.safetensors");
  const SafetensorsFile ad = SafetensorsFile::open(fixture + "/adapter/adapter_model.safetensors");
  std::map<std::string, std::vector<double>> out;
  for (const auto& name : base.names()) {
    std::vector<double> w = as_double(base.tensor(name));
    const std::string key = "base_model.model." + name.substr(0, name.size() - 7);  // - ".weight"
    if (name.size() > 7 && ad.contains(key + ".lora_A.weight")) {
      const Tensor A = ad.tensor(key + ".lora_A.weight"), B = ad.tensor(key + ".lora_B.weight");
      const std::vector<double> a = as_double(A), b = as_double(B);
      const int64_t rank = A.dim(0), in = A.dim(1), out_f = B.dim(0);
      for (int64_t o = 0; o < out_f; ++o)
        for (int64_t i = 0; i < in; ++i) {
          double d = 0;
          for (int64_t k = 0; k < rank; ++k) d += b[o * rank + k] * a[k * in + i];
          w[o * in + i] += s * d;
        }
    }
    out[name] = std::move(w);
  }
  return out;
}

const char* kFixtures[] = {"llama", "llama_tied_rope3", "mistral", "qwen2"};

}  // namespace

TEST(Merge, GoldenAdaptersGiveWPlusScaledBA) {
  for (const char* fx : kFixtures) {
    SCOPED_TRACE(fx);
    const std::string fixture = test::data_path(std::string("golden/fixtures/") + fx);
    const std::string out = test::temp_dir("merge_golden") + "/merged";
    MergeOptions o;
    o.model_dir = fixture;
    o.adapter_dir = fixture + "/adapter";
    o.out_dir = out;
    o.max_shard_bytes = 100'000;  // several shards for every fixture
    const MergeResult r = merge_lora(o);
    EXPECT_EQ(r.dtype, DType::F32);  // the fixtures' torch_dtype
    EXPECT_GT(r.weight_files.size(), 2u);
    const auto want = expected_merge(fixture);
    int changed = 0;
    const CheckpointReader got = CheckpointReader::open_folder(out);  // through the index
    ASSERT_EQ(got.names().size(), want.size());
    for (const auto& [name, w] : want) {
      ASSERT_TRUE(got.contains(name)) << name;
      const std::vector<double> g = as_double(got.tensor(name));
      ASSERT_EQ(g.size(), w.size()) << name;
      const std::vector<double> base = as_double(SafetensorsFile::open(fixture + "/model.safetensors").tensor(name));
      // fp32 GEMM and add vs double: a few fp32 ulps of the tensor's scale (elements near zero
      // come from cancellation, so the bound is not relative to each element alone).
      double scale = 0;
      for (double v : w) scale = std::max(scale, std::abs(v));
      double worst = 0;
      bool differs = false;
      for (size_t i = 0; i < g.size(); ++i) {
        worst = std::max(worst, std::abs(g[i] - w[i]) / (1e-6 * scale + 1e-6 * std::abs(w[i])));
        differs = differs || g[i] != base[i];
      }
      EXPECT_LE(worst, 1.0) << name;
      changed += differs;
    }
    EXPECT_EQ(changed, r.adapted_tensors);
    EXPECT_GT(r.adapted_tensors, 0);
    // Index: every tensor named once, total_size = the tensor bytes.
    const json idx = read_json(out + "/model.safetensors.index.json");
    EXPECT_EQ(idx["weight_map"].size(), want.size());
    uint64_t bytes = 0;
    for (const auto& n : got.names()) bytes += got.info(n).end - got.info(n).begin;
    EXPECT_EQ(idx["metadata"]["total_size"].get<uint64_t>(), bytes);
    for (size_t i = 0; i < r.weight_files.size(); ++i)
      EXPECT_EQ(r.weight_files[i], fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1,
                                               r.weight_files.size()));
    const json cfg = read_json(out + "/config.json");
    EXPECT_EQ(cfg["torch_dtype"], "float32");
    EXPECT_EQ(cfg["num_hidden_layers"], read_json(fixture + "/config.json")["num_hidden_layers"]);
    EXPECT_TRUE(fs::exists(out + "/generation_config.json"));
  }
}

TEST(Merge, Bf16OutputIsTheRoundedFp32Merge) {
  const std::string fixture = test::data_path("golden/fixtures/llama");
  const std::string out = test::temp_dir("merge_bf16") + "/m";
  MergeOptions o;
  o.model_dir = fixture;
  o.adapter_dir = fixture + "/adapter";
  o.out_dir = out;
  o.dtype = "bf16";
  const MergeResult r = merge_lora(o);
  EXPECT_EQ(r.weight_files, std::vector<std::string>{"model.safetensors"});
  EXPECT_FALSE(fs::exists(out + "/model.safetensors.index.json"));
  EXPECT_EQ(read_json(out + "/config.json")["torch_dtype"], "bfloat16");
  const SafetensorsFile f = SafetensorsFile::open(out + "/model.safetensors");
  for (const auto& [name, w] : expected_merge(fixture)) {
    const Tensor t = f.tensor(name);
    ASSERT_EQ(t.dtype(), DType::BF16) << name;
    const std::vector<double> g = as_double(t);
    double scale = 0;
    for (double v : w) scale = std::max(scale, std::abs(v));
    for (size_t i = 0; i < g.size(); ++i)  // bf16 rounding (2^-8) of the fp32 merge
      ASSERT_LE(std::abs(g[i] - w[i]), std::ldexp(std::abs(w[i]), -8) + 1e-6 * scale) << name << " " << i;
  }
}

TEST(Merge, RefusesUnsupportedAdaptersAndKeepsOutputsAtomic) {
  const std::string fixture = test::data_path("golden/fixtures/llama");
  const std::string d = test::temp_dir("merge_refuse");
  auto adapter_with = [&](const std::string& tag, const std::function<void(json&)>& edit) {
    const std::string a = d + "/" + tag;
    fs::create_directories(a);
    fs::copy_file(fixture + "/adapter/adapter_model.safetensors", a + "/adapter_model.safetensors");
    json cfg = read_json(fixture + "/adapter/adapter_config.json");
    edit(cfg);
    std::ofstream(a + "/adapter_config.json") << cfg.dump();
    return a;
  };
  auto merge_err = [&](const std::string& adapter, const std::string& out) {
    MergeOptions o;
    o.model_dir = fixture;
    o.adapter_dir = adapter;
    o.out_dir = out;
    return test::error_of([&] { merge_lora(o); });
  };
  EXPECT_NE(merge_err(adapter_with("dora", [](json& c) { c["use_dora"] = true; }), d + "/o1")
                .find("DoRA adapters (use_dora) are not supported"), std::string::npos);
  EXPECT_NE(merge_err(adapter_with("mts", [](json& c) { c["modules_to_save"] = {"lm_head"}; }), d + "/o2")
                .find("modules_to_save is not supported"), std::string::npos);
  EXPECT_NE(merge_err(adapter_with("bias", [](json& c) { c["bias"] = "all"; }), d + "/o3")
                .find("bias \"all\" is not supported"), std::string::npos);
  EXPECT_NE(merge_err(adapter_with("fifo", [](json& c) { c["fan_in_fan_out"] = true; }), d + "/o4")
                .find("fan_in_fan_out adapters are not supported"), std::string::npos);
  // An adapter made for another model: the mismatching tensor is named with both shapes.
  const std::string wrong = adapter_with("wrong", [](json&) {});
  {
    const std::string key = "base_model.model.model.layers.1.self_attn.k_proj.lora_A.weight";
    std::vector<std::pair<std::string, Tensor>> ts;
    const SafetensorsFile f = SafetensorsFile::open(fixture + "/adapter/adapter_model.safetensors");
    for (const auto& n : f.names())
      ts.emplace_back(n, n == key ? test::random_tensor({4, 48}, 7) : f.tensor(n).clone());
    write_safetensors(wrong + "/adapter_model.safetensors", ts);
  }
  const std::string e = merge_err(wrong, d + "/o5");
  EXPECT_NE(e.find("tensor 'base_model.model.model.layers.1.self_attn.k_proj.lora_A.weight' has "
                   "shape [4, 48], expected [4, 64]"), std::string::npos) << e;
  // A missing adapter file.
  fs::remove(wrong + "/adapter_model.safetensors");
  EXPECT_NE(merge_err(wrong, d + "/o6").find(wrong + ": no adapter_model.safetensors"),
            std::string::npos);
  // Nothing was created by the refused merges, and no temporary folder is left behind.
  for (const auto& entry : fs::directory_iterator(d)) {
    const std::string n = entry.path().filename().string();
    EXPECT_TRUE(n == "dora" || n == "mts" || n == "bias" || n == "fifo" || n == "wrong") << n;
  }
  // A non-empty output folder is refused unless overwrite, and then replaced whole.
  const std::string out = d + "/full";
  fs::create_directories(out);
  std::ofstream(out + "/keep.txt") << "x";
  EXPECT_NE(merge_err(fixture + "/adapter", out).find("output folder '" + out + "' is not empty"),
            std::string::npos);
  EXPECT_TRUE(fs::exists(out + "/keep.txt"));
  MergeOptions o;
  o.model_dir = fixture;
  o.adapter_dir = fixture + "/adapter";
  o.out_dir = out;
  o.overwrite = true;
  merge_lora(o);
  EXPECT_FALSE(fs::exists(out + "/keep.txt"));
  EXPECT_TRUE(fs::exists(out + "/model.safetensors"));
  // An empty existing folder is fine.
  fs::create_directories(d + "/empty");
  o.out_dir = d + "/empty";
  o.overwrite = false;
  merge_lora(o);
  EXPECT_TRUE(fs::exists(d + "/empty/config.json"));
}

TEST(Merge, ByteSizesAndDtypes) {
  EXPECT_EQ(parse_byte_size("5GB"), 5'000'000'000u);
  EXPECT_EQ(parse_byte_size("500MB"), 500'000'000u);
  EXPECT_EQ(parse_byte_size("2GiB"), uint64_t{2} << 30);
  EXPECT_EQ(parse_byte_size("100kb"), 100'000u);
  EXPECT_EQ(parse_byte_size("4096"), 4096u);
  EXPECT_NE(test::error_of([] { parse_byte_size("5 GB"); }).find("invalid size '5 GB'"), std::string::npos);
  EXPECT_NE(test::error_of([] { parse_byte_size("0"); }).find("must be positive"), std::string::npos);
  EXPECT_EQ(parse_merge_dtype("bf16"), DType::BF16);
  EXPECT_EQ(parse_merge_dtype("float16"), DType::F16);
  EXPECT_EQ(parse_merge_dtype("fp32"), DType::F32);
  EXPECT_NE(test::error_of([] { parse_merge_dtype("int8"); }).find("unknown dtype 'int8'"), std::string::npos);
}
