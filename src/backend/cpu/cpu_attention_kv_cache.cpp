// Attention of new queries against one sequence's KV cache (backend/ops.h,
// attention_kv_cache): query t (position past + t) attends to cache rows [0, past + t]. The
// arithmetic is that of attention_forward (cpu_attention.cpp) row for row: scaled scores, their
// maximum, exp, the sum in double, then the weighted values scaled by 1/sum; so a token decoded
// against the cache gets the attention output the full causal pass gives it.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_kernels.h"

namespace ftune::cpu {

void attention_kv_cache(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                        int64_t past, float scale, Tensor& o) {
  const AttentionDims d = check_attention_kv_cache(q, k_cache, v_cache, past, o, Device::cpu());
  const float* qp = q.f32();
  const float* kp = k_cache.f32();
  const float* vp = v_cache.f32();
  float* out = o.f32();
  const int64_t work = d.n * d.nh;
#pragma omp parallel if (work * (past + d.n) * d.hd > kParallelGrain)
  {
    std::vector<float> scores;
    std::vector<float> acc(static_cast<size_t>(d.hd));
#pragma omp for schedule(dynamic, 4)
    for (int64_t w = 0; w < work; ++w) {
      const int64_t t = w / d.nh, h = w % d.nh, g = h / d.group;
      const int64_t last = past + t;  // the query's own position
      const float* qt = qp + (t * d.nh + h) * d.hd;
      scores.resize(static_cast<size_t>(last + 1));
      float mx = -INFINITY;
      for (int64_t j = 0; j <= last; ++j) {
        const float* kj = kp + (j * d.nkv + g) * d.hd;
        float s = 0.0f;
        for (int64_t c = 0; c < d.hd; ++c) s += qt[c] * kj[c];
        s *= scale;
        scores[static_cast<size_t>(j)] = s;
        mx = std::max(mx, s);
      }
      double sum = 0.0;
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t j = 0; j <= last; ++j) {
        const float p = std::exp(scores[static_cast<size_t>(j)] - mx);
        sum += p;
        const float* vj = vp + (j * d.nkv + g) * d.hd;
        for (int64_t c = 0; c < d.hd; ++c) acc[static_cast<size_t>(c)] += p * vj[c];
      }
      const float inv = static_cast<float>(1.0 / sum);
      float* ot = out + (t * d.nh + h) * d.hd;
      for (int64_t c = 0; c < d.hd; ++c) ot[c] = acc[static_cast<size_t>(c)] * inv;
    }
  }
}

}  // namespace ftune::cpu
