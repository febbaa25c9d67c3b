#include "model/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/error.h"

namespace ftune {

void SamplingOptions::validate() const {
  FTUNE_CHECK(std::isfinite(temperature) && temperature >= 0.0,
              "sampling: temperature {} must be >= 0 (0 = greedy)", temperature);
  FTUNE_CHECK(top_k >= 0, "sampling: top_k {} must be >= 0 (0 = off)", top_k);
  FTUNE_CHECK(std::isfinite(top_p) && top_p > 0.0 && top_p <= 1.0,
              "sampling: top_p {} must be in (0, 1] (1 = off)", top_p);
}

int32_t argmax_token(const float* logits, int64_t vocab) {
  FTUNE_CHECK(vocab > 0, "sampling: empty logits");
  int64_t best = -1;
  for (int64_t i = 0; i < vocab; ++i) {
    if (std::isnan(logits[i])) continue;
    if (best < 0 || logits[i] > logits[best]) best = i;
  }
  return static_cast<int32_t>(best < 0 ? 0 : best);
}

std::vector<double> sampling_distribution(const float* logits, int64_t vocab,
                                          const SamplingOptions& opts) {
  opts.validate();
  FTUNE_CHECK(!opts.greedy(), "sampling_distribution: temperature 0 is greedy (no distribution)");
  FTUNE_CHECK(vocab > 0, "sampling: empty logits");
  const auto n = static_cast<size_t>(vocab);
  // TemperatureLogitsWarper: scores / temperature (fp32 as HF computes it).
  std::vector<float> s(n);
  for (size_t i = 0; i < n; ++i) {
    const float x = logits[i] / static_cast<float>(opts.temperature);
    s[i] = std::isnan(x) ? -INFINITY : x;
  }
  std::vector<bool> keep(n, true);
  // TopKLogitsWarper: remove scores < the k-th largest score.
  if (opts.top_k > 0 && opts.top_k < vocab) {
    std::vector<float> sorted = s;
    std::nth_element(sorted.begin(), sorted.begin() + (opts.top_k - 1), sorted.end(),
                     std::greater<float>());
    const float kth = sorted[static_cast<size_t>(opts.top_k - 1)];
    for (size_t i = 0; i < n; ++i) keep[i] = s[i] >= kth;
  }
  float mx = -INFINITY;
  for (size_t i = 0; i < n; ++i)
    if (keep[i]) mx = std::max(mx, s[i]);
  FTUNE_CHECK(std::isfinite(mx), "sampling: every logit is -inf or NaN");
  std::vector<double> p(n, 0.0);
  double z = 0.0;
  for (size_t i = 0; i < n; ++i)
    if (keep[i]) z += p[i] = std::exp(static_cast<double>(s[i]) - mx);
  for (double& x : p) x /= z;
  // TopPLogitsWarper: a token stays when the probability of the tokens ranked above it is below
  // top_p (HF removes the ascending-cumulative tail <= 1 - top_p); the most likely always stays.
  if (opts.top_p < 1.0) {
    std::vector<size_t> order(n);
    std::iota(order.begin(), order.end(), size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return p[a] > p[b]; });
    double above = 0.0;
    for (size_t r = 0; r < n; ++r) {
      const size_t i = order[r];
      if (r > 0 && above >= opts.top_p) {
        p[i] = 0.0;
        continue;
      }
      above += p[i];
    }
    double kept = 0.0;
    for (double x : p) kept += x;
    for (double& x : p) x /= kept;
  }
  return p;
}

Sampler::Sampler(const SamplingOptions& opts) : opts_(opts), rng_(opts.seed) { opts_.validate(); }

int32_t Sampler::sample(const float* logits, int64_t vocab) {
  if (opts_.greedy()) return argmax_token(logits, vocab);
  const std::vector<double> p = sampling_distribution(logits, vocab, opts_);
  // u in [0, 1) from the top 53 bits: the same on every platform (std distributions are not).
  const double u = static_cast<double>(rng_() >> 11) * 0x1.0p-53;
  double acc = 0.0;
  int64_t last = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    if (p[static_cast<size_t>(i)] <= 0.0) continue;
    acc += p[static_cast<size_t>(i)];
    last = i;
    if (u < acc) return static_cast<int32_t>(i);
  }
  return static_cast<int32_t>(last);  // rounding left u just above the total
}

}  // namespace ftune
