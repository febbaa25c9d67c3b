#include "model/gguf_export.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <functional>
#include <numbers>

#include "core/error.h"
#include "io/gguf_tokenizer.h"
#include "io/gguf_writer.h"
#include "model/merge.h"

namespace ftune {

namespace fs = std::filesystem;

GgufFileType parse_gguf_file_type(const std::string& s) {
  std::string t = s;
  for (auto& c : t) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (t == "f16") return GgufFileType::F16;
  if (t == "bf16") return GgufFileType::BF16;
  if (t == "q8_0") return GgufFileType::Q8_0;
  if (t == "q4_k_m") return GgufFileType::Q4_K_M;
  fail("unknown GGUF type '{}' (expected f16, bf16, q8_0 or q4_k_m)", s);
}

uint32_t gguf_file_type_number(GgufFileType t) {
  switch (t) {
    case GgufFileType::F16: return 1;
    case GgufFileType::BF16: return 32;
    case GgufFileType::Q8_0: return 7;
    case GgufFileType::Q4_K_M: return 15;
  }
  fail("bad GGUF file type");
}

namespace {

bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

// llama-quant.cpp: more bits for the first and last eighth of the layers and every third layer
// between them.
bool use_more_bits(int64_t i, int64_t n) {
  return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

}  // namespace

GgmlType gguf_tensor_type(GgufFileType ft, const std::string& name, const std::vector<int64_t>& shape,
                          int layer, int64_t num_layers, bool has_output) {
  if (shape.size() < 2) return GgmlType::F32;
  const int64_t row = shape.back();
  switch (ft) {
    case GgufFileType::F16: return GgmlType::F16;
    case GgufFileType::BF16: return GgmlType::BF16;
    case GgufFileType::Q8_0: return row % 32 == 0 ? GgmlType::Q8_0 : GgmlType::F16;
    case GgufFileType::Q4_K_M: break;
  }
  GgmlType t = GgmlType::Q4_K;
  if (name == "output.weight" || (!has_output && name == "token_embd.weight")) {
    t = row % 256 != 0 ? GgmlType::Q8_0 : GgmlType::Q6_K;
  } else if (contains(name, "attn_v.weight") || contains(name, "ffn_down")) {
    if (use_more_bits(layer, num_layers)) t = GgmlType::Q6_K;
  }
  if ((t == GgmlType::Q4_K || t == GgmlType::Q6_K) && row % 256 != 0)
    t = t == GgmlType::Q4_K ? GgmlType::Q5_0 : GgmlType::Q8_0;  // llama.cpp's fallbacks
  if (row % ggml_traits(t).block_elems != 0) t = GgmlType::F16;
  return t;
}

void permute_qk_rows(float* w, int64_t rows, int64_t cols, int64_t n_head) {
  FTUNE_CHECK(n_head > 0 && rows % n_head == 0 && (rows / n_head) % 2 == 0,
              "permute_qk_rows: {} rows do not split into {} heads of even size", rows, n_head);
  const int64_t d = rows / n_head, half = d / 2;
  std::vector<float> head(static_cast<size_t>(d * cols));
  for (int64_t h = 0; h < n_head; ++h) {
    float* base = w + h * d * cols;
    std::copy(base, base + d * cols, head.begin());
    for (int64_t i = 0; i < half; ++i)
      for (int64_t c = 0; c < 2; ++c)
        std::copy_n(head.begin() + (c * half + i) * cols, cols, base + (2 * i + c) * cols);
  }
}

namespace {

// One tensor of the file: its GGUF name and how to make its F32 values.
struct ExportTensor {
  std::string gguf_name;
  std::vector<int64_t> shape;
  int layer = -1;
  std::function<Tensor()> values;
};

// HF -> GGUF tensor names (llama.cpp LLM_TENSOR_NAMES for llama/qwen2).
const char* gguf_proj_name(Proj p) {
  switch (p) {
    case Proj::Q: return "attn_q";
    case Proj::K: return "attn_k";
    case Proj::V: return "attn_v";
    case Proj::O: return "attn_output";
    case Proj::Gate: return "ffn_gate";
    case Proj::Up: return "ffn_up";
    case Proj::Down: return "ffn_down";
  }
  fail("bad projection");
}

// llama3 RoPE as divisors of the base frequencies (convert_hf_to_gguf LlamaModel
// generate_extra_tensors; llama.cpp divides theta_i by rope_freqs[i]): the FORMATS.md §2 formula
// written as inv_freq[i] / factor_i.
std::vector<float> llama3_rope_factors(const ModelSpec& s) {
  const int64_t d = s.head_dim;
  const double orig = static_cast<double>(s.rope.original_max_position_embeddings);
  const double low_wl = orig / s.rope.low_freq_factor, high_wl = orig / s.rope.high_freq_factor;
  std::vector<float> f(static_cast<size_t>(d / 2));
  for (int64_t i = 0; i < d / 2; ++i) {
    const double inv = 1.0 / std::pow(s.rope.theta, static_cast<double>(2 * i) / static_cast<double>(d));
    const double wl = 2 * std::numbers::pi / inv;
    double factor;
    if (wl < high_wl) factor = 1.0;
    else if (wl > low_wl) factor = s.rope.factor;
    else {
      const double smooth = (orig / wl - s.rope.low_freq_factor) /
                            (s.rope.high_freq_factor - s.rope.low_freq_factor);
      factor = 1.0 / ((1 - smooth) / s.rope.factor + smooth);
    }
    f[static_cast<size_t>(i)] = static_cast<float>(factor);
  }
  return f;
}

}  // namespace

GgufExportResult export_gguf(const GgufExportOptions& o) {
  check_output_path(o.out_path, false, o.overwrite, "export");
  const GgufFileType ft = parse_gguf_file_type(o.type);
  const MergedWeights m = MergedWeights::open(o.model_dir, o.adapter_dir);
  const ModelSpec& s = m.spec();
  const HFModelConfig& cfg = m.config();
  const std::string arch = s.arch == "qwen2" ? "qwen2" : "llama";  // mistral is llama in llama.cpp
  const bool permute = arch == "llama";
  GgufExportResult r;
  r.architecture = arch;

  // ---- tensors, in the order convert_hf_to_gguf writes them ----
  std::vector<ExportTensor> tensors;
  auto from_hf = [&](const std::string& hf, const std::string& gguf, int layer,
                     int64_t permute_heads) {
    FTUNE_CHECK(m.names().end() != std::find(m.names().begin(), m.names().end(), hf),
                "{}: tensor '{}' is missing", o.model_dir, hf);
    ExportTensor t;
    t.gguf_name = gguf;
    t.shape = m.info(hf).shape;
    t.layer = layer;
    t.values = [&m, hf, permute_heads, shape = t.shape]() {
      Tensor v = m.merged_f32(hf);
      if (permute_heads > 0)
        permute_qk_rows(v.f32(), shape[0], shape.size() > 1 ? shape[1] : 1, permute_heads);
      return v;
    };
    tensors.push_back(std::move(t));
  };
  from_hf(tensor_names::embed(), "token_embd.weight", -1, 0);
  if (s.rope.type == "llama3") {
    ExportTensor t;
    t.gguf_name = "rope_freqs.weight";
    t.shape = {s.head_dim / 2};
    t.values = [&s]() {
      const std::vector<float> f = llama3_rope_factors(s);
      return Tensor::from_vector(f, {static_cast<int64_t>(f.size())});
    };
    tensors.push_back(std::move(t));
  } else {
    FTUNE_CHECK(s.rope.type == "default" || s.rope.type == "linear",
                "export: rope type '{}' has no GGUF form here", s.rope.type);
  }
  for (int l = 0; l < s.num_layers; ++l) {
    const std::string blk = "blk." + std::to_string(l) + ".";
    from_hf(tensor_names::attn_norm(l), blk + "attn_norm.weight", l, 0);
    for (Proj p : kAllProj) {
      if (p == Proj::Gate) from_hf(tensor_names::mlp_norm(l), blk + "ffn_norm.weight", l, 0);
      const int64_t heads = !permute ? 0 : p == Proj::Q ? s.num_heads : p == Proj::K ? s.num_kv_heads : 0;
      from_hf(tensor_names::proj_weight(l, p), blk + gguf_proj_name(p) + ".weight", l, heads);
      if (s.proj_bias[static_cast<size_t>(p)])
        from_hf(tensor_names::proj_bias(l, p), blk + gguf_proj_name(p) + ".bias", l, heads);
    }
  }
  from_hf(tensor_names::final_norm(), "output_norm.weight", -1, 0);
  const bool has_output = !s.tie_word_embeddings;
  if (has_output) from_hf(tensor_names::lm_head(), "output.weight", -1, 0);
  for (const auto& n : m.names()) {  // anything the table does not place is left out, loudly
    bool used = n == tensor_names::embed() || n == tensor_names::final_norm() ||
                (has_output && n == tensor_names::lm_head()) || n.find("rotary_emb.inv_freq") != std::string::npos;
    for (int l = 0; l < s.num_layers && !used; ++l) {
      used = n == tensor_names::attn_norm(l) || n == tensor_names::mlp_norm(l);
      for (Proj p : kAllProj)
        used = used || n == tensor_names::proj_weight(l, p) ||
               (s.proj_bias[static_cast<size_t>(p)] && n == tensor_names::proj_bias(l, p));
    }
    if (!used) r.warnings.push_back(fmt::format("{}: tensor '{}' has no place in the GGUF file; left out",
                                                o.model_dir, n));
  }

  // ---- metadata ----
  GgufWriter w(o.out_path);
  w.add("general.architecture", arch);
  w.add("general.type", std::string("model"));
  w.add("general.name", fs::path(o.model_dir).lexically_normal().filename().string().empty()
                            ? fs::absolute(o.model_dir).lexically_normal().parent_path().filename().string()
                            : fs::path(o.model_dir).lexically_normal().filename().string());
  auto u32 = [](int64_t v) { return static_cast<uint32_t>(v); };
  w.add(arch + ".vocab_size", u32(s.vocab_size));
  w.add(arch + ".context_length", u32(s.max_position_embeddings));
  w.add(arch + ".embedding_length", u32(s.hidden_size));
  w.add(arch + ".block_count", u32(s.num_layers));
  w.add(arch + ".feed_forward_length", u32(s.intermediate_size));
  w.add(arch + ".attention.head_count", u32(s.num_heads));
  w.add(arch + ".attention.head_count_kv", u32(s.num_kv_heads));
  w.add(arch + ".attention.layer_norm_rms_epsilon", static_cast<float>(s.rms_norm_eps));
  w.add(arch + ".attention.key_length", u32(s.head_dim));
  w.add(arch + ".attention.value_length", u32(s.head_dim));
  w.add(arch + ".rope.freq_base", static_cast<float>(s.rope.theta));
  w.add(arch + ".rope.dimension_count", u32(s.head_dim));
  if (s.rope.type == "linear") {
    w.add(arch + ".rope.scaling.type", std::string("linear"));
    w.add(arch + ".rope.scaling.factor", static_cast<float>(s.rope.factor));
  }
  w.add("general.file_type", gguf_file_type_number(ft));
  w.add("general.quantization_version", uint32_t{2});
  GgufTokenizerKeys tk = gguf_tokenizer_keys(o.model_dir, cfg);
  for (auto& [k, v] : tk.kv) w.add(k, std::move(v));
  r.warnings.insert(r.warnings.end(), tk.warnings.begin(), tk.warnings.end());

  std::vector<GgmlType> types;
  for (const auto& t : tensors) {
    const GgmlType ty = gguf_tensor_type(ft, t.gguf_name, t.shape, t.layer, s.num_layers, has_output);
    types.push_back(ty);
    w.add_tensor({t.gguf_name, t.shape, ty});
    ++r.tensors_per_type[std::string(ggml_traits(ty).name)];
  }
  w.write_header();
  // ---- data: one tensor at a time (merged, permuted, encoded, written, dropped) ----
  std::vector<uint8_t> buf;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor v = tensors[i].values();
    buf.resize(ggml_bytes(types[i], v.numel()));
    // Rows are whole blocks, so they encode independently (in parallel: a Q4_K 8B model is
    // minutes of single-core work).
    const int64_t cols = tensors[i].shape.back(), rows = v.numel() / cols;
    const size_t row_bytes = ggml_bytes(types[i], cols);
    const float* src = v.f32();
    uint8_t* dst = buf.data();
    const GgmlType ty = types[i];
#pragma omp parallel for schedule(dynamic, 16) if (rows * cols > (int64_t{1} << 16))
    for (int64_t row = 0; row < rows; ++row)
      ggml_encode(ty, src + row * cols, cols, dst + static_cast<size_t>(row) * row_bytes);
    w.write_tensor(buf.data(), buf.size());
  }
  w.commit();
  r.file_bytes = fs::file_size(o.out_path);
  return r;
}

}  // namespace ftune
