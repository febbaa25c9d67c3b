// FP8 on the GPU (backend/ops.h, "FP8"; model.fp8_base) against the CPU reference:
//   - quantize_fp8: codes byte for byte and the scale bit for bit, BF16/F16/F32 inputs, E4M3 and
//     E5M2, on the vectorised and the scalar paths, with exact rounding ties;
//   - gemm_fp8: against the CPU op and against an exact double product of the decoded codes,
//     for the three format pairs, F32 and BF16 c, beta 0 and 1, the cuBLASLt FP8 path and the
//     fallback (K % 16 != 0, unaligned or odd-strided c), row-strided c;
//   - transpose: bit for bit for 1-, 2- and 4-byte dtypes;
//   - a tiny Llama with an FP8 base: its gradients and its 30-step loss curve against the same
//     model with a BF16 base.
// Outputs are poisoned (NaN, 0xFF codes) before each call. Skips without a GPU.
#include <cuda_runtime.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda_ops.h"
#include "backend/ops.h"
#include "core/batch.h"
#include "core/fp8.h"
#include "cuda/cuda_test_support.h"
#include "model/llama_model.h"
#include "model/weights.h"
#include "support/test_support.h"
#include "train/trainer.h"

namespace ftune {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

Device gpu_dev() { return Device::cuda(0); }

std::vector<uint8_t> host_bytes(const Tensor& t) {
  const Tensor h = t.to(Device::cpu());
  const auto* p = h.data<uint8_t>();
  return std::vector<uint8_t>(p, p + h.nbytes());
}

uint32_t float_bits(float f) {
  uint32_t u = 0;
  std::memcpy(&u, &f, 4);
  return u;
}

// A CPU F32 tensor of `values` rounded to dt and back: what both backends see of a dt input.
Tensor rounded_to(const std::vector<float>& values, const Shape& shape, DType dt) {
  const Tensor t = Tensor::from_vector(values, shape);
  return dt == DType::F32 ? t : t.to_dtype(dt).to_dtype(DType::F32);
}

// A device tensor of dt holding host F32 values (exactly representable in dt).
Tensor upload_as(const Tensor& host_f32, DType dt) {
  return (dt == DType::F32 ? host_f32 : host_f32.to_dtype(dt)).to(gpu_dev());
}

class CudaFp8 : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::no_gpu_reason().empty()) GTEST_SKIP() << test::no_gpu_reason();
    gpu_ = make_cuda_ops(0);
    cpu_ = make_cpu_ops();
  }
  void TearDown() override {
    gpu_.reset();
    if (test::no_gpu_reason().empty()) release_cached_memory(DeviceType::CUDA);
  }
  Ops& gpu() { return *gpu_; }
  Ops& cpu() { return *cpu_; }

 private:
  std::unique_ptr<Ops> gpu_, cpu_;
};

// ---------------------------------------------------------------------------------------------
// quantize_fp8

// Data for every branch of the encoders: normal values, exact zeros of both signs, values spread
// over 30 binades below (after scaling they fall into the subnormals of both formats or round to
// a signed zero), negatives, and a few large outliers that set amax (so the scale is no power of
// two and most values sit well below the largest code).
std::vector<float> quantize_input(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_int_distribution<int> kind(0, 99);
  std::uniform_real_distribution<float> binades(0.0f, 30.0f);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) {
    const int k = kind(rng);
    x = nd(rng);
    if (k < 3)
      x = 0.0f;
    else if (k < 5)
      x = -0.0f;
    else if (k < 25)
      x *= std::exp2(-binades(rng));
  }
  std::uniform_int_distribution<int64_t> at(0, n - 1);
  for (int i = 0; i < 5; ++i) v[static_cast<size_t>(at(rng))] = (i % 2 ? -1.0f : 1.0f) * (57.3f + 9.1f * i);
  return v;
}

// Exact rounding ties and their neighbours, with the expected codes: amax = max_finite / 8, so
// the scale is 1/8 and the encoders see every value times exactly 8. For each pair of adjacent
// finite codes c, c+1 (subnormals included): the midpoint (must round to the even code), the
// midpoint +- an eighth of the gap (c+1 and c), and the value of c itself, with both signs. All
// are exact in BF16, F16 and F32 (at most 6 significant bits; the smallest, 3·2^-22, is an F16
// subnormal), which the test checks.
struct TieCase {
  std::vector<float> values;
  std::vector<uint8_t> codes;
};
TieCase tie_input(Fp8Format f) {
  const float mx = fp8_max(f);
  const uint8_t max_code = f32_to_fp8(mx, f);  // 0x7E (E4M3) or 0x7B (E5M2)
  TieCase t;
  t.values.push_back(mx / 8.0f);
  t.codes.push_back(max_code);
  for (int c = 0; c < max_code; ++c) {
    const double lo = fp8_to_f32(static_cast<uint8_t>(c), f);
    const double hi = fp8_to_f32(static_cast<uint8_t>(c + 1), f);
    const double mid = (lo + hi) / 2, eighth = (hi - lo) / 8;
    const int even = c % 2 == 0 ? c : c + 1;
    const std::pair<double, int> cases[] = {{mid, even}, {mid + eighth, c + 1}, {mid - eighth, c},
                                            {lo, c}};
    for (const auto& [x, code] : cases)
      for (int sign : {1, -1}) {
        t.values.push_back(static_cast<float>(sign * x / 8.0));
        t.codes.push_back(static_cast<uint8_t>(code | (sign < 0 ? 0x80 : 0)));
      }
  }
  while (t.values.size() % 8 != 0) {  // the vectorised path takes multiples of 8
    t.values.push_back(0.0f);
    t.codes.push_back(0);
  }
  return t;
}

