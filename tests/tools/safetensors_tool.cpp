// Drives ftune's safetensors reader and writer for tests/py/test_safetensors_interop.py, which
// checks them against the Python `safetensors` package.
//   safetensors_tool read <file>            -> JSON on stdout: metadata and, per tensor, dtype,
//                                              shape, data_offsets and the decoded values
//   safetensors_tool write <file> <spec>    -> writes the tensors described by spec.json:
//                                              {"metadata": {...}, "tensors": [{"name", "dtype",
//                                              "shape", "values": [...]}, ...]} in list order
//   safetensors_tool copy <in> <out>        -> reads <in> and writes its tensors (borrowed from
//                                              the mapping) and metadata to <out>
// Errors go to stderr as "error: <message>" with exit status 1.
#include <nlohmann/json.hpp>

#include <cstdio>
#include <cstring>
#include <iostream>

#include "core/dtype.h"
#include "core/error.h"
#include "core/tensor.h"
#include "io/json_file.h"
#include "io/safetensors.h"

using namespace ftune;
using json = nlohmann::json;

namespace {

template <typename T>
T load(const uint8_t* p, int64_t i) {
  T v;
  std::memcpy(&v, p + i * static_cast<int64_t>(sizeof(T)), sizeof(T));  // may be unaligned
  return v;
}

json decode_values(const Tensor& t) {
  const auto* p = static_cast<const uint8_t*>(t.raw());
  json out = json::array();
  for (int64_t i = 0; i < t.numel(); ++i) {
    switch (t.dtype()) {
      case DType::F32: out.push_back(load<float>(p, i)); break;
      case DType::F64: out.push_back(load<double>(p, i)); break;
      case DType::F16: out.push_back(f16_to_f32(load<uint16_t>(p, i))); break;
      case DType::BF16: out.push_back(bf16_to_f32(load<uint16_t>(p, i))); break;
      case DType::I8: out.push_back(load<int8_t>(p, i)); break;
      case DType::I16: out.push_back(load<int16_t>(p, i)); break;
      case DType::I32: out.push_back(load<int32_t>(p, i)); break;
      case DType::I64: out.push_back(load<int64_t>(p, i)); break;
      case DType::U8: out.push_back(load<uint8_t>(p, i)); break;
      case DType::U16: out.push_back(load<uint16_t>(p, i)); break;
      case DType::U32: out.push_back(load<uint32_t>(p, i)); break;
      case DType::U64: out.push_back(load<uint64_t>(p, i)); break;
      case DType::BOOL: out.push_back(load<uint8_t>(p, i) != 0); break;
      default: fail("safetensors_tool: no decoding for dtype {}", dtype_name(t.dtype()));
    }
  }
  return out;
}

template <typename T>
void store(uint8_t* p, int64_t i, T v) {
  std::memcpy(p + i * static_cast<int64_t>(sizeof(T)), &v, sizeof(T));
}

Tensor encode_values(const json& spec) {
  const std::string name = spec.at("name").get<std::string>();
  DType dt;
  FTUNE_CHECK(dtype_from_name(spec.at("dtype").get<std::string>(), &dt), "spec: bad dtype for {}",
              name);
  const Shape shape = spec.at("shape").get<Shape>();
  const json& v = spec.at("values");
  Tensor t = Tensor::empty(shape, dt);
  FTUNE_CHECK(static_cast<int64_t>(v.size()) == t.numel(), "spec: {} values for {} of shape {}",
              v.size(), name, shape_str(shape));
  auto* p = static_cast<uint8_t*>(t.raw());
  for (int64_t i = 0; i < t.numel(); ++i) {
    const json& x = v[static_cast<size_t>(i)];
    switch (dt) {
      // Floats go through f32 first, as a float32 numpy array would.
      case DType::F32: store(p, i, x.get<float>()); break;
      case DType::F64: store(p, i, x.get<double>()); break;
      case DType::F16: store(p, i, f32_to_f16(x.get<float>())); break;
      case DType::BF16: store(p, i, f32_to_bf16(x.get<float>())); break;
      case DType::I8: store(p, i, x.get<int8_t>()); break;
      case DType::I16: store(p, i, x.get<int16_t>()); break;
      case DType::I32: store(p, i, x.get<int32_t>()); break;
      case DType::I64: store(p, i, x.get<int64_t>()); break;
      case DType::U8: store(p, i, x.get<uint8_t>()); break;
      case DType::U16: store(p, i, x.get<uint16_t>()); break;
      case DType::U32: store(p, i, x.get<uint32_t>()); break;
      case DType::U64: store(p, i, x.get<uint64_t>()); break;
      case DType::BOOL: store(p, i, static_cast<uint8_t>(x.get<bool>() ? 1 : 0)); break;
      default: fail("safetensors_tool: no encoding for dtype {}", dtype_name(dt));
    }
  }
  return t;
}

int cmd_read(const std::string& path) {
  const SafetensorsFile f = SafetensorsFile::open(path);
  json out;
  out["metadata"] = f.metadata();
  out["data_start"] = f.data_start();
  out["tensors"] = json::object();
  for (const auto& name : f.names()) {
    const TensorInfo& info = f.info(name);
    out["tensors"][name] = {{"dtype", std::string(dtype_name(info.dtype))},
                            {"shape", info.shape},
                            {"data_offsets", {info.begin, info.end}},
                            {"values", decode_values(f.tensor(name))}};
  }
  std::cout << out.dump() << "\n";
  return 0;
}

int cmd_write(const std::string& path, const std::string& spec_path) {
  const json spec = read_json_file(spec_path);
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const json& t : spec.at("tensors")) {
    tensors.emplace_back(t.at("name").get<std::string>(), encode_values(t));
  }
  if (spec.contains("metadata")) {
    write_safetensors(path, tensors, spec["metadata"].get<std::map<std::string, std::string>>());
  } else {
    write_safetensors(path, tensors);
  }
  return 0;
}

int cmd_copy(const std::string& in, const std::string& out) {
  const SafetensorsFile f = SafetensorsFile::open(in);
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& name : f.names()) tensors.emplace_back(name, f.tensor(name));
  write_safetensors(out, tensors, f.metadata());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::vector<std::string> args(argv + 1, argv + argc);
    if (args.size() == 2 && args[0] == "read") return cmd_read(args[1]);
    if (args.size() == 3 && args[0] == "write") return cmd_write(args[1], args[2]);
    if (args.size() == 3 && args[0] == "copy") return cmd_copy(args[1], args[2]);
    std::cerr << "usage: safetensors_tool read <file> | write <file> <spec.json> | copy <in> "
                 "<out>\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
