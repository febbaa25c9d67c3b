// Rotary position embedding, half-split layout (HF apply_rotary_pos_emb with rotate_half,
// transformers/models/llama/modeling_llama.py): for i < hd/2,
//   x'[i] = x[i] cos - x[i+hd/2] sin;  x'[i+hd/2] = x[i+hd/2] cos + x[i] sin,
// with cos/sin[p, i] = cos/sin(p * inv_freq[i]) built by the model. The backward applies the
// transposed rotation (angle -theta) to the incoming gradient, in place.
#include "backend/cpu/cpu_kernels.h"

namespace ftune::cpu {

namespace {
void rope_apply(const char* op, Tensor& x, const Tensor& positions, const Tensor& cos,
                const Tensor& sin, float sign) {
  const RopeDims d = check_rope(op, x, positions, cos, sin, Device::cpu());
  const int64_t n = d.n, heads = d.heads, half = d.half, hd = 2 * d.half;
  const int32_t* pos = positions.i32();
  check_indices(op, "positions", pos, n, d.table_len, "the rope table");
  float* xp = x.f32();
  const float* cp = cos.f32();
  const float* sp = sin.f32();
#pragma omp parallel for schedule(static) if (x.numel() > kParallelGrain)
  for (int64_t t = 0; t < n; ++t) {
    const float* c = cp + pos[t] * half;
    const float* s = sp + pos[t] * half;
    for (int64_t hh = 0; hh < heads; ++hh) {
      float* row = xp + (t * heads + hh) * hd;
      for (int64_t i = 0; i < half; ++i) {
        const float a = row[i], b = row[i + half];
        const float si = sign * s[i];
        row[i] = a * c[i] - b * si;
        row[i + half] = b * c[i] + a * si;
      }
    }
  }
}
}  // namespace

void rope_forward(Tensor& x, const Tensor& positions, const Tensor& cos, const Tensor& sin) {
  rope_apply("rope_forward", x, positions, cos, sin, 1.0f);
}

void rope_backward(Tensor& dx, const Tensor& positions, const Tensor& cos, const Tensor& sin) {
  rope_apply("rope_backward", dx, positions, cos, sin, -1.0f);
}

}  // namespace ftune::cpu