// "" when got == want, else the first differing element.
std::string first_code_difference(const std::vector<uint8_t>& got, const std::vector<uint8_t>& want,
                                  const Tensor& input) {
  if (got.size() != want.size()) return "size " + std::to_string(got.size()) + " vs " + std::to_string(want.size());
  for (size_t i = 0; i < want.size(); ++i)
    if (got[i] != want[i]) {
      char buf[160];
      std::snprintf(buf, sizeof buf, "element %zu (input %.9g): code 0x%02x, expected 0x%02x", i,
                    static_cast<double>(input.f32()[i]), got[i], want[i]);
      return buf;
    }
  return "";
}

// Quantizes `values` (rounded to dt) on both backends and compares. The GPU's x starts x_offset
// elements into its buffer and q q_offset bytes into its own (offsets break the 16-/8-byte
// alignment the vectorised kernels need: the scalar path). q's buffer is poisoned with 0xFF
// (a NaN code in both formats, never the code of a finite input) with 16 spare bytes after the
// view, which must stay poisoned; the scale is poisoned with NaN. Returns the CPU's codes.
std::vector<uint8_t> expect_quantize_matches(Ops& gpu, Ops& cpu, const std::vector<float>& values,
                                             DType dt, Fp8Format f, int64_t x_offset,
                                             int64_t q_offset, const std::string& what) {
  SCOPED_TRACE(what + " " + std::string(dtype_name(dt)) + " " +
               std::string(dtype_name(fp8_dtype(f))) + " n=" + std::to_string(values.size()) +
               " x_offset=" + std::to_string(x_offset) + " q_offset=" + std::to_string(q_offset));
  const int64_t n = static_cast<int64_t>(values.size());
  const Tensor x = rounded_to(values, {n}, dt);
  Tensor q_ref = Tensor::empty({n}, fp8_dtype(f));
  Tensor s_ref = Tensor::empty({1});
  cpu.quantize_fp8(x, q_ref, s_ref);
  const std::vector<uint8_t> want(q_ref.data<uint8_t>(), q_ref.data<uint8_t>() + n);

  Tensor xbuf = Tensor::empty({n + x_offset}, dt, gpu_dev());
  Tensor xg = xbuf.slice_flat(x_offset, {n});
  xg.copy_from(dt == DType::F32 ? x : x.to_dtype(dt));
  Tensor qbuf = Tensor::empty({q_offset + n + 16}, fp8_dtype(f), gpu_dev());
  EXPECT_EQ(cudaMemset(qbuf.raw(), 0xFF, qbuf.nbytes()), cudaSuccess);
  Tensor qg = qbuf.slice_flat(q_offset, {n});
  Tensor sg = Tensor::from_vector({kNaN}, {1}).to(gpu_dev());
  gpu.quantize_fp8(xg, qg, sg);

  const std::vector<uint8_t> all = host_bytes(qbuf);
  const std::vector<uint8_t> got(all.begin() + q_offset, all.begin() + q_offset + n);
  EXPECT_EQ(first_code_difference(got, want, x), "");
  for (int64_t i = 0; i < q_offset; ++i) EXPECT_EQ(all[static_cast<size_t>(i)], 0xFF) << "before q, byte " << i;
  for (int64_t i = q_offset + n; i < q_offset + n + 16; ++i)
    EXPECT_EQ(all[static_cast<size_t>(i)], 0xFF) << "after q, byte " << i;
  const float got_scale = sg.to(Device::cpu()).f32()[0], want_scale = s_ref.f32()[0];
  EXPECT_EQ(float_bits(got_scale), float_bits(want_scale)) << got_scale << " vs " << want_scale;
  return want;
}

