// CPU backend: gemm (all transposes), bias add/backward, axpy/scale/sum_squares and the
// embedding lookup, against naive double references and central finite differences.
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

// Element (i, j) of op(X) for a row-major 2-D X.
double op_at(const Tensor& x, bool trans, int64_t i, int64_t j) {
  const int64_t cols = x.dim(1);
  return trans ? x.f32()[j * cols + i] : x.f32()[i * cols + j];
}

struct GemmCase {
  bool ta, tb;
};

class GemmTest : public ::testing::TestWithParam<GemmCase> {};

TEST_P(GemmTest, ForwardMatchesNaiveWithAlphaBeta) {
  auto ops = make_cpu_ops();
  const auto [ta, tb] = GetParam();
  const int64_t m = 5, k = 7, n = 3;
  Tensor a = random_tensor(ta ? Shape{k, m} : Shape{m, k}, 1);
  Tensor b = random_tensor(tb ? Shape{n, k} : Shape{k, n}, 2);
  Tensor c0 = random_tensor({m, n}, 3);
  Tensor c = c0.clone();
  const float alpha = 0.7f, beta = -0.4f;
  ops->gemm(a, ta, b, tb, c, alpha, beta);
  std::vector<float> want(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t p = 0; p < k; ++p) s += op_at(a, ta, i, p) * op_at(b, tb, p, j);
      want[static_cast<size_t>(i * n + j)] =
          static_cast<float>(alpha * s + beta * c0.f32()[i * n + j]);
    }
  EXPECT_EQ(compare(c.to_vector(), want, 1e-5f, 1e-6f), "");

  // beta = 0 ignores whatever C held, even NaN.
  c.fill_(NAN);
  ops->gemm(a, ta, b, tb, c, 1.0f, 0.0f);
  for (float x : c.to_vector()) EXPECT_FALSE(std::isnan(x));
}

// The backward of C = op(A) op(B) is two more gemms; check them against finite differences
// of L = sum(C * R), which exercises every transpose combination of gemm.
TEST_P(GemmTest, BackwardGemmsMatchFiniteDifferences) {
  auto ops = make_cpu_ops();
  const auto [ta, tb] = GetParam();
  const int64_t m = 4, k = 6, n = 5;
  Tensor a = random_tensor(ta ? Shape{k, m} : Shape{m, k}, 11);
  Tensor b = random_tensor(tb ? Shape{n, k} : Shape{k, n}, 12);
  Tensor r = random_tensor({m, n}, 13);
  Tensor c = Tensor::empty({m, n});
  auto loss = [&] {
    ops->gemm(a, ta, b, tb, c, 1.0f, 0.0f);
    return weighted_sum(c, r);
  };
  Tensor da = Tensor::empty(a.shape()), db = Tensor::empty(b.shape());
  if (ta) ops->gemm(b, tb, r, true, da, 1.0f, 0.0f);  // dA = op(B) R^T
  else ops->gemm(r, false, b, !tb, da, 1.0f, 0.0f);   // dA = R op(B)^T
  if (tb) ops->gemm(r, true, a, ta, db, 1.0f, 0.0f);  // dB = R^T op(A)
  else ops->gemm(a, !ta, r, false, db, 1.0f, 0.0f);   // dB = op(A)^T R
  EXPECT_EQ(compare(da.to_vector(), finite_diff(a, loss), 1e-2f, 1e-3f), "");
  EXPECT_EQ(compare(db.to_vector(), finite_diff(b, loss), 1e-2f, 1e-3f), "");
}

INSTANTIATE_TEST_SUITE_P(AllTransposes, GemmTest,
                         ::testing::Values(GemmCase{false, false}, GemmCase{false, true},
                                           GemmCase{true, false}, GemmCase{true, true}));

TEST(CpuOpsGemm, BadShapesThrowNamingTheOp) {
  auto ops = make_cpu_ops();
  Tensor a = Tensor::zeros({2, 3}), b = Tensor::zeros({4, 5}), c = Tensor::zeros({2, 5});
  EXPECT_THAT(error_of([&] { ops->gemm(a, false, b, false, c, 1, 0); }), HasSubstr("gemm: "));
  Tensor b2 = Tensor::zeros({3, 5}), c2 = Tensor::zeros({5, 2});
  EXPECT_THAT(error_of([&] { ops->gemm(a, false, b2, false, c2, 1, 0); }),
              HasSubstr("gemm: c is [5, 2]"));
  Tensor ai = Tensor::zeros({2, 3}, DType::I32);
  EXPECT_THAT(error_of([&] { ops->gemm(ai, false, b2, false, c, 1, 0); }),
              HasSubstr("gemm: a has dtype I32"));
}

