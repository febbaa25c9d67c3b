// FP8 (model.fp8_base) on the CPU: the E4M3/E5M2 conversions of core/fp8.h (every code, ties,
// saturation, subnormals), the reference ops quantize_fp8 / gemm_fp8 / transpose against naive
// double references, the FP8 linear against the dense one, and a whole model with an FP8 base
// against the same model in F32. The CUDA ops are tested against these in
// tests/cuda/test_cuda_fp8.cpp.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

#include "backend/ops.h"
#include "core/fp8.h"
#include "model/llama_model.h"
#include "model/lora.h"
#include "model/memory_model.h"
#include "support/test_support.h"

using namespace ftune;
using ::testing::HasSubstr;

namespace {

constexpr Fp8Format kFormats[] = {Fp8Format::E4M3, Fp8Format::E5M2};

bool is_nan_code(uint8_t c, Fp8Format f) {
  const int mag = c & 0x7F;
  return f == Fp8Format::E4M3 ? mag == 0x7F : mag > 0x7C;
}

// A [rows, cols] code matrix of the format, random values spread over the whole range.
Tensor random_codes(const Shape& shape, Fp8Format f, uint64_t seed) {
  Tensor t = Tensor::empty(shape, fp8_dtype(f));
  uint64_t z = seed * 0x9E3779B97F4A7C15ull + 1;
  auto* p = t.data<uint8_t>();
  for (int64_t i = 0; i < t.numel(); ++i) {
    z ^= z << 13, z ^= z >> 7, z ^= z << 17;
    uint8_t c = static_cast<uint8_t>(z >> 24);
    if (is_nan_code(c, f) || (f == Fp8Format::E5M2 && (c & 0x7F) == 0x7C)) c &= 0xBF;  // finite
    p[i] = c;
  }
  return t;
}

}  // namespace

TEST(Fp8Format, KnownCodesAndLimits) {
  EXPECT_EQ(f32_to_fp8(1.0f, Fp8Format::E4M3), 0x38);
  EXPECT_EQ(f32_to_fp8(1.0f, Fp8Format::E5M2), 0x3C);
  EXPECT_EQ(f32_to_fp8(-2.0f, Fp8Format::E4M3), 0xC0);
  EXPECT_EQ(f32_to_fp8(448.0f, Fp8Format::E4M3), 0x7E);
  EXPECT_EQ(f32_to_fp8(57344.0f, Fp8Format::E5M2), 0x7B);
  EXPECT_EQ(fp8_max(Fp8Format::E4M3), 448.0f);
  EXPECT_EQ(fp8_max(Fp8Format::E5M2), 57344.0f);
  // Saturation: beyond the largest finite value, infinities included (__NV_SATFINITE).
  for (float big : {449.0f, 1e9f, std::numeric_limits<float>::infinity()}) {
    EXPECT_EQ(f32_to_fp8(big, Fp8Format::E4M3), 0x7E) << big;
    EXPECT_EQ(f32_to_fp8(-big, Fp8Format::E4M3), 0xFE) << big;
  }
  EXPECT_EQ(f32_to_fp8(1e30f, Fp8Format::E5M2), 0x7B);
  EXPECT_EQ(f32_to_fp8(-std::numeric_limits<float>::infinity(), Fp8Format::E5M2), 0xFB);
  // NaN stays NaN.
  for (Fp8Format f : kFormats)
    EXPECT_TRUE(std::isnan(fp8_to_f32(f32_to_fp8(std::nanf(""), f), f)));
  EXPECT_TRUE(std::isinf(fp8_to_f32(0x7C, Fp8Format::E5M2)));
  // Subnormals: E4M3's smallest is 2^-9, E5M2's 2^-16.
  EXPECT_EQ(fp8_to_f32(0x01, Fp8Format::E4M3), std::ldexp(1.0f, -9));
  EXPECT_EQ(fp8_to_f32(0x01, Fp8Format::E5M2), std::ldexp(1.0f, -16));
  EXPECT_EQ(f32_to_fp8(std::ldexp(1.0f, -9), Fp8Format::E4M3), 0x01);
  EXPECT_EQ(f32_to_fp8(std::ldexp(1.0f, -11), Fp8Format::E4M3), 0x00);  // flushes to zero
  EXPECT_EQ(fp8_dtype(Fp8Format::E4M3), DType::F8_E4M3);
  EXPECT_EQ(fp8_format(DType::F8_E5M2), Fp8Format::E5M2);
  EXPECT_THAT(test::error_of([] { (void)fp8_format(DType::BF16); }), HasSubstr("not an 8-bit float"));
}