TEST_F(CudaFp8, QuantizeMatchesCpuBitForBit) {
  uint64_t seed = 10;
  for (Fp8Format f : {Fp8Format::E4M3, Fp8Format::E5M2}) {
    // The random data reach every kind of code (checked on the F32 reference): +-0, subnormals,
    // normals, and the largest finite code (the amax element).
    {
      const std::vector<uint8_t> codes =
          expect_quantize_matches(gpu(), cpu(), quantize_input(1 << 16, 3), DType::F32, f, 0, 0,
                                  "coverage");
      const int mant_bits = f == Fp8Format::E4M3 ? 3 : 2;
      const uint8_t max_code = f32_to_fp8(fp8_max(f), f);
      int zero = 0, neg_zero = 0, subnormal = 0, normal = 0, largest = 0;
      for (uint8_t c : codes) {
        const int mag = c & 0x7F;
        zero += c == 0x00;
        neg_zero += c == 0x80;
        subnormal += mag != 0 && (mag >> mant_bits) == 0;
        normal += (mag >> mant_bits) != 0;
        largest += mag == max_code;
      }
      EXPECT_GT(zero, 0);
      EXPECT_GT(neg_zero, 0);
      EXPECT_GT(subnormal, 10);
      EXPECT_GT(normal, 1000);
      EXPECT_GT(largest, 0);
    }
    const TieCase ties = tie_input(f);
    for (DType dt : {DType::BF16, DType::F16, DType::F32}) {
      // Vectorised: n % 8 == 0 and fresh (256-byte aligned) buffers, one block and many.
      expect_quantize_matches(gpu(), cpu(), quantize_input(4096, ++seed), dt, f, 0, 0, "vector");
      expect_quantize_matches(gpu(), cpu(), quantize_input(int64_t{1} << 21, ++seed), dt, f, 0, 0,
                              "vector, many blocks");
      // Scalar: n % 8 != 0 (many blocks), an unaligned x, an unaligned q.
      expect_quantize_matches(gpu(), cpu(), quantize_input(1000003, ++seed), dt, f, 0, 0, "scalar");
      expect_quantize_matches(gpu(), cpu(), quantize_input(8192, ++seed), dt, f, 1, 0,
                              "unaligned x");
      expect_quantize_matches(gpu(), cpu(), quantize_input(8192, ++seed), dt, f, 0, 3,
                              "unaligned q");

      // Ties: the inputs are exact in dt, the CPU gives the expected codes (round to nearest
      // even), and the GPU the CPU's on both paths (the amax element is first, so dropping the
      // last element keeps the scale).
      const Tensor exact = rounded_to(ties.values, {static_cast<int64_t>(ties.values.size())}, dt);
      EXPECT_EQ(exact.to_vector(), ties.values) << dtype_name(dt);
      const std::vector<uint8_t> ref =
          expect_quantize_matches(gpu(), cpu(), ties.values, dt, f, 0, 0, "ties, vector");
      EXPECT_EQ(ref, ties.codes) << dtype_name(dt);
      std::vector<float> odd(ties.values.begin(), ties.values.end() - 1);
      expect_quantize_matches(gpu(), cpu(), odd, dt, f, 0, 0, "ties, scalar");
    }
  }
}

// The scale of the tie data is exactly 1/8; an all-zero tensor gives scale 1 and zero codes on
// both paths (no division by zero).
TEST_F(CudaFp8, QuantizeScaleOfTiesAndOfAllZeros) {
  for (Fp8Format f : {Fp8Format::E4M3, Fp8Format::E5M2}) {
    const TieCase ties = tie_input(f);
    const int64_t nt = static_cast<int64_t>(ties.values.size());
    Tensor q = Tensor::empty({nt}, fp8_dtype(f), gpu_dev());
    Tensor s = Tensor::from_vector({kNaN}, {1}).to(gpu_dev());
    gpu().quantize_fp8(Tensor::from_vector(ties.values, {nt}).to(gpu_dev()), q, s);
    EXPECT_EQ(s.to(Device::cpu()).f32()[0], 0.125f);
    EXPECT_EQ(host_bytes(q), ties.codes);

    for (DType dt : {DType::BF16, DType::F16, DType::F32})
      for (int64_t n : {1024, 1000}) {
        SCOPED_TRACE(std::string(dtype_name(dt)) + " n=" + std::to_string(n));
        Tensor x = Tensor::zeros({n}, dt, gpu_dev());
        Tensor qz = Tensor::empty({n}, fp8_dtype(f), gpu_dev());
        ASSERT_EQ(cudaMemset(qz.raw(), 0xFF, qz.nbytes()), cudaSuccess);
        Tensor sz = Tensor::from_vector({kNaN}, {1}).to(gpu_dev());
        gpu().quantize_fp8(x, qz, sz);
        EXPECT_EQ(sz.to(Device::cpu()).f32()[0], 1.0f);
        EXPECT_EQ(host_bytes(qz), std::vector<uint8_t>(static_cast<size_t>(n), 0));
        Tensor sc = Tensor::empty({1});
        Tensor qc = Tensor::empty({n}, fp8_dtype(f));
        cpu().quantize_fp8(Tensor::zeros({n}), qc, sc);
        EXPECT_EQ(sc.f32()[0], 1.0f);
      }
  }
}

