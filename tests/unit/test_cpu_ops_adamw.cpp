// CPU backend: AdamW against a hand-written double-precision torch.optim.AdamW reference
// over three steps (weight decay on), plus argument errors.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>

#include "backend/ops.h"
#include "support/test_support.h"

using namespace ftune;
using ftune::test::compare;
using ftune::test::random_tensor;
using ftune::test::weighted_sum;
using ftune::test::error_of;
using ::testing::HasSubstr;

namespace {

TEST(CpuOpsAdamW, ThreeStepsMatchDoubleReference) {
  auto ops = make_cpu_ops();
  const int64_t n = 6;
  const float lr = 1e-2f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.1f;
  Tensor p = Tensor::from_vector({0.5f, -1.25f, 2.0f, 0.0f, 1e-3f, -0.75f}, {n});
  Tensor m = Tensor::zeros({n}), v = Tensor::zeros({n});
  std::vector<double> rp(p.f32(), p.f32() + n), rm(n, 0.0), rv(n, 0.0);
  for (int64_t step = 1; step <= 3; ++step) {
    Tensor g = random_tensor({n}, 100 + static_cast<uint64_t>(step), 1.5f);
    g.f32()[3] = 0.0f;  // a parameter with zero gradient still decays (here: stays 0)
    ops->adamw_step(p, g, m, v, lr, b1, b2, eps, wd, step);
    for (int64_t i = 0; i < n; ++i) {
      const double gi = g.f32()[i];
      rp[i] *= 1.0 - static_cast<double>(lr) * wd;
      rm[i] = b1 * rm[i] + (1.0 - b1) * gi;
      rv[i] = b2 * rv[i] + (1.0 - b2) * gi * gi;
      const double bc1 = 1.0 - std::pow(static_cast<double>(b1), step);
      const double bc2 = 1.0 - std::pow(static_cast<double>(b2), step);
      rp[i] -= (lr / bc1) * rm[i] / (std::sqrt(rv[i]) / std::sqrt(bc2) + eps);
    }
    EXPECT_EQ(compare(p.to_vector(), std::vector<float>(rp.begin(), rp.end()), 1e-6f, 1e-8f), "")
        << "step " << step;
    EXPECT_EQ(compare(m.to_vector(), std::vector<float>(rm.begin(), rm.end()), 1e-5f, 1e-8f), "");
    EXPECT_EQ(compare(v.to_vector(), std::vector<float>(rv.begin(), rv.end()), 1e-5f, 1e-10f), "");
  }
  // The first step moves each parameter with a non-zero gradient by about lr (Adam's
  // normalised step) plus the decay: a sanity check on the reference itself.
  EXPECT_NE(p.f32()[0], 0.5f);
}

TEST(CpuOpsAdamW, WeightDecayAloneShrinksParameters) {
  auto ops = make_cpu_ops();
  Tensor p = Tensor::from_vector({2.0f, -4.0f}, {2});
  Tensor g = Tensor::zeros({2}), m = Tensor::zeros({2}), v = Tensor::zeros({2});
  ops->adamw_step(p, g, m, v, 0.1f, 0.9f, 0.999f, 1e-8f, 0.5f, 1);
  EXPECT_FLOAT_EQ(p.f32()[0], 2.0f * 0.95f);
  EXPECT_FLOAT_EQ(p.f32()[1], -4.0f * 0.95f);
}

TEST(CpuOpsAdamW, BadArgumentsThrow) {
  auto ops = make_cpu_ops();
  Tensor p = Tensor::zeros({4}), g = Tensor::zeros({4}), m = Tensor::zeros({4});
  Tensor v = Tensor::zeros({4}), v3 = Tensor::zeros({3});
  EXPECT_THAT(error_of([&] { ops->adamw_step(p, g, m, v, 1e-3f, 0.9f, 0.999f, 1e-8f, 0, 0); }),
              HasSubstr("adamw_step: step = 0"));
  EXPECT_THAT(error_of([&] { ops->adamw_step(p, g, m, v3, 1e-3f, 0.9f, 0.999f, 1e-8f, 0, 1); }),
              HasSubstr("adamw_step: v is [3], expected [4]"));
  EXPECT_THAT(error_of([&] { ops->adamw_step(p, g, m, v, 1e-3f, 1.0f, 0.999f, 1e-8f, 0, 1); }),
              HasSubstr("adamw_step: betas"));
}

}  // namespace
