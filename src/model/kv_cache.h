// The key/value cache of one sequence for generation: per layer, the keys (after RoPE) and the
// values of every token run so far, [capacity, nkv, head_dim] in the model's compute dtype on its
// device. Tokens are appended by the cached forward (model/generator.h); the cache grows by
// doubling (copying what it holds) and can be cut back to a prefix, so a chat turn reuses the
// tokens its prompt shares with the previous one.
#pragma once
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "model/model_spec.h"

namespace ftune {

class KvCache {
 public:
  KvCache() = default;
  KvCache(const ModelSpec& spec, DType dt, Device dev, int64_t capacity = 256);

  int64_t length() const { return length_; }
  int64_t capacity() const { return capacity_; }
  int num_layers() const { return static_cast<int>(k_.size()); }
  // Makes room for `tokens` tokens in all (doubling; the cached rows are kept).
  void reserve(int64_t tokens);
  // Forgets every token from position `tokens` on (tokens <= length()).
  void truncate(int64_t tokens);
  // Marks `count` more tokens as cached (their rows written by the caller).
  void append(int64_t count);
  // Whole-capacity buffers of layer l, [capacity, nkv, hd].
  const Tensor& k(int layer) const { return k_[static_cast<size_t>(layer)]; }
  const Tensor& v(int layer) const { return v_[static_cast<size_t>(layer)]; }
  // Rows [begin, end) of layer l's buffers: where the forward writes new tokens' keys/values.
  Tensor k_rows(int layer, int64_t begin, int64_t end) const;
  Tensor v_rows(int layer, int64_t begin, int64_t end) const;
  // Bytes held by the buffers.
  int64_t bytes() const;

 private:
  std::vector<Tensor> k_, v_;
  int64_t length_ = 0, capacity_ = 0;
  int64_t nkv_ = 0, hd_ = 0;
  DType dtype_ = DType::F32;
  Device device_;
};

}  // namespace ftune