// ---------------------------------------------------------------------------------------------
// gemm_fp8
//
// References: the CPU op (codes decoded exactly, one fp32 sgemm) and an exact one in double:
// exact = alpha sa sb sum_k a[m,k] b[n,k] + beta c (products of decoded codes are exact in
// double; the 512-term sums are too, to ~1e-16). Tolerances, with mag = |alpha sa sb| sum_k
// |a b| + |beta c| per element (the size of what is summed: the natural scale of a dot
// product's rounding error):
//   - CPU vs exact: (K + 8) 2^-24 mag per element (fp32 summation in any order, plus the
//     roundings of alpha sa sb, the scaling and the beta term).
//   - GPU vs exact, fallback path (K % 16 != 0: codes decoded to F32, true-fp32 gemm, epilogue):
//     the same fp32 bound (doubled for the epilogue's extra rounding); relative L2 error against
//     the CPU <= 1e-5.
//   - GPU vs exact, FP8 tensor cores (cuBLASLt; K % 16 == 0, though the heuristic may still pick
//     the fallback): Hopper's FP8 MMA adds the exact products to the accumulator with ~13-14
//     bits of alignment precision (DeepSeek-V3 report, sec. 3.3.2: "around 14 bits"); cuBLASLt
//     without FAST_ACCUM promotes partial sums to fp32 every few MMAs, but within a block the
//     error is ~2^-13 of the running sum per MMA step. Bound per element: 2^-8 mag (a K = 512
//     product has 16 MMA steps of K = 32: 16 · 2^-13 = 2^-9 in the worst case without any
//     promotion, so 2x margin); relative L2 error against the CPU <= 1e-3 (estimated ~1e-4
//     with promotion; a wrong scale, layout, format or beta is O(1)).
//   - BF16 c: plus one rounding of the output, 2^-8 |exact| (8 significant bits, half an ulp),
//     and 2^-8 more on the relative L2 error.
// Columns of a wider c outside the slice must be untouched; with beta 0 the slice is NaN
// before the call (c must not be read).

struct HostFp8 {
  Tensor codes;  // CPU [rows, cols] F8
  Tensor scale;  // CPU F32 [1]
  std::vector<double> values;  // the codes decoded (unscaled)
};

// Normal values over a few binades (E5M2, gradient-like: a dozen), scaled by a factor that is
// no power of two, quantized on the CPU.
HostFp8 random_fp8(Ops& cpu, int64_t rows, int64_t cols, Fp8Format f, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<float> spread(0.0f, f == Fp8Format::E5M2 ? 12.0f : 4.0f);
  std::vector<float> v(static_cast<size_t>(rows * cols));
  for (float& x : v) x = 0.37f * nd(rng) * std::exp2(-spread(rng));
  HostFp8 m{Tensor::empty({rows, cols}, fp8_dtype(f)), Tensor::empty({1}), {}};
  cpu.quantize_fp8(Tensor::from_vector(v, {rows, cols}), m.codes, m.scale);
  const auto* p = m.codes.data<uint8_t>();
  for (int64_t i = 0; i < rows * cols; ++i) m.values.push_back(fp8_to_f32(p[i], f));
  return m;
}

// The worst element of |got - want| / (rtol |want| + mtol mag), as a message if it exceeds 1.
std::string elementwise(const std::vector<double>& got, const std::vector<double>& want,
                        const std::vector<double>& mag, double rtol, double mtol) {
  double worst = 0;
  size_t at = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double bound = rtol * std::fabs(want[i]) + mtol * mag[i] + 1e-30;
    const double r = std::isnan(got[i]) ? INFINITY : std::fabs(got[i] - want[i]) / bound;
    if (r > worst) worst = r, at = i;
  }
  if (worst <= 1.0) return "";
  char buf[200];
  std::snprintf(buf, sizeof buf, "element %zu: %.9g vs %.9g (mag %.4g), %.3g x the tolerance", at,
                got[at], want[at], mag[at], worst);
  return buf;
}

double rel_l2(const std::vector<double>& got, const std::vector<double>& want) {
  double d = 0, w = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    d += (got[i] - want[i]) * (got[i] - want[i]);
    w += want[i] * want[i];
  }
  return std::isnan(d) ? INFINITY : std::sqrt(d / std::max(w, 1e-300));
}

struct GemmShape {
  int64_t m, n, k;
  int64_t wide = 0, col0 = 0;  // c = columns [col0, col0 + n) of an [m, wide] matrix (wide > 0)
};

