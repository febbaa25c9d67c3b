// Inverted dropout (torch.nn.Dropout semantics: kept values scaled by 1/(1-p)), used on the
// LoRA input path. The mask comes from dropout_keep(seed, flat index) (dropout_hash.cpp), so
// the CUDA backend reproduces it bit for bit; the mask is saved as U8 0/1 for the backward.
#include "backend/cpu/cpu_kernels.h"

namespace ftune::cpu {

namespace {
void check_p(const char* op, float p) {
  FTUNE_CHECK(p >= 0.0f && p < 1.0f, "{}: p = {} must be in [0, 1)", op, p);
}
}  // namespace

void dropout_forward(const Tensor& x, float p, uint64_t seed, Tensor& out, Tensor& mask) {
  constexpr const char* op = "dropout_forward";
  check_p(op, p);
  require_tensor(op, "x", x, DType::F32);
  require_shape(op, "out", out, DType::F32, x.shape());
  require_tensor(op, "mask", mask, DType::U8);
  FTUNE_CHECK(mask.numel() == x.numel(), "dropout_forward: x is {} but mask is {}",
              shape_str(x.shape()), shape_str(mask.shape()));
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
  constexpr const char* op = "dropout_backward";
  check_p(op, p);
  require_tensor(op, "dy", dy, DType::F32);
  require_shape(op, "dx", dx, DType::F32, dy.shape());
  require_tensor(op, "mask", mask, DType::U8);
  FTUNE_CHECK(mask.numel() == dy.numel(), "dropout_backward: dy is {} but mask is {}",
              shape_str(dy.shape()), shape_str(mask.shape()));
  const int64_t n = dy.numel();
  const float keep_scale = 1.0f / (1.0f - p);
  const float* g = dy.f32();
  const uint8_t* mk = mask.data<uint8_t>();
  float* d = dx.f32();
#pragma omp parallel for schedule(static) if (n > kParallelGrain)
  for (int64_t i = 0; i < n; ++i) d[i] = mk[i] ? g[i] * keep_scale : 0.0f;
}

}  // namespace ftune::cpu
