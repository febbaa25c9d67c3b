// Token sampling (model/sampling.h): greedy argmax; temperature, top-k (ties kept) and top-p
// against distributions computed by hand; draws follow the distribution (chi-square-style
// bound over many draws) and never pick a removed token; a seed repeats its draws.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "core/error.h"
#include "model/sampling.h"
#include "support/test_support.h"

using namespace ftune;

namespace {

SamplingOptions opts(double t, int64_t k = 0, double p = 1.0, uint64_t seed = 0) {
  SamplingOptions o;
  o.temperature = t;
  o.top_k = k;
  o.top_p = p;
  o.seed = seed;
  return o;
}

TEST(Sampling, GreedyIsTheFirstLargestLogit) {
  const std::vector<float> l = {0.5f, 2.0f, -1.0f, 2.0f, NAN};
  EXPECT_EQ(argmax_token(l.data(), 5), 1);
  Sampler s(opts(0.0));
  EXPECT_EQ(s.sample(l.data(), 5), 1);
}

TEST(Sampling, TemperatureScalesTheSoftmax) {
  const std::vector<float> l = {1.0f, 2.0f, 0.0f};
  const auto p = sampling_distribution(l.data(), 3, opts(0.5));
  // softmax(l / 0.5) = softmax(2, 4, 0)
  const double z = std::exp(2.0) + std::exp(4.0) + 1.0;
  EXPECT_NEAR(p[0], std::exp(2.0) / z, 1e-7);
  EXPECT_NEAR(p[1], std::exp(4.0) / z, 1e-7);
  EXPECT_NEAR(p[2], 1.0 / z, 1e-7);
}

TEST(Sampling, TopKKeepsTheKLargestAndTies) {
  const std::vector<float> l = {1.0f, 3.0f, 2.0f, 0.0f, 2.0f};
  auto p = sampling_distribution(l.data(), 5, opts(1.0, 2));
  // The 2nd largest logit is 2.0, held by two tokens: HF keeps both (scores < kth removed).
  EXPECT_EQ(p[0], 0.0);
  EXPECT_EQ(p[3], 0.0);
  const double z = std::exp(3.0) + 2 * std::exp(2.0);
  EXPECT_NEAR(p[1], std::exp(3.0) / z, 1e-7);
  EXPECT_NEAR(p[2], std::exp(2.0) / z, 1e-7);
  EXPECT_NEAR(p[4], std::exp(2.0) / z, 1e-7);
  p = sampling_distribution(l.data(), 5, opts(1.0, 1));
  EXPECT_NEAR(p[1], 1.0, 1e-12);
}

TEST(Sampling, TopPKeepsTheSmallestSetReachingP) {
  // Probabilities 0.5, 0.3, 0.15, 0.05 (as log-probabilities, shuffled).
  const std::vector<float> l = {std::log(0.15f), std::log(0.5f), std::log(0.05f), std::log(0.3f)};
  auto p = sampling_distribution(l.data(), 4, opts(1.0, 0, 0.8));
  // HF: ascending cumulative 0.05, 0.2, 0.5, 1.0; tokens with cumulative <= 0.2 go.
  EXPECT_NEAR(p[1], 0.5 / 0.8, 1e-6);
  EXPECT_NEAR(p[3], 0.3 / 0.8, 1e-6);
  EXPECT_EQ(p[0], 0.0);
  EXPECT_EQ(p[2], 0.0);
  p = sampling_distribution(l.data(), 4, opts(1.0, 0, 0.85));
  EXPECT_NEAR(p[0], 0.15 / 0.95, 1e-6);
  EXPECT_EQ(p[2], 0.0);
  // A tiny top_p keeps the most likely token only.
  p = sampling_distribution(l.data(), 4, opts(1.0, 0, 1e-6));
  EXPECT_NEAR(p[1], 1.0, 1e-12);
  // top-k first, then top-p over what is left (renormalized): k=3 leaves 0.5, 0.3, 0.15 (sum
  // 0.95); top-p 0.8 of those = 0.526, 0.316, 0.158 -> keeps the first two.
  p = sampling_distribution(l.data(), 4, opts(1.0, 3, 0.8));
  EXPECT_NEAR(p[1], 0.5 / 0.8, 1e-6);
  EXPECT_EQ(p[0], 0.0);
}

TEST(Sampling, DrawsFollowTheDistributionAndRespectTopKTopP) {
  const std::vector<float> l = {0.0f, 1.0f, 2.0f, 0.5f, -1.0f, 1.5f};
  for (const SamplingOptions& o : {opts(1.0, 0, 1.0, 7), opts(0.7, 3, 1.0, 8), opts(1.3, 0, 0.7, 9),
                                   opts(1.0, 4, 0.9, 10)}) {
    const auto p = sampling_distribution(l.data(), 6, o);
    Sampler s(o);
    const int draws = 40000;
    std::vector<int> count(6, 0);
    for (int i = 0; i < draws; ++i) ++count[static_cast<size_t>(s.sample(l.data(), 6))];
    for (size_t i = 0; i < 6; ++i) {
      if (p[i] == 0.0) {
        EXPECT_EQ(count[i], 0) << "token " << i << " was removed but drawn";
        continue;
      }
      const double sd = std::sqrt(draws * p[i] * (1 - p[i]));
      EXPECT_NEAR(count[i], draws * p[i], 5 * sd + 1) << "token " << i;
    }
  }
}

TEST(Sampling, ASeedRepeatsItsDraws) {
  const std::vector<float> l = {0.0f, 0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f};
  Sampler a(opts(1.0, 0, 1.0, 42)), b(opts(1.0, 0, 1.0, 42)), c(opts(1.0, 0, 1.0, 43));
  std::vector<int32_t> da, db, dc;
  for (int i = 0; i < 64; ++i) {
    da.push_back(a.sample(l.data(), 8));
    db.push_back(b.sample(l.data(), 8));
    dc.push_back(c.sample(l.data(), 8));
  }
  EXPECT_EQ(da, db);
  EXPECT_NE(da, dc);
}

TEST(Sampling, RefusesOutOfRangeOptions) {
  EXPECT_NE(test::error_of([] { Sampler s(opts(-1.0)); }).find("temperature -1 must be >= 0"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { Sampler s(opts(1.0, -2)); }).find("top_k -2 must be >= 0"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { Sampler s(opts(1.0, 0, 0.0)); }).find("top_p 0 must be in (0, 1]"),
            std::string::npos);
  EXPECT_NE(test::error_of([] { Sampler s(opts(1.0, 0, 1.5)); }).find("top_p 1.5"),
            std::string::npos);
}

}  // namespace
