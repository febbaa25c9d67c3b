// GGUF v3 files (the format llama.cpp loads; ggml docs/gguf.md), written in one pass: the header
// (magic "GGUF", version 3, tensor and key-value counts, the typed key-values, then each tensor's
// name, dimensions, ggml type and data offset) first, with every offset computed from the
// declared shapes and types, then each tensor's bytes in the declared order, each starting on a
// multiple of the alignment (general.alignment, 32 by default). All integers little-endian.
// Atomic like io/atomic_file.h: nothing appears at the path until commit().
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <variant>
#include <vector>

#include "io/ggml_quants.h"

namespace ftune {

class AtomicFile;

// A metadata value: GGUF types UINT32, INT32, FLOAT32, BOOL, STRING, and arrays of STRING,
// INT32, FLOAT32.
using GgufValue = std::variant<uint32_t, int32_t, float, bool, std::string,
                               std::vector<std::string>, std::vector<int32_t>, std::vector<float>>;

struct GgufTensorInfo {
  std::string name;
  // Dimensions outermost first, as in safetensors/numpy ([rows, cols] of a weight); the file
  // stores them innermost first (ggml ne[0] = cols).
  std::vector<int64_t> shape;
  GgmlType type = GgmlType::F32;
};

class GgufWriter {
 public:
  explicit GgufWriter(std::string path, uint32_t alignment = 32);
  ~GgufWriter();

  void add(const std::string& key, GgufValue value);  // keys must be unique
  void add_tensor(GgufTensorInfo info);
  // Writes the header; after it, write_tensor() once per declared tensor, in order.
  void write_header();
  // The bytes of the next tensor (exactly ggml_bytes(type, numel)).
  void write_tensor(const uint8_t* data, size_t bytes);
  const GgufTensorInfo& next_tensor() const;
  bool all_tensors_written() const { return next_ == tensors_.size(); }
  void commit();

  // Bytes of a tensor in the file (without alignment padding).
  static size_t tensor_bytes(const GgufTensorInfo& t);

 private:
  std::string path_;
  uint32_t alignment_;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<GgufTensorInfo> tensors_;
  size_t next_ = 0;
  uint64_t data_start_ = 0;
  std::unique_ptr<AtomicFile> file_;
};

}  // namespace ftune
