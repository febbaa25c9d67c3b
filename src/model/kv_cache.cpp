#include "model/kv_cache.h"

#include <algorithm>

#include "core/error.h"

namespace ftune {

KvCache::KvCache(const ModelSpec& spec, DType dt, Device dev, int64_t capacity)
    : nkv_(spec.num_kv_heads), hd_(spec.head_dim), dtype_(dt), device_(dev) {
  FTUNE_CHECK(capacity >= 1, "KvCache: capacity {} must be >= 1", capacity);
  k_.resize(static_cast<size_t>(spec.num_layers));
  v_.resize(static_cast<size_t>(spec.num_layers));
  capacity_ = 0;
  reserve(capacity);
}

void KvCache::reserve(int64_t tokens) {
  if (tokens <= capacity_) return;
  const int64_t cap = std::max(tokens, 2 * capacity_);
  for (size_t l = 0; l < k_.size(); ++l) {
    for (Tensor* t : {&k_[l], &v_[l]}) {
      Tensor grown = Tensor::empty({cap, nkv_, hd_}, dtype_, device_);
      if (length_ > 0) grown.slice_rows(0, length_).copy_from(t->slice_rows(0, length_));
      *t = grown;
    }
  }
  capacity_ = cap;
}

void KvCache::truncate(int64_t tokens) {
  FTUNE_CHECK(tokens >= 0 && tokens <= length_, "KvCache: cannot truncate {} tokens to {}",
              length_, tokens);
  length_ = tokens;
}

void KvCache::append(int64_t count) {
  FTUNE_CHECK(count >= 0 && length_ + count <= capacity_,
              "KvCache: {} + {} tokens exceed the capacity {}", length_, count, capacity_);
  length_ += count;
}

Tensor KvCache::k_rows(int layer, int64_t begin, int64_t end) const {
  return k(layer).slice_rows(begin, end);
}

Tensor KvCache::v_rows(int layer, int64_t begin, int64_t end) const {
  return v(layer).slice_rows(begin, end);
}

int64_t KvCache::bytes() const {
  int64_t b = 0;
  for (size_t l = 0; l < k_.size(); ++l)
    b += static_cast<int64_t>(k_[l].nbytes() + v_[l].nbytes());
  return b;
}

}  // namespace ftune
