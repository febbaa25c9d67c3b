// CPU backend: RMSNorm (HF LlamaRMSNorm in fp32) and half-split RoPE, forward against double
// references and backward against central finite differences.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>

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

TEST(CpuOpsRmsNorm, ForwardMatchesDoubleReference) {
  auto ops = make_cpu_ops();
  const int64_t n = 5, h = 12;
  const float eps = 1e-5f;
  Tensor x = random_tensor({n, h}, 1, 2.0f), w = random_tensor({h}, 2);
  Tensor y = Tensor::empty({n, h}), rstd = Tensor::empty({n});
  ops->rms_norm_forward(x, w, eps, y, rstd);
  std::vector<float> want_y(static_cast<size_t>(n * h)), want_r(static_cast<size_t>(n));
  for (int64_t r = 0; r < n; ++r) {
    double ss = 0;
    for (int64_t j = 0; j < h; ++j) ss += std::pow(static_cast<double>(x.f32()[r * h + j]), 2);
    const double rs = 1.0 / std::sqrt(ss / h + eps);
    want_r[static_cast<size_t>(r)] = static_cast<float>(rs);
    for (int64_t j = 0; j < h; ++j)
      want_y[static_cast<size_t>(r * h + j)] =
          static_cast<float>(w.f32()[j] * x.f32()[r * h + j] * rs);
  }
  EXPECT_EQ(compare(rstd.to_vector(), want_r, 1e-6f, 0), "");
  EXPECT_EQ(compare(y.to_vector(), want_y, 1e-5f, 1e-7f), "");
}

TEST(CpuOpsRmsNorm, BackwardMatchesFiniteDifferences) {
  auto ops = make_cpu_ops();
  const int64_t n = 4, h = 70;  // > 64 columns: crosses a dw column block
  const float eps = 1e-6f;
  Tensor x = random_tensor({n, h}, 3), w = random_tensor({h}, 4), r = random_tensor({n, h}, 5);
  Tensor y = Tensor::empty({n, h}), rstd = Tensor::empty({n});
  auto loss = [&] {
    ops->rms_norm_forward(x, w, eps, y, rstd);
    return weighted_sum(y, r);
  };
  loss();
  Tensor dx = random_tensor({n, h}, 6);  // garbage: dx is written, not accumulated
  Tensor dw = random_tensor({h}, 7);     // dw accumulates
  const std::vector<float> dw_start = dw.to_vector();
  ops->rms_norm_backward(r, x, w, rstd, dx, &dw);
  EXPECT_EQ(compare(dx.to_vector(), finite_diff(x, loss), 1e-2f, 1e-3f), "");
  std::vector<float> fd_w = finite_diff(w, loss);
  for (size_t j = 0; j < fd_w.size(); ++j) fd_w[j] += dw_start[j];
  EXPECT_EQ(compare(dw.to_vector(), fd_w, 1e-2f, 1e-3f), "");

  // Without dw the same dx comes out.
  Tensor dx2 = Tensor::empty({n, h});
  ops->rms_norm_backward(r, x, w, rstd, dx2, nullptr);
  EXPECT_EQ(dx2.to_vector(), dx.to_vector());

  // In place: dx written over dy (with dw) gives the same results.
  Tensor inplace = r.clone(), dw2 = Tensor::from_vector(dw_start, {h});
  ops->rms_norm_backward(inplace, x, w, rstd, inplace, &dw2);
  EXPECT_EQ(inplace.to_vector(), dx.to_vector());
  EXPECT_EQ(dw2.to_vector(), dw.to_vector());
}

TEST(CpuOpsRmsNorm, DeterministicAcrossThreadCounts) {
  auto ops = make_cpu_ops();
  const int64_t n = 300, h = 200;
  Tensor x = random_tensor({n, h}, 8), w = random_tensor({h}, 9), g = random_tensor({n, h}, 10);
  Tensor y = Tensor::empty({n, h}), rstd = Tensor::empty({n});
  ops->rms_norm_forward(x, w, 1e-5f, y, rstd);
  auto run = [&](int threads) {
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    Tensor dx = Tensor::empty({n, h}), dw = Tensor::zeros({h});
    ops->rms_norm_backward(g, x, w, rstd, dx, &dw);
    omp_set_num_threads(saved);
    std::vector<float> all = dx.to_vector();
    for (float v : dw.to_vector()) all.push_back(v);
    return all;
  };
  EXPECT_EQ(run(1), run(3));
}