TEST(Fp8Format, EveryCodeRoundTripsAndValuesIncrease) {
  for (Fp8Format f : kFormats) {
    SCOPED_TRACE(static_cast<int>(f));
    float prev = -1.0f;
    for (int c = 0; c < 128; ++c) {
      const auto code = static_cast<uint8_t>(c);
      const float v = fp8_to_f32(code, f);
      if (is_nan_code(code, f) || std::isinf(v)) continue;
      EXPECT_EQ(f32_to_fp8(v, f), code) << c;
      EXPECT_EQ(f32_to_fp8(-v, f), static_cast<uint8_t>(code | 0x80)) << c;
      EXPECT_EQ(fp8_to_f32(static_cast<uint8_t>(code | 0x80), f), -v) << c;
      EXPECT_GT(v, prev) << c;  // codes are ordered by value
      prev = v;
    }
  }
}

TEST(Fp8Format, RoundsToNearestEven) {
  for (Fp8Format f : kFormats) {
    SCOPED_TRACE(static_cast<int>(f));
    for (int c = 0; c + 1 < 128; ++c) {
      const auto lo = static_cast<uint8_t>(c), hi = static_cast<uint8_t>(c + 1);
      const float a = fp8_to_f32(lo, f), b = fp8_to_f32(hi, f);
      if (is_nan_code(hi, f) || std::isinf(b)) break;
      const double mid = (static_cast<double>(a) + b) / 2;  // exact in float for these formats
      const auto midf = static_cast<float>(mid);
      ASSERT_EQ(static_cast<double>(midf), mid);
      // The tie goes to the even code (mantissa's last bit 0).
      EXPECT_EQ(f32_to_fp8(midf, f), (lo & 1) == 0 ? lo : hi) << "between codes " << c;
      // Just off the tie, to the nearer one.
      EXPECT_EQ(f32_to_fp8(std::nextafter(midf, 0.0f), f), lo) << c;
      EXPECT_EQ(f32_to_fp8(std::nextafter(midf, 1e30f), f), hi) << c;
    }
  }
}

