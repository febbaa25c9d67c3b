// Inverted dropout (torch.nn.Dropout semantics: kept values scaled by 1/(1-p)), used on the
// LoRA input path. The mask comes from dropout_keep(seed, flat index) (dropout_hash.cpp), so
// the CUDA backend reproduces it bit for bit; the mask is saved as U8 0/1 for the backward.
#include "backend/cpu/cpu_kernels.h"

namespace ftune::cpu {

void dropout_forward(const Tensor& x, float p, uint64_t seed, Tensor& out, Tensor& mask) {
  check_dropout_forward(x, p, out, mask, Device::cpu());
  const int64_t n = x.numel();
  const float keep_scale = 1.0f / (1.0f - p);
  const float* xp = x.f32();
  float* o = out.f32();
  uint8_t* mk = mask.data<uint8_t>();
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) {
    const bool keep = dropout_keep(seed, static_cast<uint64_t>(i), p);
    mk[i] = keep ? 1 : 0;
    o[i] = keep ? xp[i] * keep_scale : 0.0f;
  }
}

void dropout_backward(const Tensor& dy, const Tensor& mask, float p, Tensor& dx) {
  check_dropout_backward(dy, mask, p, dx, Device::cpu());
  const int64_t n = dy.numel();
  const float keep_scale = 1.0f / (1.0f - p);
  const float* g = dy.f32();
  const uint8_t* mk = mask.data<uint8_t>();
  float* d = dx.f32();
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) d[i] = mk[i] ? g[i] * keep_scale : 0.0f;
}

void dropout_apply(const Tensor& x, float p, uint64_t seed, int64_t index_offset, Tensor& out) {
  check_dropout_apply(x, p, index_offset, out, Device::cpu());
  const int64_t n = x.numel();
  const float keep_scale = 1.0f / (1.0f - p);
  const float* xp = x.f32();
  float* o = out.f32();
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i)
    o[i] = dropout_keep(seed, static_cast<uint64_t>(index_offset + i), p) ? xp[i] * keep_scale
                                                                          : 0.0f;
}

}  // namespace ftune::cpu
