// Causal grouped-query attention over packed documents (the reference for the CUDA/cuDNN
// path). Token i attends to keys j in [doc_start[i], i]; query head h reads kv head
// h / (nh/nkv) (HF repeat_kv). Forward saves lse = log sum_j exp(scale q_i.k_j) per (i, h).
// Backward recomputes the probabilities from lse, flash-attention style:
//   P_ij = exp(scale q_i.k_j - lse_i), D_i = dO_i.O_i, dS_ij = P_ij (dO_i.v_j - D_i),
//   dq_i = scale sum_j dS_ij k_j,  dk_j = scale sum_{i,h in group} dS_ij q_i,
//   dv_j = sum_{i,h in group} P_ij dO_i.
// Work is split over (token, head) pairs for q-side outputs and over (token, kv head) for
// k/v-side outputs, so each output element is summed by one thread in a fixed order.
#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_kernels.h"

namespace ftune::cpu {

namespace {

float dot(const float* a, const float* b, int64_t n) {
  float s = 0.0f;
  for (int64_t i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                       const Tensor& doc_start, float scale, Tensor& o, Tensor& lse) {
  const AttentionDims d = check_attention_forward(q, k, v, doc_start, o, lse, Device::cpu());
  check_doc_start("attention_forward", doc_start.i32(), d.n);
  const float* qp = q.f32();
  const float* kp = k.f32();
  const float* vp = v.f32();
  const int32_t* ds = doc_start.i32();
  float* out = o.f32();
  float* lp = lse.f32();
  const int64_t work = d.n * d.nh;
#pragma omp parallel if (work * d.hd > kParallelGrain)
  {
    std::vector<float> scores;
    std::vector<float> acc(static_cast<size_t>(d.hd));
#pragma omp for schedule(dynamic, 8)
    for (int64_t w = 0; w < work; ++w) {
      const int64_t i = w / d.nh, h = w % d.nh, g = h / d.group;
      const int64_t j0 = ds[i];
      const float* qi = qp + (i * d.nh + h) * d.hd;
      scores.resize(static_cast<size_t>(i - j0 + 1));
      float mx = -INFINITY;
      for (int64_t j = j0; j <= i; ++j) {
        const float s = scale * dot(qi, kp + (j * d.nkv + g) * d.hd, d.hd);
        scores[static_cast<size_t>(j - j0)] = s;
        mx = std::max(mx, s);
      }
      double sum = 0.0;
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t j = j0; j <= i; ++j) {
        const float p = std::exp(scores[static_cast<size_t>(j - j0)] - mx);
        sum += p;
        const float* vj = vp + (j * d.nkv + g) * d.hd;
        for (int64_t c = 0; c < d.hd; ++c) acc[static_cast<size_t>(c)] += p * vj[c];
      }
      const float inv = static_cast<float>(1.0 / sum);
      float* oi = out + (i * d.nh + h) * d.hd;
      for (int64_t c = 0; c < d.hd; ++c) oi[c] = acc[static_cast<size_t>(c)] * inv;
      lp[i * d.nh + h] = mx + static_cast<float>(std::log(sum));
    }
  }
}

void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o,
                        const Tensor& lse, const Tensor& d_o, const Tensor& doc_start,
                        float scale, Tensor& dq, Tensor& dk, Tensor& dv) {
  const AttentionDims d = check_attention_backward(q, k, v, o, lse, d_o, doc_start, dq, dk, dv,
                                                   Device::cpu());
  check_doc_start("attention_backward", doc_start.i32(), d.n);
  const float* qp = q.f32();
  const float* kp = k.f32();
  const float* vp = v.f32();
  const float* gp = d_o.f32();
  const float* lp = lse.f32();
  const int32_t* ds = doc_start.i32();
  const int64_t n = d.n, hd = d.hd;

  // D_i = dO_i . O_i per (token, head), and doc_end[j] = one past the last token of j's document.
  std::vector<float> delta(static_cast<size_t>(n * d.nh));
  const float* opp = o.f32();
  const bool par = n * d.nh * hd > kParallelGrain;
#pragma omp parallel for schedule(static) if (par)
  for (int64_t w = 0; w < n * d.nh; ++w)
    delta[static_cast<size_t>(w)] = dot(gp + w * hd, opp + w * hd, hd);
  std::vector<int64_t> doc_end(static_cast<size_t>(n));
  for (int64_t j = n - 1; j >= 0; --j)
    doc_end[static_cast<size_t>(j)] =
        (j + 1 < n && ds[j + 1] == ds[j]) ? doc_end[static_cast<size_t>(j + 1)] : j + 1;

  // dS for query row (i, h) and key j (kv head g).
  auto dscore = [&](int64_t i, int64_t h, int64_t j, int64_t g, float* p_out) {
    const int64_t qh = i * d.nh + h;
    const float* qi = qp + qh * hd;
    const float* kj = kp + (j * d.nkv + g) * hd;
    const float* vj = vp + (j * d.nkv + g) * hd;
    const float p = std::exp(scale * dot(qi, kj, hd) - lp[qh]);
    *p_out = p;
    return p * (dot(gp + qh * hd, vj, hd) - delta[static_cast<size_t>(qh)]);
  };

  float* dqp = dq.f32();
  float* dkp = dk.f32();
  float* dvp = dv.f32();
#pragma omp parallel for schedule(dynamic, 8) if (par)
  for (int64_t w = 0; w < n * d.nh; ++w) {
    const int64_t i = w / d.nh, h = w % d.nh, g = h / d.group;
    float* dqi = dqp + w * hd;
    std::fill(dqi, dqi + hd, 0.0f);
    for (int64_t j = ds[i]; j <= i; ++j) {
      float p;
      const float s = scale * dscore(i, h, j, g, &p);
      const float* kj = kp + (j * d.nkv + g) * hd;
      for (int64_t c = 0; c < hd; ++c) dqi[c] += s * kj[c];
    }
  }
#pragma omp parallel for schedule(dynamic, 8) if (par)
  for (int64_t w = 0; w < n * d.nkv; ++w) {
    const int64_t j = w / d.nkv, g = w % d.nkv;
    float* dkj = dkp + w * hd;
    float* dvj = dvp + w * hd;
    std::fill(dkj, dkj + hd, 0.0f);
    std::fill(dvj, dvj + hd, 0.0f);
    for (int64_t i = j; i < doc_end[static_cast<size_t>(j)]; ++i) {
      for (int64_t h = g * d.group; h < (g + 1) * d.group; ++h) {
        float p;
        const float s = scale * dscore(i, h, j, g, &p);
        const float* qi = qp + (i * d.nh + h) * hd;
        const float* gi = gp + (i * d.nh + h) * hd;
        for (int64_t c = 0; c < hd; ++c) {
          dkj[c] += s * qi[c];
          dvj[c] += p * gi[c];
        }
      }
    }
  }
}

}  // namespace ftune::cpu