TEST(CpuOpsRmsNorm, BadShapesThrow) {
  auto ops = make_cpu_ops();
  Tensor x = Tensor::zeros({4, 8}), w = Tensor::zeros({6});
  Tensor y = Tensor::zeros({4, 8}), rstd = Tensor::zeros({4});
  EXPECT_EQ(error_of([&] { ops->rms_norm_forward(x, w, 1e-5f, y, rstd); }),
            "rms_norm_forward: x is [4, 8] but w is [6]");
  Tensor w8 = Tensor::zeros({8}), rstd3 = Tensor::zeros({3});
  EXPECT_THAT(error_of([&] { ops->rms_norm_forward(x, w8, 1e-5f, y, rstd3); }),
              HasSubstr("rms_norm_forward: rstd is [3], expected [4]"));
  Tensor dw = Tensor::zeros({7});
  EXPECT_THAT(error_of([&] { ops->rms_norm_backward(y, x, w8, rstd, y, &dw); }),
              HasSubstr("rms_norm_backward: dw is [7], expected [8]"));
}

// cos/sin tables as the model builds them: angle(p, i) = p * base^(-2i/hd).
void rope_tables(int64_t positions, int64_t hd, Tensor& cos, Tensor& sin) {
  const int64_t half = hd / 2;
  cos = Tensor::empty({positions, half});
  sin = Tensor::empty({positions, half});
  for (int64_t p = 0; p < positions; ++p)
    for (int64_t i = 0; i < half; ++i) {
      const double a = p * std::pow(10000.0, -2.0 * i / hd);
      cos.f32()[p * half + i] = static_cast<float>(std::cos(a));
      sin.f32()[p * half + i] = static_cast<float>(std::sin(a));
    }
}

TEST(CpuOpsRope, ForwardMatchesRotateHalfReference) {
  auto ops = make_cpu_ops();
  const int64_t n = 6, heads = 3, hd = 8, half = hd / 2;
  Tensor cos, sin;
  rope_tables(20, hd, cos, sin);
  Tensor pos = Tensor::from_ints({0, 1, 2, 0, 1, 17}, {n});  // two packed documents
  Tensor x0 = random_tensor({n, heads, hd}, 11);
  Tensor x = x0.clone();
  ops->rope_forward(x, pos, cos, sin);
  std::vector<float> want(static_cast<size_t>(x.numel()));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < hd; ++i) {
        // HF: x * cos + rotate_half(x) * sin, rotate_half(x) = cat(-x2, x1), cos/sin
        // duplicated over both halves.
        const int64_t base = (t * heads + h) * hd;
        const double a = pos.i32()[t] * std::pow(10000.0, -2.0 * (i % half) / hd);
        const double rot = i < half ? -x0.f32()[base + i + half] : x0.f32()[base + i - half];
        want[static_cast<size_t>(base + i)] =
            static_cast<float>(x0.f32()[base + i] * std::cos(a) + rot * std::sin(a));
      }
  EXPECT_EQ(compare(x.to_vector(), want, 1e-5f, 1e-6f), "");
  // Position 0 is the identity.
  for (int64_t i = 0; i < heads * hd; ++i) EXPECT_EQ(x.f32()[i], x0.f32()[i]);
}

TEST(CpuOpsRope, BackwardMatchesFiniteDifferencesAndInvertsForward) {
  auto ops = make_cpu_ops();
  const int64_t n = 4, heads = 2, hd = 6;
  Tensor cos, sin;
  rope_tables(10, hd, cos, sin);
  Tensor pos = Tensor::from_ints({3, 9, 0, 5}, {n});
  Tensor x = random_tensor({n, heads, hd}, 12), r = random_tensor({n, heads, hd}, 13);
  auto loss = [&] {
    Tensor t = x.clone();
    ops->rope_forward(t, pos, cos, sin);
    return weighted_sum(t, r);
  };
  Tensor dx = r.clone();
  ops->rope_backward(dx, pos, cos, sin);
  EXPECT_EQ(compare(dx.to_vector(), finite_diff(x, loss), 1e-2f, 1e-3f), "");

  // A rotation's transpose is its inverse.
  Tensor t = x.clone();
  ops->rope_forward(t, pos, cos, sin);
  ops->rope_backward(t, pos, cos, sin);
  EXPECT_EQ(compare(t.to_vector(), x.to_vector(), 1e-5f, 1e-6f), "");
}

TEST(CpuOpsRope, BadArgumentsThrow) {
  auto ops = make_cpu_ops();
  Tensor cos, sin;
  rope_tables(4, 8, cos, sin);
  Tensor x = Tensor::zeros({2, 1, 8});
  Tensor far = Tensor::from_ints({0, 4}, {2});
  EXPECT_THAT(error_of([&] { ops->rope_forward(x, far, cos, sin); }),
              HasSubstr("rope_forward: positions[1] = 4 is outside the rope table [0, 4)"));
  Tensor odd = Tensor::zeros({2, 1, 7});
  Tensor pos = Tensor::from_ints({0, 1}, {2});
  EXPECT_THAT(error_of([&] { ops->rope_backward(odd, pos, cos, sin); }),
              HasSubstr("rope_backward: head_dim 7"));
  Tensor x6 = Tensor::zeros({2, 1, 6});
  EXPECT_THAT(error_of([&] { ops->rope_forward(x6, pos, cos, sin); }),
              HasSubstr("rope_forward: x is [2, 1, 6] but cos is [4, 4]"));
}

}  // namespace