TEST(CpuOpsFp8, QuantizeScalesTheLargestMagnitudeToTheFormatsMaximum) {
  auto ops = make_cpu_ops();
  for (Fp8Format f : kFormats) {
    SCOPED_TRACE(static_cast<int>(f));
    Tensor x = test::random_tensor({7, 33}, 5, 3.0f);
    x.f32()[17] = -9.5f;  // the amax, negative
    Tensor q = Tensor::empty({7 * 33}, fp8_dtype(f));
    std::memset(q.raw(), 0x5A, q.nbytes());
    Tensor s = Tensor::from_vector({std::nanf("")}, {1});
    ops->quantize_fp8(x, q, s);
    const float mx = fp8_max(f);
    EXPECT_EQ(s.f32()[0], 9.5f / mx);
    const float inv = mx / 9.5f;
    const auto* qp = q.data<uint8_t>();
    EXPECT_EQ(qp[17], f32_to_fp8(-mx, f));
    double err = 0, norm = 0;
    for (int64_t i = 0; i < x.numel(); ++i) {
      ASSERT_EQ(qp[i], f32_to_fp8(x.f32()[i] * inv, f)) << i;
      const double back = static_cast<double>(fp8_to_f32(qp[i], f)) * s.f32()[0];
      err += (back - x.f32()[i]) * (back - x.f32()[i]);
      norm += static_cast<double>(x.f32()[i]) * x.f32()[i];
    }
    // Dequantized, the tensor is close to the original: 3 (2) mantissa bits, relative error
    // per element at most 2^-4 (2^-3) for normal values.
    EXPECT_LT(std::sqrt(err / norm), f == Fp8Format::E4M3 ? 0.04 : 0.08);
    EXPECT_GT(std::sqrt(err / norm), 1e-4);  // and it did quantize
  }
  // All zeros: scale 1, codes 0.
  Tensor z = Tensor::zeros({16});
  Tensor q = Tensor::empty({16}, DType::F8_E4M3);
  std::memset(q.raw(), 0x5A, q.nbytes());
  Tensor s = Tensor::empty({1});
  ops->quantize_fp8(z, q, s);
  EXPECT_EQ(s.f32()[0], 1.0f);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(q.data<uint8_t>()[i], 0) << i;
  // An amax so small that max / amax overflows (fp32 subnormals only): treated as all zeros,
  // not inf * 0 = NaN codes.
  z.f32()[3] = 1e-40f;
  z.f32()[5] = -2e-39f;
  ops->quantize_fp8(z, q, s);
  EXPECT_EQ(s.f32()[0], 1.0f);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(q.data<uint8_t>()[i] & 0x7F, 0) << i;
}

TEST(CpuOpsFp8, GemmMatchesTheScaledProductOfTheCodes) {
  auto ops = make_cpu_ops();
  struct Case {
    Fp8Format fa, fb;
    int64_t m, n, k;
    float alpha, beta;
  };
  for (const Case& cs : {Case{Fp8Format::E4M3, Fp8Format::E4M3, 5, 7, 32, 1.0f, 0.0f},
                         Case{Fp8Format::E5M2, Fp8Format::E4M3, 9, 4, 24, 0.5f, 1.0f},
                         Case{Fp8Format::E4M3, Fp8Format::E5M2, 3, 6, 17, 2.0f, 0.25f}}) {
    Tensor a = random_codes({cs.m, cs.k}, cs.fa, 1), b = random_codes({cs.n, cs.k}, cs.fb, 2);
    Tensor sa = Tensor::from_vector({0.0137f}, {1}), sb = Tensor::from_vector({3.5e-3f}, {1});
    // c as a column slice of a wider matrix: the row stride is honoured.
    Tensor wide = test::random_tensor({cs.m, cs.n + 3}, 7);
    Tensor c = wide.col_slice(1, 1 + cs.n);
    const std::vector<float> before = wide.to_vector();
    if (cs.beta == 0.0f)
      for (int64_t i = 0; i < cs.m; ++i)
        for (int64_t j = 0; j < cs.n; ++j) wide.f32()[i * (cs.n + 3) + 1 + j] = std::nanf("");
    ops->gemm_fp8(a, sa, b, sb, c, cs.alpha, cs.beta);
    for (int64_t i = 0; i < cs.m; ++i) {
      for (int64_t j = 0; j < cs.n; ++j) {
        double acc = 0;
        for (int64_t l = 0; l < cs.k; ++l)
          acc += static_cast<double>(fp8_to_f32(a.data<uint8_t>()[i * cs.k + l], cs.fa)) *
                 fp8_to_f32(b.data<uint8_t>()[j * cs.k + l], cs.fb);
        const size_t at = static_cast<size_t>(i * (cs.n + 3) + 1 + j);
        const double want = static_cast<double>(cs.alpha) * 0.0137 * 3.5e-3 * acc +
                            (cs.beta == 0.0f ? 0.0 : static_cast<double>(cs.beta) * before[at]);
        ASSERT_NEAR(wide.f32()[at], want, 1e-5 * (std::abs(want) + 1e-3)) << i << "," << j;
      }
      // The columns outside the slice are untouched.
      EXPECT_EQ(wide.f32()[i * (cs.n + 3)], before[static_cast<size_t>(i * (cs.n + 3))]);
      EXPECT_EQ(wide.f32()[i * (cs.n + 3) + cs.n + 1],
                before[static_cast<size_t>(i * (cs.n + 3) + cs.n + 1)]);
    }
  }
}

