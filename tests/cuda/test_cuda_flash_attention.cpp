// The flash-attention kernels (backend/cuda/flash_attention.h) against the CPU reference
// attention (make_cpu_ops()->attention_forward/backward) in fp32 on the same bf16/fp16-rounded
// inputs: head dims 16..128, MHA and GQA, one long document, many short ones, documents of
// length 1, boundaries in the middle of a block, n not a multiple of any block. Outputs and the
// workspace are poisoned with NaN before each call, so an element the kernels fail to write
// shows up. Tolerances are atol + rtol * |ref| with atol a fraction of the reference's largest
// magnitude, plus a relative L2 bound that catches systematic errors the loose elementwise
// bound would let through.
//
// The GPU tests skip when no CUDA device is usable. FlashAttention.DISABLED_Bench prints TFLOP/s
// of the forward and backward for n = 8192 as 4 documents of 2048 tokens, nh 32, nkv 8, hd 128
// (bf16 and f16; then hd 64, 16 documents of 512, 2 of 2048, one of 16384 and one of 32768):
//   test_cuda_flash_attention --gtest_also_run_disabled_tests --gtest_filter='*Bench*'
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

#include "backend/cuda/flash_attention.h"
#include "backend/ops.h"
#include "core/dtype.h"
#include "cuda/cuda_test_support.h"
#include "support/test_support.h"

using namespace ftune;