TEST_F(CudaFp8, GemmMatchesCpu) {
  const GemmShape shapes[] = {
      {37, 96, 64},
      {256, 384, 512},
      {37, 40, 24},                   // K % 16 != 0: the decode + F32 gemm fallback
      {64, 96, 128, 160, 32},         // a row-strided c, 16-byte aligned rows
      {50, 96, 64, 109, 5},           // an odd row stride and an unaligned start
      {45, 33, 24, 80, 7},            // both: fallback epilogue into a strided c
  };
  const std::pair<Fp8Format, Fp8Format> formats[] = {{Fp8Format::E4M3, Fp8Format::E4M3},
                                                     {Fp8Format::E5M2, Fp8Format::E4M3},
                                                     {Fp8Format::E4M3, Fp8Format::E5M2}};
  constexpr double u32 = 0x1p-24, bf16_round = 0x1p-8;
  double worst_lt = 0, worst_fallback = 0;  // relative L2 error against exact, F32 c
  uint64_t seed = 100;
  for (const GemmShape& sh : shapes)
    for (const auto& [fa, fb] : formats)
      for (DType ct : {DType::F32, DType::BF16})
        for (float beta : {0.0f, 1.0f}) {
          const int64_t M = sh.m, N = sh.n, K = sh.k;
          const int64_t W = sh.wide > 0 ? sh.wide : N, c0 = sh.col0;
          const float alpha = beta == 0.0f ? 1.0f : -0.75f;
          const bool fallback = K % 16 != 0;
          SCOPED_TRACE(fmt::format("M={} N={} K={} c [{}, {}] from col {}, a {} b {} c {} beta {}",
                                   M, N, K, M, W, c0, dtype_name(fp8_dtype(fa)),
                                   dtype_name(fp8_dtype(fb)), dtype_name(ct), beta));
          const HostFp8 a = random_fp8(cpu(), M, K, fa, ++seed), b = random_fp8(cpu(), N, K, fb, ++seed);
          const double s = static_cast<double>(alpha) * a.scale.f32()[0] * b.scale.f32()[0];

          // The exact product, then c's initial values: beta 1 accumulates into values of the
          // product's size (rounded to c's dtype), beta 0 finds NaN in the slice; the columns
          // outside the slice hold other values that must survive.
          std::vector<double> prod(static_cast<size_t>(M * N)), absprod(prod.size());
          double rms = 0;
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j) {
              double acc = 0, abs_acc = 0;
              for (int64_t t = 0; t < K; ++t) {
                const double p = a.values[static_cast<size_t>(i * K + t)] *
                                 b.values[static_cast<size_t>(j * K + t)];
                acc += p;
                abs_acc += std::fabs(p);
              }
              prod[static_cast<size_t>(i * N + j)] = s * acc;
              absprod[static_cast<size_t>(i * N + j)] = std::fabs(s) * abs_acc;
              rms += s * acc * s * acc;
            }
          rms = std::sqrt(rms / static_cast<double>(M * N));
          std::mt19937_64 rng(seed);
          std::normal_distribution<float> nd(0.0f, 1.0f);
          std::vector<float> init(static_cast<size_t>(M * W));
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < W; ++j) {
              const bool inside = j >= c0 && j < c0 + N;
              init[static_cast<size_t>(i * W + j)] =
                  inside && beta == 0.0f ? kNaN : static_cast<float>(rms) * nd(rng) * (inside ? 1 : 100);
            }
          const Tensor init_t = rounded_to(init, {M, W}, ct);  // NaN stays NaN
          const std::vector<float> init_r = init_t.to_vector();
          std::vector<double> exact(prod.size()), mag(prod.size());
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < N; ++j) {
              const size_t e = static_cast<size_t>(i * N + j);
              const double cold = beta == 0.0f ? 0.0 : init_r[static_cast<size_t>(i * W + c0 + j)];
              exact[e] = prod[e] + beta * cold;
              mag[e] = absprod[e] + std::fabs(beta * cold);
            }

          Tensor c_cpu = init_t.clone();
          Tensor cv_cpu = sh.wide > 0 ? c_cpu.col_slice(c0, c0 + N) : c_cpu;
          cpu().gemm_fp8(a.codes, a.scale, b.codes, b.scale, cv_cpu, alpha, beta);
          Tensor c_gpu = upload_as(init_t, ct);
          Tensor cv_gpu = sh.wide > 0 ? c_gpu.col_slice(c0, c0 + N) : c_gpu;
          gpu().gemm_fp8(a.codes.to(gpu_dev()), a.scale.to(gpu_dev()), b.codes.to(gpu_dev()),
                         b.scale.to(gpu_dev()), cv_gpu, alpha, beta);
          Tensor back = c_gpu.to(Device::cpu());
          if (ct != DType::F32) back = back.to_dtype(DType::F32);
          const std::vector<float> got_all = back.to_vector(), cpu_all = c_cpu.to_vector();

          std::vector<double> got(prod.size()), ref(prod.size());
          int outside_changed = 0;
          for (int64_t i = 0; i < M; ++i)
            for (int64_t j = 0; j < W; ++j) {
              const size_t w = static_cast<size_t>(i * W + j);
              if (j >= c0 && j < c0 + N) {
                got[static_cast<size_t>(i * N + j - c0)] = got_all[w];
                ref[static_cast<size_t>(i * N + j - c0)] = cpu_all[w];
              } else {
                outside_changed += float_bits(got_all[w]) != float_bits(init_r[w]);
                outside_changed += float_bits(cpu_all[w]) != float_bits(init_r[w]);
              }
            }
          EXPECT_EQ(outside_changed, 0) << "elements of c outside the slice were written";

          const double fp32_tol = static_cast<double>(K + 8) * u32;
          const double acc_tol = fallback ? 2 * fp32_tol : 0x1p-8;
          const double out_round = ct == DType::BF16 ? bf16_round : 0.0;
          // Both references agree with the exact product.
          EXPECT_EQ(elementwise(ref, exact, mag, 0.0, fp32_tol), "") << "CPU vs exact";
          EXPECT_LT(rel_l2(ref, exact), 1e-6) << "CPU vs exact";
          // The GPU against the exact product and against the CPU.
          EXPECT_EQ(elementwise(got, exact, mag, out_round, acc_tol * 1.01), "") << "GPU vs exact";
          EXPECT_EQ(elementwise(got, ref, mag, out_round, acc_tol * 1.01 + 2 * fp32_tol), "")
              << "GPU vs CPU";
          const double err = rel_l2(got, ref);
          EXPECT_LE(err, (fallback ? 1e-5 : 1e-3) + out_round) << "GPU vs CPU, relative L2";
          if (ct == DType::F32) {
            double& worst = fallback ? worst_fallback : worst_lt;
            worst = std::max(worst, rel_l2(got, exact));
          }
        }
  std::printf("gemm_fp8, F32 c, worst relative L2 error against the exact product: "
              "K %% 16 == 0 (cuBLASLt FP8) %.3g, fallback %.3g\n", worst_lt, worst_fallback);
}