TEST(CpuOpsFp8, ArgumentErrorsNameTheOpAndTheArgument) {
  auto ops = make_cpu_ops();
  Tensor a = random_codes({4, 16}, Fp8Format::E5M2, 1), b = random_codes({3, 16}, Fp8Format::E5M2, 2);
  Tensor s = Tensor::from_vector({1.0f}, {1});
  Tensor c = Tensor::empty({4, 3});
  EXPECT_THAT(test::error_of([&] { ops->gemm_fp8(a, s, b, s, c, 1, 0); }),
              HasSubstr("gemm_fp8: a and b are both F8_E5M2"));
  Tensor b4 = random_codes({3, 8}, Fp8Format::E4M3, 2);
  EXPECT_THAT(test::error_of([&] { ops->gemm_fp8(a, s, b4, s, c, 1, 0); }),
              HasSubstr("gemm_fp8: a is [4, 16] but b is [3, 8]"));
  Tensor dense = Tensor::empty({3, 16});
  EXPECT_THAT(test::error_of([&] { ops->gemm_fp8(a, s, dense, s, c, 1, 0); }),
              HasSubstr("gemm_fp8: b has dtype F32, expected F8_E4M3 or F8_E5M2"));
  Tensor x = Tensor::zeros({4, 4});
  Tensor q = Tensor::empty({15}, DType::F8_E4M3);
  EXPECT_THAT(test::error_of([&] { ops->quantize_fp8(x, q, s); }),
              HasSubstr("quantize_fp8: q is [15] but x is [4, 4]"));
  Tensor q16 = Tensor::empty({16}, DType::U8);
  EXPECT_THAT(test::error_of([&] { ops->quantize_fp8(x, q16, s); }),
              HasSubstr("quantize_fp8: q has dtype U8"));
  Tensor t = Tensor::empty({4, 5});
  EXPECT_THAT(test::error_of([&] { ops->transpose(x, t); }),
              HasSubstr("transpose: dst is [4, 5] but src is [4, 4]"));
}

TEST(CpuOpsFp8, TransposeMovesEveryElement) {
  auto ops = make_cpu_ops();
  for (DType dt : {DType::F8_E4M3, DType::BF16, DType::F32}) {
    Tensor src = Tensor::empty({5, 7}, dt), dst = Tensor::empty({7, 5}, dt);
    const size_t es = dtype_size(dt);
    auto* s = static_cast<unsigned char*>(src.raw());
    for (size_t i = 0; i < src.nbytes(); ++i) s[i] = static_cast<unsigned char>(i * 37 + 11);
    ops->transpose(src, dst);
    const auto* d = static_cast<const unsigned char*>(dst.raw());
    for (int64_t r = 0; r < 5; ++r)
      for (int64_t c = 0; c < 7; ++c)
        ASSERT_EQ(std::memcmp(d + (c * 5 + r) * es, s + (r * 7 + c) * es, es), 0)
            << dtype_name(dt) << " " << r << "," << c;
  }
}