TEST(CpuOpsBias, AddBiasAndBackward) {
  auto ops = make_cpu_ops();
  const int64_t n = 6, m = 70;  // m > 64 crosses a column block of bias_backward
  Tensor y0 = random_tensor({n, m}, 21), bias = random_tensor({m}, 22);
  Tensor y = y0.clone();
  ops->add_bias(y, bias);
  std::vector<float> want(static_cast<size_t>(n * m));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < m; ++j)
      want[static_cast<size_t>(i * m + j)] = y0.f32()[i * m + j] + bias.f32()[j];
  EXPECT_EQ(compare(y.to_vector(), want, 1e-6f, 1e-7f), "");

  // dbias accumulates (+=) the column sums of dy: compare with finite differences of
  // L = sum((y0 + bias) * R) on top of a non-zero starting gradient.
  Tensor r = random_tensor({n, m}, 23);
  Tensor dbias = random_tensor({m}, 24);
  const std::vector<float> start = dbias.to_vector();
  ops->bias_backward(r, dbias);
  auto loss = [&] {
    Tensor t = y0.clone();
    ops->add_bias(t, bias);
    return weighted_sum(t, r);
  };
  std::vector<float> fd = finite_diff(bias, loss);
  for (size_t j = 0; j < fd.size(); ++j) fd[j] += start[j];
  EXPECT_EQ(compare(dbias.to_vector(), fd, 1e-2f, 1e-3f), "");

  Tensor wrong = Tensor::zeros({m + 1});
  EXPECT_THAT(error_of([&] { ops->add_bias(y, wrong); }),
              HasSubstr("add_bias: y is [6, 70] but bias is [71]"));
  EXPECT_THAT(error_of([&] { ops->bias_backward(r, wrong); }), HasSubstr("bias_backward: "));
}

TEST(CpuOpsVector, AxpyScaleSumSquares) {
  auto ops = make_cpu_ops();
  Tensor x = random_tensor({3, 4}, 31), y0 = random_tensor({12}, 32);
  Tensor y = y0.clone();
  ops->axpy(-1.5f, x, y);
  std::vector<float> want(12);
  for (int i = 0; i < 12; ++i) want[i] = y0.f32()[i] - 1.5f * x.f32()[i];
  EXPECT_EQ(compare(y.to_vector(), want, 1e-6f, 1e-7f), "");

  ops->scale(y, 0.25f);
  for (int i = 0; i < 12; ++i) want[i] *= 0.25f;
  EXPECT_EQ(compare(y.to_vector(), want, 1e-6f, 1e-7f), "");

  Tensor big = random_tensor({100003}, 33, 3.0f);
  double ref = 0;
  for (int64_t i = 0; i < big.numel(); ++i) ref += static_cast<double>(big.f32()[i]) * big.f32()[i];
  EXPECT_NEAR(ops->sum_squares(big), ref, 1e-12 * ref);

  Tensor bad = Tensor::zeros({5});
  EXPECT_THAT(error_of([&] { ops->axpy(1.0f, x, bad); }),
              HasSubstr("axpy: x is [3, 4] but y is [5]"));
}

TEST(CpuOpsVector, SumSquaresIndependentOfThreadCount) {
  auto ops = make_cpu_ops();
  Tensor big = random_tensor({1 << 20}, 34);
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const double one = ops->sum_squares(big);
  omp_set_num_threads(3);
  const double three = ops->sum_squares(big);
  omp_set_num_threads(saved);
  EXPECT_EQ(one, three);
}

TEST(CpuOpsEmbedding, ForwardGathersRowsAndBackwardScattersWithRepeats) {
  auto ops = make_cpu_ops();
  const int64_t vocab = 9, h = 5;
  Tensor table = random_tensor({vocab, h}, 41);
  Tensor ids = Tensor::from_ints({3, 0, 8, 3, 3, 5}, {6});
  Tensor out = Tensor::empty({6, h});
  ops->embedding_forward(table, ids, out);
  for (int64_t n = 0; n < 6; ++n)
    for (int64_t j = 0; j < h; ++j)
      EXPECT_EQ(out.f32()[n * h + j], table.f32()[ids.i32()[n] * h + j]);

  Tensor r = random_tensor({6, h}, 42);
  Tensor dtable = Tensor::zeros({vocab, h});
  ops->embedding_backward(r, ids, dtable);
  auto loss = [&] {
    ops->embedding_forward(table, ids, out);
    return weighted_sum(out, r);
  };
  EXPECT_EQ(compare(dtable.to_vector(), finite_diff(table, loss), 1e-2f, 1e-3f), "");

  Tensor bad_ids = Tensor::from_ints({1, 9}, {2});
  Tensor out2 = Tensor::empty({2, h});
  EXPECT_THAT(error_of([&] { ops->embedding_forward(table, bad_ids, out2); }),
              HasSubstr("embedding_forward: ids[1] = 9"));
  EXPECT_THAT(error_of([&] { ops->embedding_backward(out2, bad_ids, dtable); }),
              HasSubstr("embedding_backward: ids[1] = 9"));
  Tensor wrong_out = Tensor::empty({6, h + 1});
  EXPECT_THAT(error_of([&] { ops->embedding_forward(table, ids, wrong_out); }),
              HasSubstr("embedding_forward: out is [6, 6], expected [6, 5]"));
}

TEST(CpuOps, NameAndDevice) {
  auto ops = make_cpu_ops();
  EXPECT_STREQ(ops->name(), "cpu");
  EXPECT_TRUE(ops->device().is_cpu());
}

}  // namespace
