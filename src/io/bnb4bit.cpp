#include "io/bnb4bit.h"

#include <nlohmann/json.hpp>

#include <cstring>

#include "core/error.h"

namespace ftune {

namespace {

constexpr const char* kStatePrefix = ".quant_state.bitsandbytes__";

// A CPU copy of a checkpoint tensor with the given dtype and element count.
Tensor read_tensor(const CheckpointReader& ckpt, const std::string& origin, const std::string& name,
                   DType dt, int64_t numel, const std::string& what) {
  FTUNE_CHECK(ckpt.contains(name), "{}: tensor '{}' is missing ({} of a bitsandbytes 4-bit weight)",
              origin, name, what);
  const TensorInfo& info = ckpt.info(name);
  FTUNE_CHECK(info.dtype == dt && shape_numel(info.shape) == numel,
              "{}: tensor '{}' in {} is {} {}, expected {} with {} elements ({})", origin, name,
              ckpt.file_of(name), dtype_name(info.dtype), shape_str(info.shape), dtype_name(dt),
              numel, what);
  return ckpt.tensor(name).clone().view({numel});
}

int64_t json_int(const nlohmann::json& j, const char* key, const std::string& where) {
  FTUNE_CHECK(j.contains(key) && j[key].is_number_integer(), "{}: '{}' missing or not an integer",
              where, key);
  return j[key].get<int64_t>();
}

}  // namespace

std::optional<Bnb4bitConfig> bnb4bit_config(const HFModelConfig& cfg, const std::string& origin) {
  if (!cfg.raw.is_object() || !cfg.raw.contains("quantization_config")) return std::nullopt;
  const nlohmann::json& q = cfg.raw["quantization_config"];
  if (q.is_null()) return std::nullopt;
  FTUNE_CHECK(q.is_object(), "{}: quantization_config: expected an object", origin);
  const std::string method = q.value("quant_method", std::string());
  FTUNE_CHECK(method == "bitsandbytes",
              "{}: quantization_config.quant_method '{}' is not supported; ftune loads "
              "bitsandbytes 4-bit (nf4) checkpoints and unquantized ones",
              origin, method);
  auto flag = [&](const char* a, const char* b) {
    for (const char* k : {a, b})
      if (q.contains(k) && q[k].is_boolean() && q[k].get<bool>()) return true;
    return false;
  };
  FTUNE_CHECK(!flag("load_in_8bit", "_load_in_8bit"),
              "{}: quantization_config.load_in_8bit: 8-bit bitsandbytes checkpoints are not "
              "supported (4-bit nf4 only)",
              origin);
  FTUNE_CHECK(flag("load_in_4bit", "_load_in_4bit"),
              "{}: quantization_config: bitsandbytes without load_in_4bit is not supported", origin);
  Bnb4bitConfig c;
  c.quant_type = q.value("bnb_4bit_quant_type", std::string("fp4"));  // bnb/HF default: fp4
  FTUNE_CHECK(c.quant_type == "nf4",
              "{}: quantization_config.bnb_4bit_quant_type '{}' is not supported (nf4 only)",
              origin, c.quant_type);
  c.double_quant = q.value("bnb_4bit_use_double_quant", false);
  if (q.contains("bnb_4bit_compute_dtype") && q["bnb_4bit_compute_dtype"].is_string())
    c.compute_dtype = q["bnb_4bit_compute_dtype"].get<std::string>();
  return c;
}

bool is_bnb4bit_weight(const CheckpointReader& ckpt, const std::string& weight_name) {
  if (!ckpt.contains(weight_name) || ckpt.info(weight_name).dtype != DType::U8) return false;
  for (const char* t : {"nf4", "fp4"})
    if (ckpt.contains(weight_name + kStatePrefix + t)) return true;
  return false;
}

Nf4Weight read_bnb4bit_weight(const CheckpointReader& ckpt, const std::string& weight_name,
                              const Shape& expected, const std::string& origin) {
  const std::string& W = weight_name;
  FTUNE_CHECK(!ckpt.contains(W + kStatePrefix + std::string("fp4")),
              "{}: tensor '{}' is bitsandbytes fp4; only nf4 4-bit weights are supported", origin,
              W);
  const std::string state_name = W + kStatePrefix + "nf4";
  FTUNE_CHECK(ckpt.contains(state_name),
              "{}: tensor '{}' has no quant state '{}' (not a bitsandbytes 4-bit weight?)", origin,
              W, state_name);
  const std::string where = fmt::format("{}: tensor '{}'", origin, state_name);
  nlohmann::json st;
  {
    const Tensor s = ckpt.tensor(state_name);
    FTUNE_CHECK(s.dtype() == DType::U8, "{}: expected U8 (UTF-8 JSON), got {}", where,
                dtype_name(s.dtype()));
    const std::string text(static_cast<const char*>(s.raw()), s.nbytes());
    st = nlohmann::json::parse(text, nullptr, false);
    FTUNE_CHECK(st.is_object(), "{}: not a JSON object", where);
  }
  const std::string qt = st.value("quant_type", std::string());
  FTUNE_CHECK(qt == "nf4", "{}: quant_type '{}' is not supported (nf4 only)", where, qt);
  Nf4Weight w;
  w.blocksize = json_int(st, "blocksize", where);
  FTUNE_CHECK(nf4::valid_blocksize(w.blocksize),
              "{}: blocksize {} is not supported (bitsandbytes' 32 ... 4096, powers of two)", where,
              w.blocksize);
  FTUNE_CHECK(st.contains("shape") && st["shape"].is_array(), "{}: 'shape' missing", where);
  for (const auto& d : st["shape"]) {
    FTUNE_CHECK(d.is_number_integer(), "{}: 'shape' holds a non-integer", where);
    w.shape.push_back(d.get<int64_t>());
  }
  FTUNE_CHECK(w.shape == expected, "{}: shape {} does not match the model's {} for '{}'", where,
              shape_str(w.shape), shape_str(expected), W);
  const std::string dt = st.value("dtype", std::string());
  FTUNE_CHECK(dt == "bfloat16" || dt == "float16" || dt == "float32",
              "{}: dtype '{}' is not bfloat16, float16 or float32", where, dt);
  const int64_t n = w.numel(), nb = w.nblocks();
  w.packed = read_tensor(ckpt, origin, W, DType::U8, (n + 1) / 2, "packed 4-bit codes");
  w.code = read_tensor(ckpt, origin, W + ".quant_map", DType::F32, 16, "quant_map");
  const bool nested = st.contains("nested_offset") || ckpt.contains(W + ".nested_absmax");
  if (nested) {
    w.nested_blocksize = json_int(st, "nested_blocksize", where);
    FTUNE_CHECK(w.nested_blocksize > 0 && w.nested_blocksize <= 4096,
                "{}: nested_blocksize {} is not supported", where, w.nested_blocksize);
    FTUNE_CHECK(st.contains("nested_offset") && st["nested_offset"].is_number(),
                "{}: 'nested_offset' missing or not a number", where);
    w.nested_offset = st["nested_offset"].get<float>();
    const std::string ndt = st.value("nested_dtype", std::string("float32"));
    FTUNE_CHECK(ndt == "float32", "{}: nested_dtype '{}' is not float32", where, ndt);
    w.absmax = read_tensor(ckpt, origin, W + ".absmax", DType::U8, nb, "absmax (8-bit codes)");
    w.nested_absmax = read_tensor(ckpt, origin, W + ".nested_absmax", DType::F32,
                                  (nb + w.nested_blocksize - 1) / w.nested_blocksize,
                                  "nested_absmax");
    w.nested_code =
        read_tensor(ckpt, origin, W + ".nested_quant_map", DType::F32, 256, "nested_quant_map");
  } else {
    w.absmax = read_tensor(ckpt, origin, W + ".absmax", DType::F32, nb, "absmax");
  }
  w.validate(fmt::format("{}: tensor '{}'", origin, W));
  return w;
}

std::vector<std::pair<std::string, Tensor>> bnb4bit_tensors(const std::string& weight_name,
                                                            const Nf4Weight& w,
                                                            const std::string& dtype_name) {
  w.validate(weight_name);
  FTUNE_CHECK(w.device().is_cpu(), "bnb4bit_tensors: CPU weights only");
  std::vector<std::pair<std::string, Tensor>> out;
  out.emplace_back(weight_name, w.packed.view({w.packed.numel(), 1}));
  out.emplace_back(weight_name + ".absmax", w.absmax);
  out.emplace_back(weight_name + ".quant_map", w.code);
  nlohmann::json st = {{"quant_type", "nf4"},
                       {"blocksize", w.blocksize},
                       {"dtype", dtype_name},
                       {"shape", w.shape}};
  if (w.nested()) {
    out.emplace_back(weight_name + ".nested_absmax", w.nested_absmax);
    out.emplace_back(weight_name + ".nested_quant_map", w.nested_code);
    st["nested_blocksize"] = w.nested_blocksize;
    st["nested_dtype"] = "float32";
    st["nested_offset"] = static_cast<double>(w.nested_offset);
  }
  const std::string text = st.dump();
  Tensor s = Tensor::empty({static_cast<int64_t>(text.size())}, DType::U8);
  std::memcpy(s.raw(), text.data(), text.size());
  out.emplace_back(weight_name + kStatePrefix + "nf4", s);
  return out;
}

}  // namespace ftune