TEST(Fp8Linear, ForwardAndInputGradientAreTheDenseOnesUpToQuantization) {
  // y = x Wᵀ and dx = dy W through the FP8 path (E4M3 x and W, E5M2 dy) against the F32 GEMMs
  // on the dequantized weight: the error is the activations' quantization (3 mantissa bits
  // forward, 2 backward), a few percent, and exactly that of the codes each GEMM was given.
  auto ops = make_cpu_ops();
  const int64_t n = 24, in = 64, out = 48;
  Tensor w = test::random_tensor({out, in}, 3, 0.05f);
  Tensor w8 = Tensor::empty({out, in}, DType::F8_E4M3), sw = Tensor::empty({1});
  ops->quantize_fp8(w, w8, sw);
  Tensor wq = Tensor::empty({out, in});  // the weight the FP8 GEMMs see
  for (int64_t i = 0; i < w.numel(); ++i)
    wq.f32()[i] = fp8_to_f32(w8.data<uint8_t>()[i], Fp8Format::E4M3) * sw.f32()[0];
  Tensor x = test::random_tensor({n, in}, 4), dy = test::random_tensor({n, out}, 5, 1e-3f);
  const BaseMatrix fp8(w8, sw);
  Tensor y8 = Tensor::empty({n, out}), y = Tensor::empty({n, out});
  base_forward(*ops, x, fp8, y8);
  base_forward(*ops, x, BaseMatrix(wq), y);
  const double fwd_err = test::rel_l2(y8.to_vector(), y.to_vector());
  EXPECT_LT(fwd_err, 0.05);
  EXPECT_GT(fwd_err, 1e-4);  // x was quantized
  Tensor dx8 = test::random_tensor({n, in}, 6), dx = Tensor::empty({n, in});
  const std::vector<float> dx_before = dx8.to_vector();
  base_backward(*ops, dy, fp8, dx8, true);  // accumulate
  base_backward(*ops, dy, BaseMatrix(wq), dx, false);
  std::vector<float> added = dx8.to_vector();
  for (size_t i = 0; i < added.size(); ++i) added[i] -= dx_before[i];
  const double bwd_err = test::rel_l2(added, dx.to_vector());
  EXPECT_LT(bwd_err, 0.1);
  EXPECT_GT(bwd_err, 1e-4);  // dy was quantized (E5M2)
  // The weight itself is close to the original (per-tensor E4M3).
  EXPECT_LT(test::rel_l2(wq.to_vector(), w.to_vector()), 0.04);
}

