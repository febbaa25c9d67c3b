// Rotary position embedding, half-split layout (HF apply_rotary_pos_emb with rotate_half,
// transformers/models/llama/modeling_llama.py): for i < hd/2,
//   x'[i] = x[i] cos - x[i+hd/2] sin;  x'[i+hd/2] = x[i+hd/2] cos + x[i] sin,
// with cos/sin[p, i] = cos/sin(p * inv_freq[i]) built by the model. The backward applies the
// transposed rotation (angle -theta) to the incoming gradient, in place.
// qkv_rope_split_forward / qkv_rope_merge_backward do the same on the heads of a fused QKV
// projection output [N, (nh + 2 nkv) hd] (q heads, then k heads, then v heads per token),
// copying each head between the fused row and the per-head tensors.
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
// Rotates one head of hd = 2 half values from src into dst (may be the same memory).
inline void rotate_head(const float* src, float* dst, const float* c, const float* s, int64_t half,
                        float sign) {
  for (int64_t i = 0; i < half; ++i) {
    const float a = src[i], b = src[i + half];
    const float si = sign * s[i];
    dst[i] = a * c[i] - b * si;
    dst[i + half] = b * c[i] + a * si;
  }
}

// Moves every head between the fused rows and q/k/v: to_heads (forward, rotation +theta on q
// and k) or back into the fused rows (backward, rotation -theta).
void qkv_rope_apply(const char* op, const QkvDims& d, const Tensor& positions, const Tensor& cos,
                    const Tensor& sin, float* fused, float* q, float* k, float* v,
                    bool to_heads) {
  const int32_t* pos = positions.i32();
  check_indices(op, "positions", pos, d.n, d.table_len, "the rope table");
  const int64_t hd = d.hd, half = d.hd / 2, width = (d.nh + 2 * d.nkv) * hd;
  const float sign = to_heads ? 1.0f : -1.0f;
  const float* cp = cos.f32();
  const float* sp = sin.f32();
#pragma omp parallel for schedule(static) if (d.n * width > kParallelGrain)
  for (int64_t t = 0; t < d.n; ++t) {
    const float* c = cp + pos[t] * half;
    const float* s = sp + pos[t] * half;
    float* row = fused + t * width;
    for (int64_t h = 0; h < d.nh + 2 * d.nkv; ++h) {
      float* part = row + h * hd;
      float* head = h < d.nh            ? q + (t * d.nh + h) * hd
                    : h < d.nh + d.nkv ? k + (t * d.nkv + (h - d.nh)) * hd
                                        : v + (t * d.nkv + (h - d.nh - d.nkv)) * hd;
      const bool rotate = h < d.nh + d.nkv;
      float* dst = to_heads ? head : part;
      const float* src = to_heads ? part : head;
      if (rotate)
        rotate_head(src, dst, c, s, half, sign);
      else
        for (int64_t i = 0; i < hd; ++i) dst[i] = src[i];
    }
  }
}
}  // namespace

void qkv_rope_split_forward(const Tensor& qkv, const Tensor& positions, const Tensor& cos,
                            const Tensor& sin, Tensor& q, Tensor& k, Tensor& v) {
  constexpr const char* op = "qkv_rope_split_forward";
  const QkvDims d =
      check_qkv_rope(op, "qkv", qkv, positions, cos, sin, "q", q, "k", k, "v", v, Device::cpu());
  qkv_rope_apply(op, d, positions, cos, sin, qkv.f32(), q.f32(), k.f32(), v.f32(), true);
}

void qkv_rope_merge_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                             const Tensor& positions, const Tensor& cos, const Tensor& sin,
                             Tensor& dqkv) {
  constexpr const char* op = "qkv_rope_merge_backward";
  const QkvDims d = check_qkv_rope(op, "dqkv", dqkv, positions, cos, sin, "dq", dq, "dk", dk,
                                   "dv", dv, Device::cpu());
  qkv_rope_apply(op, d, positions, cos, sin, dqkv.f32(), dq.f32(), dk.f32(), dv.f32(), false);
}

void rope_forward(Tensor& x, const Tensor& positions, const Tensor& cos, const Tensor& sin) {
  rope_apply("rope_forward", x, positions, cos, sin, 1.0f);
}

void rope_backward(Tensor& dx, const Tensor& positions, const Tensor& cos, const Tensor& sin) {
  rope_apply("rope_backward", dx, positions, cos, sin, -1.0f);
}

}  // namespace ftune::cpu
