// CPU backend: SwiGLU (forward vs double reference, backward vs finite differences) and the
// counter-based inverted dropout (kept fraction, reproducibility, hash spec, backward).
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "backend/ops.h"
#include "support/test_support.h"

using namespace ftune;
using ftune::test::compare;
using ftune::test::finite_diff;
using ftune::test::random_tensor;
using ftune::test::weighted_sum;
using ftune::test::error_of;
using ::testing::HasSubstr;

namespace {

TEST(CpuOpsSwiglu, ForwardMatchesDoubleReference) {
  auto ops = make_cpu_ops();
  Tensor g = random_tensor({5, 9}, 1, 6.0f), u = random_tensor({5, 9}, 2, 2.0f);
  Tensor out = Tensor::empty({5, 9});
  ops->swiglu_forward(g, u, out);
  std::vector<float> want(45);
  for (int i = 0; i < 45; ++i) {
    const double x = g.f32()[i];
    want[i] = static_cast<float>(x / (1.0 + std::exp(-x)) * u.f32()[i]);
  }
  EXPECT_EQ(compare(out.to_vector(), want, 1e-5f, 1e-7f), "");
}

TEST(CpuOpsSwiglu, BackwardMatchesFiniteDifferences) {
  auto ops = make_cpu_ops();
  Tensor g = random_tensor({4, 7}, 3, 4.0f), u = random_tensor({4, 7}, 4, 2.0f);
  Tensor r = random_tensor({4, 7}, 5);
  Tensor out = Tensor::empty({4, 7});
  auto loss = [&] {
    ops->swiglu_forward(g, u, out);
    return weighted_sum(out, r);
  };
  Tensor dg = random_tensor({4, 7}, 6), du = random_tensor({4, 7}, 7);
  ops->swiglu_backward(r, g, u, dg, du);
  EXPECT_EQ(compare(dg.to_vector(), finite_diff(g, loss), 1e-2f, 1e-3f), "");
  EXPECT_EQ(compare(du.to_vector(), finite_diff(u, loss), 1e-2f, 1e-3f), "");

  // In place: dgate written over dout gives the same gradients.
  Tensor inplace = r.clone(), du2 = Tensor::empty({4, 7});
  ops->swiglu_backward(inplace, g, u, inplace, du2);
  EXPECT_EQ(inplace.to_vector(), dg.to_vector());
  EXPECT_EQ(du2.to_vector(), du.to_vector());

  Tensor bad = Tensor::empty({4, 6});
  EXPECT_THAT(error_of([&] { ops->swiglu_forward(g, u, bad); }),
              HasSubstr("swiglu_forward: gate is [4, 7] but out is [4, 6]"));
  EXPECT_THAT(error_of([&] { ops->swiglu_backward(r, g, u, dg, bad); }),
              HasSubstr("swiglu_backward: gate is [4, 7] but dup is [4, 6]"));
}

// The hash as documented in src/backend/dropout_hash.cpp, written out independently.
uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
bool documented_keep(uint64_t seed, uint64_t i, float p) {
  const uint64_t h = mix(mix(seed ^ 0x9E3779B97F4A7C15ull) + i * 0x9E3779B97F4A7C15ull);
  return static_cast<double>(h >> 40) / 16777216.0 >= p;
}

TEST(CpuOpsDropout, HashFollowsTheDocumentedFormula) {
  for (uint64_t seed : {0ull, 1ull, 12345ull, ~0ull})
    for (uint64_t i = 0; i < 5000; ++i)
      for (float p : {0.05f, 0.5f, 0.9f})
        ASSERT_EQ(dropout_keep(seed, i, p), documented_keep(seed, i, p)) << seed << " " << i;
  for (uint64_t i = 0; i < 1000; ++i) EXPECT_TRUE(dropout_keep(7, i, 0.0f));
}

TEST(CpuOpsDropout, KeptFractionMaskReproducibilityAndScaling) {
  auto ops = make_cpu_ops();
  const int64_t n = 1 << 20;
  const float p = 0.1f;
  Tensor x = random_tensor({n / 64, 64}, 8);
  Tensor out = Tensor::empty(x.shape()), mask = Tensor::empty(x.shape(), DType::U8);
  ops->dropout_forward(x, p, 42, out, mask);
  const uint8_t* m = mask.data<uint8_t>();
  int64_t kept = 0;
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_TRUE(m[i] == 0 || m[i] == 1);
    kept += m[i];
    ASSERT_EQ(m[i] == 1, dropout_keep(42, static_cast<uint64_t>(i), p));
    const float want = m[i] ? x.f32()[i] / (1.0f - p) : 0.0f;
    ASSERT_NEAR(out.f32()[i], want, 1e-6f * std::fabs(want));
  }
  // Binomial(n, 1-p): standard deviation sqrt(n p (1-p)) ~ 307; allow 5 sigma.
  const double sigma = std::sqrt(n * p * (1.0 - p));
  EXPECT_NEAR(static_cast<double>(kept), n * (1.0 - p), 5 * sigma);

  Tensor out2 = Tensor::empty(x.shape()), mask2 = Tensor::empty(x.shape(), DType::U8);
  ops->dropout_forward(x, p, 42, out2, mask2);
  EXPECT_EQ(out2.to_vector(), out.to_vector());
  EXPECT_EQ(std::memcmp(mask.raw(), mask2.raw(), static_cast<size_t>(n)), 0);