TEST_F(CudaFp8, GemmRejectsTwoE5m2Operands) {
  Tensor a = Tensor::zeros({4, 16}, DType::F8_E5M2, gpu_dev());
  Tensor b = Tensor::zeros({8, 16}, DType::F8_E5M2, gpu_dev());
  Tensor s = Tensor::from_vector({1.0f}, {1}).to(gpu_dev());
  Tensor c = Tensor::empty({4, 8}, DType::F32, gpu_dev());
  EXPECT_NE(test::error_of([&] { gpu().gemm_fp8(a, s, b, s, c, 1.0f, 0.0f); })
                .find("gemm_fp8: a and b are both F8_E5M2"),
            std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// transpose

TEST_F(CudaFp8, TransposeMatchesCpu) {
  const Shape shapes[] = {{33, 70}, {1, 5}, {5, 1}, {64, 64}, {31, 33}, {100, 257}, {1000, 3},
                          // 1-byte dtypes with both sides multiples of 4: the 64 x 64 word-tiled kernel,
                          // whole and partial tiles
                          {100, 260}, {256, 192}, {4, 8}, {68, 1028}};
  const DType dtypes[] = {DType::F8_E4M3, DType::U8, DType::BF16, DType::F16, DType::F32, DType::I32};
  std::mt19937_64 rng(7);
  for (DType dt : dtypes)
    for (const Shape& shape : shapes) {
      SCOPED_TRACE(std::string(dtype_name(dt)) + " " + shape_str(shape));
      const int64_t R = shape[0], C = shape[1];
      const size_t es = dtype_size(dt);
      Tensor src = Tensor::empty(shape, dt);
      auto* sp = src.data<uint8_t>();
      for (size_t i = 0; i < src.nbytes(); ++i) sp[i] = static_cast<uint8_t>(rng());
      Tensor ref = Tensor::empty({C, R}, dt);
      cpu().transpose(src, ref);
      // The CPU reference itself: element (c, r) of dst is element (r, c) of src.
      int wrong = 0;
      for (int64_t r = 0; r < R; ++r)
        for (int64_t c = 0; c < C; ++c)
          wrong += std::memcmp(ref.data<uint8_t>() + (c * R + r) * static_cast<int64_t>(es),
                               sp + (r * C + c) * static_cast<int64_t>(es), es) != 0;
      EXPECT_EQ(wrong, 0) << "CPU transpose";
      Tensor dst = Tensor::empty({C, R}, dt, gpu_dev());
      ASSERT_EQ(cudaMemset(dst.raw(), 0xA5, dst.nbytes()), cudaSuccess);
      gpu().transpose(src.to(gpu_dev()), dst);
      const std::vector<uint8_t> got = host_bytes(dst);
      EXPECT_EQ(std::memcmp(got.data(), ref.raw(), ref.nbytes()), 0);
    }
}

// ---------------------------------------------------------------------------------------------
// A model with an FP8 base against the same model with a BF16 base
//
// Every dimension the FP8 GEMMs see is a multiple of 16 (hidden 128, q/k/v 256, gate/up 512,
// intermediate 256), so forward and backward take cuBLASLt's FP8 kernels. Expected differences:
// E4M3 keeps 3 mantissa bits, an rms relative rounding error of ~2.4% per weight and per
// activation, and the backward's E5M2 gradients (2 bits) ~5%. Independent per element, they
// give each base projection's output ~3.5% relative noise forward and ~5.5% backward (bf16:
// ~0.1%). That noise is far below the signal of a wrong scale, layout or transposition (O(1)).

ModelSpec fp8_spec() {
  ModelSpec s;
  s.arch = "llama";
  s.vocab_size = 512;
  s.hidden_size = 128;
  s.intermediate_size = 256;
  s.num_layers = 2;
  s.num_heads = 4;
  s.num_kv_heads = 2;
  s.head_dim = 32;
  s.max_position_embeddings = 512;
  return s;
}

// Rows of two packed documents each repeating a random 7-token motif (as in the bf16 training
// test): after the first period every token is predictable from the context.
Batch motif_batch(int64_t rows, int64_t seq, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> u(0, static_cast<int32_t>(vocab - 1));
  Batch b;
  b.rows = rows;
  b.seq_len = seq;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t split = seq / 3 + r % 5;
    std::vector<int32_t> motif(7);
    for (auto& m : motif) m = u(rng);
    for (int64_t i = 0; i < seq; ++i) {
      const bool second = i >= split;
      const int32_t id = motif[static_cast<size_t>((i - (second ? split : 0)) % 7)];
      b.input_ids.push_back(id);
      b.labels.push_back(id);
      b.position_ids.push_back(static_cast<int32_t>(second ? i - split : i));
      b.doc_start.push_back(static_cast<int32_t>(r * seq + (second ? split : 0)));
    }
  }
  return b;
}

// One random base (F32 on the host) built twice on the GPU in BF16, once with fp8_base, and
// one LoRA adapter (r 8, alpha 16) with the same values on both. Each model has its own Ops.
struct Fp8AndBf16Models {
  explicit Fp8AndBf16Models(const ModelSpec& s, uint64_t seed)
      : ops_bf16(make_cuda_ops(0)),
        ops_fp8(make_cuda_ops(0)),
        base(random_base_weights(s, seed, 0.05f)),
        bf16(s, base_weights_to(base, s, gpu_dev()), *ops_bf16, options(false)),
        fp8(s, base_weights_to(base, s, gpu_dev()), *ops_fp8, options(true)) {
    LoraSpec ls;
    ls.r = 8;
    ls.alpha = 16;
    bf16.attach_lora(LoraWeights::init(s, ls, gpu_dev()));
    fp8.attach_lora(LoraWeights::init(s, ls, gpu_dev()));
    fp8.lora().flat_params.copy_from(bf16.lora().flat_params);
  }
  static ModelOptions options(bool fp8_base) {
    ModelOptions o;
    o.dtype = DType::BF16;
    o.fp8_base = fp8_base;
    return o;
  }
  std::unique_ptr<Ops> ops_bf16, ops_fp8;  // before the models, which hold references to them
  BaseWeights base;
  LlamaModel bf16, fp8;
};

double cosine(const std::vector<float>& a, const std::vector<float>& b) {
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    ab += static_cast<double>(a[i]) * b[i];
    aa += static_cast<double>(a[i]) * a[i];
    bb += static_cast<double>(b[i]) * b[i];
  }
  return ab / std::sqrt(std::max(aa * bb, 1e-300));
}