TEST(Fp8Model, TrainsLikeTheF32ModelWithHalfTheWeightBytes) {
  // A tiny Llama with its projections in FP8 against the same weights in F32: the first loss
  // and the LoRA gradients agree up to FP8's quantization, and a few SGD-like steps (the same
  // updates applied to both) keep the losses within 2%.
  ModelSpec s;
  s.arch = "llama";
  s.vocab_size = 64;
  s.hidden_size = 64;
  s.intermediate_size = 128;
  s.num_layers = 2;
  s.num_heads = 4;
  s.num_kv_heads = 2;
  s.head_dim = 16;
  s.max_position_embeddings = 64;
  auto ops = make_cpu_ops();
  LoraSpec ls;
  ls.r = 4;
  ModelOptions o8;
  o8.fp8_base = true;
  LlamaModel dense(s, random_base_weights(s, 5, 0.08f), *ops);
  LlamaModel fp8(s, random_base_weights(s, 5, 0.08f), *ops, o8);
  for (LlamaModel* m : {&dense, &fp8}) {
    LoraWeights lw = LoraWeights::init(s, ls, Device::cpu());
    uint64_t k = 9;
    for (auto& p : lw.params()) p.value->copy_from(test::random_tensor(p.value->shape(), ++k, 0.05f));
    m->attach_lora(std::move(lw));
  }
  const LayerWeights& L = fp8.base().layers[0];
  EXPECT_EQ(L.qkv.dtype(), DType::F8_E4M3);
  EXPECT_EQ(L.gate_up.dtype(), DType::F8_E4M3);
  EXPECT_EQ(L.weight[static_cast<size_t>(Proj::Down)].dtype(), DType::F8_E4M3);
  EXPECT_EQ(L.weight[static_cast<size_t>(Proj::K)].dtype(), DType::F8_E4M3);  // a row view
  EXPECT_TRUE(L.fp8());
  EXPECT_FALSE(dense.base().layers[0].fp8());
  // Projections at 1 byte instead of 4 (embeddings and norms unchanged).
  const int64_t proj = 2 * (s.q_dim() + 2 * s.kv_dim()) * 64 + 2 * 64 * s.q_dim() +
                       2 * 3 * 128 * 64;
  EXPECT_EQ(base_weight_bytes(dense.base()) - base_weight_bytes(fp8.base()),
            proj * 3 - 2 * 4 * 4);  // plus the four F32 scales per layer
  // Memory model: the same saving.
  MemoryModelInput mi;
  mi.spec = s;
  mi.lora = ls;
  const int64_t dense_base = estimate_memory(mi).base_weights;
  mi.fp8_base = true;
  EXPECT_EQ(dense_base - estimate_memory(mi).base_weights, proj * 3 - 2 * 4 * 4);

  Batch b = batch_from_documents({{1, 5, 9, 2, 7, 3, 3, 8, 11, 40}, {4, 4, 6, 1, 0, 2, 60, 61}},
                                 {{1, 5, 9, 2, 7, 3, 3, 8, 11, 40}, {4, 4, 6, 1, 0, 2, 60, 61}},
                                 10, 0);
  std::vector<double> losses[2];
  for (int step = 0; step < 4; ++step) {
    std::vector<std::vector<float>> g[2];
    int i = 0;
    for (LlamaModel* m : {&dense, &fp8}) {
      m->lora().zero_grad();
      losses[i].push_back(m->forward_backward(b, 1.0f).loss_sum);
      for (auto& p : m->lora().params()) g[i].push_back(p.grad->to_vector());
      ++i;
    }
    if (step == 0) {
      // This tiny random model is sensitive: quantizing only its weights (dequantized into an
      // F32 model) already moves the LoRA gradients by 7-16% (measured); the whole FP8 path
      // (activations and gradients quantized too) by 10-27%. A wrong scale, operand or
      // transpose gives errors near 100%.
      double sum = 0;
      for (size_t p = 0; p < g[0].size(); ++p) {
        const double e = test::rel_l2(g[1][p], g[0][p]);
        EXPECT_LT(e, 0.35) << "param " << p;
        sum += e;
      }
      EXPECT_LT(sum / static_cast<double>(g[0].size()), 0.25);
    }
    // The same update on both (from the dense model's gradients): only the forward differs.
    for (LlamaModel* m : {&dense, &fp8}) {
      auto params = m->lora().params();
      for (size_t p = 0; p < params.size(); ++p) {
        float* v = params[p].value->f32();
        for (size_t j = 0; j < g[0][p].size(); ++j) v[j] -= 0.5f * g[0][p][j];
      }
      m->lora().refresh_compute(*ops);
    }
  }
  for (int step = 0; step < 4; ++step)
    EXPECT_NEAR(losses[1][static_cast<size_t>(step)], losses[0][static_cast<size_t>(step)],
                0.02 * losses[0][static_cast<size_t>(step)])
        << step;
  EXPECT_LT(losses[0][3], losses[0][0]);  // the updates train
  EXPECT_LT(losses[1][3], losses[1][0]);
  EXPECT_NE(losses[1][0], losses[0][0]);  // the FP8 forward is not the dense one
}

TEST(Fp8Model, RefusesAnNf4Base) {
  ModelSpec s;
  s.arch = "llama";
  s.vocab_size = 32;
  s.hidden_size = 64;
  s.intermediate_size = 64;
  s.num_layers = 1;
  s.num_heads = 2;
  s.num_kv_heads = 2;
  s.head_dim = 32;
  s.max_position_embeddings = 16;
  auto ops = make_cpu_ops();
  BaseWeights w = random_base_weights(s, 1, 0.1f);
  quantize_base_weights(w, true);
  ModelOptions o;
  o.fp8_base = true;
  EXPECT_THAT(test::error_of([&] { LlamaModel m(s, std::move(w), *ops, o); }),
              HasSubstr("model.fp8_base: the base weights are NF4"));
}
