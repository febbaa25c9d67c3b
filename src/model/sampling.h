// Choosing the next token from a row of logits, as HF generate does: greedy (argmax, the first
// of equal maxima) when temperature is 0, else a draw from softmax(logits / temperature) after
// top-k (keep the tokens whose logit is at least the k-th largest, ties kept: TopKLogitsWarper)
// and top-p (keep the most likely tokens until their probability reaches top_p, at least one:
// TopPLogitsWarper), applied in that order (HF's warper order). Draws come from a seeded
// 64-bit Mersenne twister, so a seed gives the same tokens on every machine.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

namespace ftune {

struct SamplingOptions {
  double temperature = 0.0;  // 0 = greedy
  int64_t top_k = 0;         // 0 = off
  double top_p = 1.0;        // 1 = off; (0, 1]
  uint64_t seed = 0;
  // Throws ftune::Error naming the option for values out of range.
  void validate() const;
  bool greedy() const { return temperature == 0.0; }
};

// The distribution a non-greedy draw uses (probabilities over the vocabulary, zero for the
// tokens top-k/top-p removed; sums to 1).
std::vector<double> sampling_distribution(const float* logits, int64_t vocab,
                                          const SamplingOptions& opts);

// Index of the largest logit (the first one on ties); NaN logits are never chosen unless all are.
int32_t argmax_token(const float* logits, int64_t vocab);

class Sampler {
 public:
  explicit Sampler(const SamplingOptions& opts);
  int32_t sample(const float* logits, int64_t vocab);
  const SamplingOptions& options() const { return opts_; }

 private:
  SamplingOptions opts_;
  std::mt19937_64 rng_;
};

}  // namespace ftune