TEST_F(CudaFp8, BaseIsHeldAsE4m3CodesWithOneScalePerMatrix) {
  const ModelSpec s = fp8_spec();
  Fp8AndBf16Models t(s, 5);
  int64_t proj_elements = 0;
  for (int l = 0; l < s.num_layers; ++l) {
    SCOPED_TRACE("layer " + std::to_string(l));
    const LayerWeights& L = t.fp8.base().layers[static_cast<size_t>(l)];
    const LayerWeights& D = t.bf16.base().layers[static_cast<size_t>(l)];
    ASSERT_TRUE(L.fp8());
    EXPECT_FALSE(D.fp8());
    const Tensor* mats[] = {&L.qkv, &L.gate_up, &L.weight[static_cast<size_t>(Proj::O)],
                            &L.weight[static_cast<size_t>(Proj::Down)]};
    const Tensor* dense[] = {&D.qkv, &D.gate_up, &D.weight[static_cast<size_t>(Proj::O)],
                             &D.weight[static_cast<size_t>(Proj::Down)]};
    for (int i = 0; i < 4; ++i) {
      EXPECT_EQ(mats[i]->dtype(), DType::F8_E4M3) << i;
      EXPECT_EQ(mats[i]->shape(), dense[i]->shape()) << i;
      EXPECT_EQ(dense[i]->dtype(), DType::BF16) << i;
      EXPECT_EQ(mats[i]->device(), gpu_dev()) << i;
      proj_elements += mats[i]->numel();
    }
    for (Proj p : kAllProj) {
      const Tensor& sc = L.fp8_scale[static_cast<size_t>(p)];
      ASSERT_TRUE(sc.defined()) << proj_name(p);
      EXPECT_EQ(sc.dtype(), DType::F32);
      EXPECT_EQ(sc.numel(), 1);
      EXPECT_EQ(sc.device(), gpu_dev());
      // The scale of a matrix of N(0, 0.05) weights is amax / 448: positive and finite.
      const float v = sc.to(Device::cpu()).f32()[0];
      EXPECT_TRUE(std::isfinite(v) && v > 0.0f && v < 1.0f) << proj_name(p) << " " << v;
    }
  }
  // One byte per projection weight instead of two, plus four 4-byte scales per layer.
  EXPECT_EQ(base_weight_bytes(t.bf16.base()) - base_weight_bytes(t.fp8.base()),
            proj_elements - int64_t{16} * s.num_layers);
}

