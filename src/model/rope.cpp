#include "model/rope.h"

#include <cmath>

#include "core/error.h"

namespace ftune {

std::vector<float> rope_inv_freq(const RopeSpec& rope, int64_t head_dim) {
  const int64_t half = head_dim / 2;
  std::vector<float> inv(static_cast<size_t>(half));
  // HF: 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim)), in fp32.
  for (int64_t i = 0; i < half; ++i) {
    const float expo = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    inv[static_cast<size_t>(i)] = 1.0f / std::pow(static_cast<float>(rope.theta), expo);
  }
  if (rope.type == "default") return inv;
  if (rope.type == "linear") {
    for (auto& f : inv) f = f / static_cast<float>(rope.factor);
    return inv;
  }
  if (rope.type == "llama3") {
    // HF _compute_llama3_parameters.
    const double orig = static_cast<double>(rope.original_max_position_embeddings);
    const double low_wl = orig / rope.low_freq_factor;
    const double high_wl = orig / rope.high_freq_factor;
    for (auto& f : inv) {
      const double wl = 2.0 * M_PI / f;
      if (wl < high_wl) continue;
      if (wl > low_wl) {
        f = static_cast<float>(f / rope.factor);
        continue;
      }
      const double s = (orig / wl - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor);
      f = static_cast<float>((1.0 - s) * f / rope.factor + s * f);
    }
    return inv;
  }
  fail("rope: unsupported rope type '{}'", rope.type);
}

RopeTables rope_tables(const std::vector<float>& inv_freq, int64_t positions) {
  const int64_t half = static_cast<int64_t>(inv_freq.size());
  RopeTables t{Tensor::empty({positions, half}), Tensor::empty({positions, half})};
  float* c = t.cos.f32();
  float* s = t.sin.f32();
  for (int64_t p = 0; p < positions; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      const float ang = static_cast<float>(p) * inv_freq[static_cast<size_t>(i)];
      c[p * half + i] = std::cos(ang);
      s[p * half + i] = std::sin(ang);
    }
  }
  return t;
}

}  // namespace ftune