namespace {

using test::no_gpu_reason;

#define CUDA_OK(expr) ASSERT_EQ((expr), cudaSuccess) << #expr

// A device allocation freed on scope exit.
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (cudaMalloc(&p_, std::max<size_t>(bytes, 1)) != cudaSuccess) p_ = nullptr;
  }
  ~DeviceBuffer() { cudaFree(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <typename T = void>
  T* get() const {
    return static_cast<T*>(p_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* p_ = nullptr;
  size_t bytes_;
};

template <typename T>
constexpr bool kIsBf16 = std::is_same_v<T, __nv_bfloat16>;

template <typename T>
uint16_t to_bits(float f) {
  return kIsBf16<T> ? f32_to_bf16(f) : f32_to_f16(f);
}
template <typename T>
float from_bits(uint16_t b) {
  return kIsBf16<T> ? bf16_to_f32(b) : f16_to_f32(b);
}
template <typename T>
const char* dtype_label() {
  return kIsBf16<T> ? "bf16" : "f16";
}

// Uniform(-scale, scale) values rounded to T: the bits for the device, the rounded values (as a
// CPU f32 tensor) for the reference.
template <typename T>
struct Rounded {
  std::vector<uint16_t> bits;
  Tensor values;
};
template <typename T>
Rounded<T> random_rounded(const Shape& shape, uint64_t seed, float scale = 1.0f) {
  Rounded<T> r;
  r.values = test::random_tensor(shape, seed, scale);
  float* v = r.values.f32();
  r.bits.resize(static_cast<size_t>(r.values.numel()));
  for (size_t i = 0; i < r.bits.size(); ++i) {
    r.bits[i] = to_bits<T>(v[i]);
    v[i] = from_bits<T>(r.bits[i]);
  }
  return r;
}

template <typename U>
void upload(const DeviceBuffer& d, const std::vector<U>& h) {
  ASSERT_GE(d.bytes(), h.size() * sizeof(U));
  CUDA_OK(cudaMemcpy(d.get(), h.data(), h.size() * sizeof(U), cudaMemcpyHostToDevice));
}

template <typename T>
std::vector<float> download_half(const DeviceBuffer& d, size_t count) {
  std::vector<uint16_t> bits(count);
  EXPECT_EQ(cudaMemcpy(bits.data(), d.get(), count * 2, cudaMemcpyDeviceToHost), cudaSuccess);
  std::vector<float> out(count);
  for (size_t i = 0; i < count; ++i) out[i] = from_bits<T>(bits[i]);
  return out;
}

std::vector<float> download_f32(const DeviceBuffer& d, size_t count) {
  std::vector<float> out(count);
  EXPECT_EQ(cudaMemcpy(out.data(), d.get(), count * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  return out;
}

// All-ones bytes: NaN in bf16, fp16 and fp32.
void poison(const DeviceBuffer& d) { ASSERT_EQ(cudaMemset(d.get(), 0xFF, d.bytes()), cudaSuccess); }

std::vector<int32_t> doc_starts(const std::vector<int>& lengths) {
  std::vector<int32_t> ds;
  for (int len : lengths) {
    const auto start = static_cast<int32_t>(ds.size());
    for (int i = 0; i < len; ++i) ds.push_back(start);
  }
  return ds;
}

float max_abs(const std::vector<float>& v) {
  float m = 0.0f;
  for (float x : v)
    if (std::isfinite(x)) m = std::max(m, std::fabs(x));
  return m;
}

// Elementwise atol + rtol*|ref| (atol = atol_frac * max|ref|) and relative L2 error <= l2.
struct Tol {
  float rtol, atol_frac, l2;
};
// bf16 keeps 8 significant bits (unit roundoff 2^-9 ~ 2e-3), fp16 11 (2^-12 ~ 2.4e-4). P and dS
// are rounded to 16 bits before their matmuls, and the outputs once more.
Tol forward_tol(bool bf16) { return bf16 ? Tol{2e-2f, 1e-2f, 8e-3f} : Tol{5e-3f, 2e-3f, 1.5e-3f}; }
Tol backward_tol(bool bf16) { return bf16 ? Tol{3e-2f, 2e-2f, 1.5e-2f} : Tol{8e-3f, 4e-3f, 3e-3f}; }

std::string check(const std::vector<float>& got, const std::vector<float>& want, Tol tol) {
  const float atol = std::max(tol.atol_frac * max_abs(want), 1e-5f);
  std::string msg = test::compare(got, want, tol.rtol, atol);
  if (!msg.empty()) return msg;
  const double l2 = test::rel_l2(got, want);
  if (!(l2 <= tol.l2))
    return "relative L2 error " + std::to_string(l2) + " > " + std::to_string(tol.l2);
  return "";
}

struct Case {
  std::string name;
  std::vector<int> docs;  // document lengths laid end to end
  int nh, nkv, hd;
};

std::vector<int> repeat(int len, int count) {
  return std::vector<int>(static_cast<size_t>(count), len);
}

// Lengths 1..max_len from a fixed seed, summing to exactly n.
std::vector<int> random_docs(int n, int max_len, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int> docs;
  int left = n;
  while (left > 0) {
    const int len = std::min(left, 1 + static_cast<int>(rng() % static_cast<uint64_t>(max_len)));
    docs.push_back(len);
    left -= len;
  }
  return docs;
}

std::vector<Case> cases() {
  return {
      {"n1", {1}, 4, 4, 64},
      {"n17_gqa_hd128", {17}, 8, 2, 128},
      {"n17_hd16_two_docs", {9, 8}, 4, 4, 16},
      {"n200_len1_and_mid_block_boundaries", {1, 1, 1, 50, 3, 64, 80}, 8, 2, 64},
      {"n200_gqa32x8_hd128", {100, 37, 63}, 32, 8, 128},
      {"n200_hd96", {130, 70}, 8, 4, 96},
      {"n200_hd32_mqa", {200}, 4, 1, 32},
      {"n1000_one_doc_hd128", {1000}, 8, 2, 128},
      {"n1000_short_docs_hd64", random_docs(1000, 40, 7), 4, 4, 64},
      {"n1000_len1_docs_hd32", repeat(1, 1000), 4, 4, 32},
      {"n4096_mixed_docs_hd64", {1000, 1, 2047, 1048}, 8, 2, 64},
      {"n4096_one_doc_hd128", {4096}, 4, 4, 128},
  };
}

template <typename T>
void run_case(const Case& c, uint64_t seed, float qk_magnitude = 1.0f) {
  SCOPED_TRACE(std::string(dtype_label<T>()) + " " + c.name + " q,k magnitude " +
               std::to_string(qk_magnitude) + " nh " + std::to_string(c.nh) + " nkv " +
               std::to_string(c.nkv) + " hd " + std::to_string(c.hd));
  ASSERT_TRUE(cuda::flash_attention_supported(c.hd));
  const std::vector<int32_t> ds = doc_starts(c.docs);
  const int64_t n = static_cast<int64_t>(ds.size());
  const Shape qs{n, c.nh, c.hd}, kvs{n, c.nkv, c.hd};
  const float scale = 1.0f / std::sqrt(static_cast<float>(c.hd));
  const auto q = random_rounded<T>(qs, seed + 1, qk_magnitude);
  const auto k = random_rounded<T>(kvs, seed + 2, qk_magnitude);
  const auto v = random_rounded<T>(kvs, seed + 3);
  const auto d_o = random_rounded<T>(qs, seed + 4);
  const Tensor doc_start = Tensor::from_ints(ds, {n});

  // Reference, fp32 on the rounded inputs.
  auto cpu = make_cpu_ops();
  Tensor o_ref = Tensor::empty(qs), lse_ref = Tensor::empty({n, c.nh});
  cpu->attention_forward(q.values, k.values, v.values, doc_start, scale, o_ref, lse_ref);
  Tensor dq_ref = Tensor::empty(qs), dk_ref = Tensor::empty(kvs), dv_ref = Tensor::empty(kvs);
  cpu->attention_backward(q.values, k.values, v.values, o_ref, lse_ref, d_o.values, doc_start,
                          scale, dq_ref, dk_ref, dv_ref);

  const auto nq = static_cast<size_t>(n * c.nh * c.hd), nkv = static_cast<size_t>(n * c.nkv * c.hd);
  DeviceBuffer q_dev(nq * 2), k_dev(nkv * 2), v_dev(nkv * 2), do_dev(nq * 2), ds_dev(n * 4);
  DeviceBuffer o_dev(nq * 2), lse_dev(n * c.nh * 4), dq_dev(nq * 2), dk_dev(nkv * 2),
      dv_dev(nkv * 2);
  DeviceBuffer ws(cuda::flash_attention_workspace_bytes(n, c.nh, c.nkv, c.hd));
  upload(q_dev, q.bits);
  upload(k_dev, k.bits);
  upload(v_dev, v.bits);
  upload(do_dev, d_o.bits);
  upload(ds_dev, ds);
  for (const DeviceBuffer* b : {&o_dev, &lse_dev, &dq_dev, &dk_dev, &dv_dev, &ws}) poison(*b);

  cuda::flash_attention_forward<T>(q_dev.get<T>(), k_dev.get<T>(), v_dev.get<T>(),
                                   ds_dev.get<int32_t>(), n, c.nh, c.nkv, c.hd, scale,
                                   o_dev.get<T>(), lse_dev.get<float>(), nullptr);
  CUDA_OK(cudaDeviceSynchronize());
  const bool bf16 = kIsBf16<T>;
  EXPECT_EQ(check(download_half<T>(o_dev, nq), o_ref.to_vector(), forward_tol(bf16)), "") << "o";
  // lse is fp32 from fp32 scores of the same rounded inputs: only summation order differs.
  EXPECT_EQ(test::compare(download_f32(lse_dev, static_cast<size_t>(n * c.nh)), lse_ref.to_vector(),
                          0.0f, 1e-3f),
            "")
      << "lse";

  // The backward consumes the kernel's own o and lse, as in training.
  cuda::flash_attention_backward<T>(q_dev.get<T>(), k_dev.get<T>(), v_dev.get<T>(), o_dev.get<T>(),
                                    lse_dev.get<float>(), do_dev.get<T>(), ds_dev.get<int32_t>(), n,
                                    c.nh, c.nkv, c.hd, scale, dq_dev.get<T>(), dk_dev.get<T>(),
                                    dv_dev.get<T>(), ws.get(), nullptr);
  CUDA_OK(cudaDeviceSynchronize());
  EXPECT_EQ(check(download_half<T>(dq_dev, nq), dq_ref.to_vector(), backward_tol(bf16)), "")
      << "dq";
  EXPECT_EQ(check(download_half<T>(dk_dev, nkv), dk_ref.to_vector(), backward_tol(bf16)), "")
      << "dk";
  EXPECT_EQ(check(download_half<T>(dv_dev, nkv), dv_ref.to_vector(), backward_tol(bf16)), "")
      << "dv";
}

class FlashAttention : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!no_gpu_reason().empty()) GTEST_SKIP() << no_gpu_reason();
  }
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Without a GPU: the argument checks fire before anything touches the device.

TEST(FlashAttentionHostOnly, SupportedHeadDimsAndWorkspace) {
  for (int hd : {16, 32, 64, 96, 128}) EXPECT_TRUE(cuda::flash_attention_supported(hd)) << hd;
  for (int hd : {0, 8, 40, 80, 100, 192, 256})
    EXPECT_FALSE(cuda::flash_attention_supported(hd)) << hd;
  // dq accumulator [n, nh, hd] and D [n, nh] in fp32, the order of ceil(n / 16) key blocks,
  // each rounded up to 256 bytes.
  EXPECT_EQ(cuda::flash_attention_workspace_bytes(100, 8, 2, 64), 204800u + 3328u + 256u);
}

TEST(FlashAttentionHostOnly, RejectsBadArgumentsBeforeLaunching) {
  const __nv_bfloat16* none = nullptr;
  __nv_bfloat16* out = nullptr;
  auto fwd = [&](int nh, int nkv, int hd) {
    cuda::flash_attention_forward<__nv_bfloat16>(none, none, none, nullptr, 4, nh, nkv, hd, 1.0f,
                                                 out, nullptr, nullptr);
  };
  EXPECT_NE(test::error_of([&] {
              fwd(6, 4, 64);
            }).find("flash_attention_forward: 6 query heads are not a multiple of 4 kv heads"),
            std::string::npos);
  EXPECT_NE(test::error_of([&] {
              fwd(4, 4, 80);
            }).find("flash_attention_forward: head_dim 80 is not supported"),
            std::string::npos);
  const std::string bwd = test::error_of([&] {
    cuda::flash_attention_backward<__half>(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                                           nullptr, 4, 4, 4, 64, 1.0f, nullptr, nullptr, nullptr,
                                           nullptr, nullptr);
  });
  EXPECT_NE(bwd.find("flash_attention_backward: no workspace"), std::string::npos) << bwd;
}

// ---------------------------------------------------------------------------------------------
// Against the CPU reference

TEST_F(FlashAttention, Bf16MatchesCpuReference) {
  uint64_t seed = 1000;
  for (const Case& c : cases()) run_case<__nv_bfloat16>(c, seed += 10);
}

TEST_F(FlashAttention, F16MatchesCpuReference) {
  uint64_t seed = 2000;
  for (const Case& c : cases()) run_case<__half>(c, seed += 10);
}

// Sharper softmax: q and k of magnitude 3 give logits of std ~3, rows dominated by few keys.
TEST_F(FlashAttention, PeakedSoftmaxMatchesCpuReference) {
  const Case c{"peaked", {300, 1, 211}, 8, 2, 64};
  run_case<__nv_bfloat16>(c, 3000, 3.0f);
  run_case<__half>(c, 3100, 3.0f);
}

// ---------------------------------------------------------------------------------------------
// Timing (disabled by default; run with --gtest_also_run_disabled_tests --gtest_filter='*Bench*').
// Causal FLOPs over the visible (i, j) pairs, P = sum over documents of L (L + 1) / 2:
//   forward  4 P hd nh   (S = Q K^T and O = P V, 2 flops per multiply-add)
//   backward 10 P hd nh  (S recomputed, dP = dO V^T, dV, dK, dQ)

template <typename T>
void bench(const char* label, int hd, int doc_len = 2048, int n_total = 8192) {
  const std::vector<int> docs = repeat(doc_len, n_total / doc_len);
  const int nh = 32, nkv = 8;
  const std::vector<int32_t> ds = doc_starts(docs);
  const int64_t n = static_cast<int64_t>(ds.size());
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const auto nq = static_cast<size_t>(n * nh * hd), nkvs = static_cast<size_t>(n * nkv * hd);
  DeviceBuffer bq(nq * 2), bk(nkvs * 2), bv(nkvs * 2), bdo(nq * 2), bds(n * 4), bo(nq * 2),
      blse(n * nh * 4), bdq(nq * 2), bdk(nkvs * 2), bdv(nkvs * 2),
      ws(cuda::flash_attention_workspace_bytes(n, nh, nkv, hd));
  upload(bq, random_rounded<T>({n, nh, hd}, 1).bits);
  upload(bk, random_rounded<T>({n, nkv, hd}, 2).bits);
  upload(bv, random_rounded<T>({n, nkv, hd}, 3).bits);
  upload(bdo, random_rounded<T>({n, nh, hd}, 4).bits);
  upload(bds, ds);
  auto fwd = [&] {
    cuda::flash_attention_forward<T>(bq.get<T>(), bk.get<T>(), bv.get<T>(), bds.get<int32_t>(), n,
                                     nh, nkv, hd, scale, bo.get<T>(), blse.get<float>(), nullptr);
  };
  auto bwd = [&] {
    cuda::flash_attention_backward<T>(bq.get<T>(), bk.get<T>(), bv.get<T>(), bo.get<T>(),
                                      blse.get<float>(), bdo.get<T>(), bds.get<int32_t>(), n, nh,
                                      nkv, hd, scale, bdq.get<T>(), bdk.get<T>(), bdv.get<T>(),
                                      ws.get(), nullptr);
  };
  double pairs = 0;
  for (int len : docs) pairs += 0.5 * len * (len + 1.0);
  const double fwd_flops = 4.0 * pairs * hd * nh, bwd_flops = 10.0 * pairs * hd * nh;
  cudaEvent_t start, stop;
  CUDA_OK(cudaEventCreate(&start));
  CUDA_OK(cudaEventCreate(&stop));
  auto time_ms = [&](auto&& f, int reps) {
    for (int i = 0; i < 3; ++i) f();  // warm-up
    cudaEventRecord(start);
    for (int i = 0; i < reps; ++i) f();
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    return ms / reps;
  };
  const float f_ms = time_ms(fwd, 20);
  const float b_ms = time_ms(bwd, 20);
  CUDA_OK(cudaDeviceSynchronize());
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  std::printf(
      "[flash %s] n %lld (%zu docs x %d) nh %d nkv %d hd %d: forward %.3f ms %.1f TFLOP/s, "
      "backward %.3f ms %.1f TFLOP/s\n",
      label, static_cast<long long>(n), docs.size(), doc_len, nh, nkv, hd, f_ms,
      fwd_flops / (f_ms * 1e9), b_ms, bwd_flops / (b_ms * 1e9));
}

TEST_F(FlashAttention, DISABLED_Bench) {
  bench<__nv_bfloat16>("bf16", 128);
  bench<__half>("f16", 128);
  bench<__nv_bfloat16>("bf16", 64);        // Llama-3.2-1B's attention shape
  bench<__nv_bfloat16>("bf16", 128, 512);  // many shorter documents
  bench<__nv_bfloat16>("bf16", 128, 2048, 4096);    // llama-3-8b, 2 x 2048
  bench<__nv_bfloat16>("bf16", 128, 16384, 16384);  // long context
  bench<__nv_bfloat16>("bf16", 128, 32768, 32768);
}