// One forward/backward from the same parameters (B non-zero, so every LoRA gradient is), with
// the noise above: the loss within 1% (the logits come from the bf16 lm_head; the base's noise
// reaches them through two layers and the residual stream, which also carries the unquantized
// embedding), and each LoRA gradient within 30% relative L2 error with a cosine above 0.95.
// Measured with this test's code on the CPU backend (F32 activations, fp32-exact FP8 GEMMs, the
// same quantization): loss 0.06% apart; gradients 8-18% relative L2 error, cosines 0.985-0.997,
// the worst being layer 1's q/k adapters (attention scores from two noisy projections). A wrong
// dx from a base backward would leave the layer-0 gradients unrelated (cosine ~0).
TEST_F(CudaFp8, ForwardBackwardTracksTheBf16Base) {
  const ModelSpec s = fp8_spec();
  Fp8AndBf16Models t(s, 5);
  std::mt19937_64 rng(3);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  for (auto& p : t.bf16.lora().params())
    if (p.name.find("lora_B") != std::string::npos) {
      Tensor v = Tensor::empty(p.value->shape());
      for (int64_t i = 0; i < v.numel(); ++i) v.f32()[i] = nd(rng);
      p.value->copy_from(v.to(p.value->device()));
    }
  t.fp8.lora().flat_params.copy_from(t.bf16.lora().flat_params);

  const Batch b = motif_batch(4, 160, s.vocab_size, 7);
  const float scale = 1.0f / static_cast<float>(count_trained_tokens(b));
  t.bf16.lora().zero_grad();
  t.fp8.lora().zero_grad();
  const StepLoss want = t.bf16.forward_backward(b, scale);
  const StepLoss got = t.fp8.forward_backward(b, scale);
  EXPECT_EQ(got.count, want.count);
  EXPECT_NEAR(got.mean() / want.mean(), 1.0, 1e-2) << got.mean() << " vs " << want.mean();
  // The FP8 base is really used: quantizing the weights changes the loss.
  EXPECT_NE(got.loss_sum, want.loss_sum);
  auto wp = t.bf16.lora().params();
  auto gp = t.fp8.lora().params();
  ASSERT_EQ(wp.size(), gp.size());
  for (size_t i = 0; i < wp.size(); ++i) {
    const std::vector<float> w = wp[i].grad->to(Device::cpu()).to_vector();
    const std::vector<float> g = gp[i].grad->to(Device::cpu()).to_vector();
    EXPECT_LT(test::rel_l2(g, w), 0.3) << wp[i].name;
    EXPECT_GT(cosine(g, w), 0.95) << wp[i].name;
  }
}

// 30 AdamW steps (lr 3e-3, clipping at 1) on the same four batches from the same parameters.
// Step 0 sees only the forward noise (within 1%, as above). Later the runs also take slightly
// different steps (the gradient noise above, AdamW normalising per element), so the curves drift
// apart by a fraction of how far they have moved. Each step's losses must agree within 5%, the
// mean of the last 5 within 3%, and both runs must learn: last-5 mean below 70% of the first
// loss, a fall many times the allowed difference. Measured on the CPU backend (F32 vs F32 with
// an FP8 base): the loss falls from 6.55 to ~3.5, the largest per-step gap is 1.3% (step 29,
// growing slowly), the last-5 means 0.6% apart. For scale: the bf16 training test allows bf16 vs
// fp32 3% over 20 steps and 10% over 50, for ~10x less rounding noise per GEMM than FP8's.
TEST_F(CudaFp8, ModelTrainsWithAnFp8BaseLikeTheBf16One) {
  const ModelSpec s = fp8_spec();
  Fp8AndBf16Models t(s, 9);
  EXPECT_EQ(t.fp8.base().layers[0].qkv.dtype(), DType::F8_E4M3);
  EXPECT_EQ(t.bf16.base().layers[0].qkv.dtype(), DType::BF16);
  TrainerOptions to;
  to.schedule.base_lr = 3e-3;
  to.schedule.total_steps = 30;
  to.max_grad_norm = 1.0;
  Trainer bt(t.bf16, to), ft(t.fp8, to);
  std::vector<Batch> data;
  for (int i = 0; i < 4; ++i) data.push_back(motif_batch(2, 160, s.vocab_size, 100 + i));
  constexpr int kSteps = 30, kTail = 5;
  double first_b = 0, first_f = 0, tail_b = 0, tail_f = 0;
  for (int step = 0; step < kSteps; ++step) {
    const Batch& b = data[static_cast<size_t>(step) % data.size()];
    const StepStats sb = bt.step({b});
    const StepStats sf = ft.step({b});
    std::printf("step %2d  bf16 %.5f  fp8 %.5f  ratio %.4f\n", step, sb.loss, sf.loss,
                sf.loss / sb.loss);
    ASSERT_TRUE(std::isfinite(sf.loss) && std::isfinite(sf.grad_norm)) << "step " << step;
    EXPECT_LE(std::fabs(sf.loss - sb.loss), (step == 0 ? 0.01 : 0.05) * sb.loss)
        << "step " << step << ": " << sf.loss << " vs " << sb.loss;
    if (step == 0) first_b = sb.loss, first_f = sf.loss;
    if (step >= kSteps - kTail) tail_b += sb.loss / kTail, tail_f += sf.loss / kTail;
  }
  EXPECT_NEAR(tail_f / tail_b, 1.0, 0.03) << tail_f << " vs " << tail_b;
  EXPECT_LT(tail_b, 0.7 * first_b);
  EXPECT_LT(tail_f, 0.7 * first_f);
}

}  // namespace
}  // namespace ftune