  // A different seed gives an independent mask: the two disagree on ~2p(1-p) of elements.
  ops->dropout_forward(x, p, 43, out2, mask2);
  int64_t differ = 0;
  for (int64_t i = 0; i < n; ++i) differ += m[i] != mask2.data<uint8_t>()[i];
  const double q = 2 * p * (1 - p);
  EXPECT_NEAR(static_cast<double>(differ), n * q, 5 * std::sqrt(n * q * (1 - q)));
}

TEST(CpuOpsDropout, BackwardMatchesFiniteDifferences) {
  auto ops = make_cpu_ops();
  const float p = 0.3f;
  Tensor x = random_tensor({6, 10}, 9), r = random_tensor({6, 10}, 10);
  Tensor out = Tensor::empty(x.shape()), mask = Tensor::empty(x.shape(), DType::U8);
  auto loss = [&] {
    ops->dropout_forward(x, p, 5, out, mask);
    return weighted_sum(out, r);
  };
  loss();
  Tensor dx = random_tensor(x.shape(), 11);
  ops->dropout_backward(r, mask, p, dx);
  EXPECT_EQ(compare(dx.to_vector(), finite_diff(x, loss), 1e-2f, 1e-3f), "");
  // In place (dx over dy), as the LoRA backward uses it.
  Tensor inplace = r.clone();
  ops->dropout_backward(inplace, mask, p, inplace);
  EXPECT_EQ(inplace.to_vector(), dx.to_vector());
  int zeros = 0;
  for (float v : dx.to_vector()) zeros += v == 0.0f;
  EXPECT_GT(zeros, 0);  // some elements were dropped
  EXPECT_LT(zeros, 60);
}

TEST(CpuOpsDropout, ApplyRegeneratesTheMaskAnywhereInTheTensor) {
  // dropout_apply keeps nothing: with offset 0 it is dropout_forward's output; on rows [2, 5) of
  // a [5, 7] tensor with offset 2 * 7 it is those rows of it; in place it is the same; applied to
  // a gradient it is dropout_backward with the stored mask.
  auto ops = make_cpu_ops();
  const float p = 0.3f;
  Tensor x = random_tensor({5, 7}, 3);
  Tensor out = Tensor::empty({5, 7}), mask = Tensor::empty({5, 7}, DType::U8);
  ops->dropout_forward(x, p, 77, out, mask);
  Tensor got = Tensor::empty({5, 7});
  ops->dropout_apply(x, p, 77, 0, got);
  EXPECT_EQ(got.to_vector(), out.to_vector());
  Tensor rows = Tensor::empty({3, 7});
  ops->dropout_apply(x.slice_rows(2, 5), p, 77, 2 * 7, rows);
  const std::vector<float> all = out.to_vector();
  EXPECT_EQ(rows.to_vector(), std::vector<float>(all.begin() + 14, all.end()));
  Tensor in_place = Tensor::from_vector(x.to_vector(), {5, 7});
  ops->dropout_apply(in_place, p, 77, 0, in_place);
  EXPECT_EQ(in_place.to_vector(), out.to_vector());
  Tensor dy = random_tensor({5, 7}, 4), dx_mask = Tensor::empty({5, 7}), dx = Tensor::empty({5, 7});
  ops->dropout_backward(dy, mask, p, dx_mask);
  ops->dropout_apply(dy, p, 77, 0, dx);
  EXPECT_EQ(dx.to_vector(), dx_mask.to_vector());
  int kept = 0;
  for (uint8_t m : std::vector<uint8_t>(mask.data<uint8_t>(), mask.data<uint8_t>() + 35)) kept += m;
  EXPECT_GT(kept, 0);
  EXPECT_LT(kept, 35);
  EXPECT_THAT(error_of([&] { ops->dropout_apply(x, 0.1f, 1, -1, got); }),
              HasSubstr("dropout_apply: index offset -1 is negative"));
  Tensor small = Tensor::empty({5, 6});
  EXPECT_THAT(error_of([&] { ops->dropout_apply(x, 0.1f, 1, 0, small); }),
              HasSubstr("dropout_apply"));
}

TEST(CpuOpsDropout, BadArgumentsThrow) {
  auto ops = make_cpu_ops();
  Tensor x = Tensor::zeros({4}), out = Tensor::zeros({4});
  Tensor mask = Tensor::zeros({4}, DType::U8), mask_f = Tensor::zeros({4});
  EXPECT_THAT(error_of([&] { ops->dropout_forward(x, 1.0f, 1, out, mask); }),
              HasSubstr("dropout_forward: p = 1"));
  EXPECT_THAT(error_of([&] { ops->dropout_forward(x, 0.1f, 1, out, mask_f); }),
              HasSubstr("dropout_forward: mask has dtype F32, expected U8"));
  Tensor small = Tensor::zeros({3}, DType::U8);
  EXPECT_THAT(error_of([&] { ops->dropout_backward(x, small, 0.1f, out); }),
              HasSubstr("dropout_backward: dy is [4] but mask is [3]"));
}

}  // namespace
