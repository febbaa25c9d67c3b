// Runs the flash-attention kernels in the host emulator (emu.h) against a double-precision
// reference of the CPU backend's semantics (src/backend/cpu/cpu_attention.cpp), on bf16/fp16
// rounded inputs, for small shapes that cover every head dim, GQA, document boundaries inside
// blocks, documents of length 1 and n not a multiple of any block. Shared memory is filled with
// NaN before each CTA, outputs are poisoned with NaN. Exits 1 on any failure. Built by
// tests/CMakeLists.txt as the host-only test flash_emu (needs the CUDA headers, not a GPU); by
// hand, from the repository root (add -fsanitize=address,undefined to check every global and
// shared-memory access against the buffers' bounds):
//   g++ -std=c++20 -O2 -I dev/flash_emu -I src -I /usr/local/cuda/include
//       dev/flash_emu/flash_emu.cpp -o /tmp/flash_emu && /tmp/flash_emu [quick]
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/asan_interface.h>
#endif

#include "emu.h"  // before the kernels: the CUDA keywords and builtins as host code

namespace ftune::device {
alignas(16) uint4 smem_raw[232448 / 16];  // the kernels' extern __shared__ buffer
}

#include "backend/cuda/device/flash_backward.cuh"
#include "backend/cuda/device/flash_forward.cuh"

using namespace ftune::device;

namespace {

template <typename T>
uint16_t to_bits(float f) {
  T x = MmaTraits<T>::from_float(f);
  uint16_t b;
  std::memcpy(&b, &x, 2);
  return b;
}
template <typename T>
float from_bits(uint16_t b) {
  return half_bits_to_float<T>(b);
}

struct Case {
  std::vector<int> docs;
  int nh, nkv, hd;
};

struct Ref {
  std::vector<double> o, lse, dq, dk, dv;
};

// The CPU backend's attention in double (inputs already rounded).
Ref reference(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
              const std::vector<float>& d_o, const std::vector<int32_t>& ds, int n, int nh, int nkv,
              int hd, float scale) {
  const int group = nh / nkv;
  Ref r;
  r.o.assign(static_cast<size_t>(n) * nh * hd, 0);
  r.lse.assign(static_cast<size_t>(n) * nh, 0);
  r.dq.assign(r.o.size(), 0);
  r.dk.assign(static_cast<size_t>(n) * nkv * hd, 0);
  r.dv.assign(r.dk.size(), 0);
  auto Q = [&](int i, int h, int c) {
    return static_cast<double>(q[(static_cast<size_t>(i) * nh + h) * hd + c]);
  };
  auto K = [&](int j, int g, int c) {
    return static_cast<double>(k[(static_cast<size_t>(j) * nkv + g) * hd + c]);
  };
  auto V = [&](int j, int g, int c) {
    return static_cast<double>(v[(static_cast<size_t>(j) * nkv + g) * hd + c]);
  };
  auto G = [&](int i, int h, int c) {
    return static_cast<double>(d_o[(static_cast<size_t>(i) * nh + h) * hd + c]);
  };
  for (int i = 0; i < n; ++i) {
    for (int h = 0; h < nh; ++h) {
      const int g = h / group;
      std::vector<double> s;
      double mx = -1e300;
      for (int j = ds[i]; j <= i; ++j) {
        double d = 0;
        for (int c = 0; c < hd; ++c) d += Q(i, h, c) * K(j, g, c);
        s.push_back(d * scale);
        mx = std::max(mx, s.back());
      }
      double sum = 0;
      for (double x : s) sum += std::exp(x - mx);
      const double lse = mx + std::log(sum);
      r.lse[static_cast<size_t>(i) * nh + h] = lse;
      std::vector<double> o(hd, 0);
      for (int j = ds[i]; j <= i; ++j) {
        const double p = std::exp(s[j - ds[i]] - lse);
        for (int c = 0; c < hd; ++c) o[c] += p * V(j, g, c);
      }
      double D = 0;
      for (int c = 0; c < hd; ++c) {
        r.o[(static_cast<size_t>(i) * nh + h) * hd + c] = o[c];
        D += o[c] * G(i, h, c);
      }
      for (int j = ds[i]; j <= i; ++j) {
        const double p = std::exp(s[j - ds[i]] - lse);
        double dp = 0;
        for (int c = 0; c < hd; ++c) dp += G(i, h, c) * V(j, g, c);
        const double dsc = p * (dp - D);
        for (int c = 0; c < hd; ++c) {
          r.dq[(static_cast<size_t>(i) * nh + h) * hd + c] += scale * dsc * K(j, g, c);
          r.dk[(static_cast<size_t>(j) * nkv + g) * hd + c] += scale * dsc * Q(i, h, c);
          r.dv[(static_cast<size_t>(j) * nkv + g) * hd + c] += p * G(i, h, c);
        }
      }
    }
  }
  return r;
}

// Max |got - want| over max |want|; NaN counts as failure (returns +inf).
double rel_err(const std::vector<float>& got, const std::vector<double>& want) {
  double err = 0, mx = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    err = std::max(err, std::fabs(got[i] - want[i]));
    mx = std::max(mx, std::fabs(want[i]));
  }
  return mx > 0 ? err / mx : err;
}

template <typename T>
std::vector<float> floats(const std::vector<T>& x) {
  std::vector<float> f(x.size());
  for (size_t i = 0; i < x.size(); ++i) f[i] = MmaTraits<T>::to_float(x[i]);
  return f;
}

// Before a launch with `bytes` of dynamic shared memory: NaN in all of it and, under
// AddressSanitizer (-fsanitize=address), the rest of the buffer poisoned so that any access
// past the kernel's shared-memory layout is reported.
void prepare_smem(size_t bytes) {
#ifdef __SANITIZE_ADDRESS__
  ASAN_UNPOISON_MEMORY_REGION(smem_raw, sizeof(smem_raw));
#endif
  std::memset(smem_raw, 0xFF, sizeof(smem_raw));
#ifdef __SANITIZE_ADDRESS__
  ASAN_POISON_MEMORY_REGION(reinterpret_cast<char*>(smem_raw) + bytes, sizeof(smem_raw) - bytes);
#endif
}

template <typename T, int HD>
bool run(const Case& c, uint64_t seed, float mag, float scale_sign) {
  std::vector<int32_t> ds;
  for (int len : c.docs) {
    const int start = static_cast<int>(ds.size());
    for (int i = 0; i < len; ++i) ds.push_back(start);
  }
  const int n = static_cast<int>(ds.size()), nh = c.nh, nkv = c.nkv;
  const float scale = scale_sign / std::sqrt(static_cast<float>(HD));
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  auto make = [&](size_t count, float m, std::vector<T>& dev, std::vector<float>& host) {
    dev.resize(count);
    host.resize(count);
    for (size_t i = 0; i < count; ++i) {
      dev[i] = MmaTraits<T>::from_float(m * u(rng));
      host[i] = MmaTraits<T>::to_float(dev[i]);
    }
  };
  const size_t nq = static_cast<size_t>(n) * nh * HD, nk = static_cast<size_t>(n) * nkv * HD;
  std::vector<T> q, k, v, d_o;
  std::vector<float> qf, kf, vf, dof;
  make(nq, mag, q, qf);
  make(nk, mag, k, kf);
  make(nk, 1.0f, v, vf);
  make(nq, 1.0f, d_o, dof);
  const Ref ref = reference(qf, kf, vf, dof, ds, n, nh, nkv, HD, scale);

  const T nan_t = MmaTraits<T>::from_float(NAN);
  std::vector<T> o(nq, nan_t), dq(nq, nan_t), dk(nk, nan_t), dv(nk, nan_t);
  std::vector<float> lse(static_cast<size_t>(n) * nh, NAN);

  // Forward, launched as flash_attention_fwd.cu does.
  {
    using Cfg = FwdConfig<HD>;
    const FwdParams<T> p{q.data(), k.data(), v.data(), ds.data(), o.data(),           lse.data(),
                         n,        nh,       nkv,      nh / nkv,  scale * kFlashLog2e};
    const dim3 grid((n + Cfg::kBM - 1) / Cfg::kBM * nh);
    const std::function<void()> body = [&] { flash_forward_kernel<T, HD>(p); };
    prepare_smem(Cfg::kSmemBytes);
    emu::launch(grid, dim3(Cfg::kWarps * 32), body);
  }
  // Backward, as flash_attention_bwd.cu does (smaller grids for the grid-stride kernels).
  {
    using Cfg = BwdConfig<HD>;
    std::vector<float> acc(nq, 0.0f), delta(static_cast<size_t>(n) * nh, NAN);
    const int64_t rows = static_cast<int64_t>(n) * nh;
    const std::function<void()> dk_body = [&] {
      flash_delta_kernel<T>(o.data(), d_o.data(), delta.data(), rows, HD);
    };
    prepare_smem(0);
    emu::launch(dim3(3), dim3(64), dk_body);
    const int nkb = (n + Cfg::kBN - 1) / Cfg::kBN;
    std::vector<int> order(static_cast<size_t>(nkb), -1);
    const std::function<void()> sched_body = [&] {
      flash_schedule_kernel<Cfg::kBN, Cfg::kBM>(ds.data(), n, order.data());
    };
    prepare_smem(kFlashScheduleBins * sizeof(int));
    emu::launch(dim3(1), dim3(96), sched_body);
    std::vector<int> sorted = order;
    std::sort(sorted.begin(), sorted.end());
    for (int b = 0; b < nkb; ++b) {
      if (sorted[static_cast<size_t>(b)] != b) {
        std::printf("FAIL schedule: order is not a permutation of the key blocks\n");
        return false;
      }
    }
    for (int b = 1; b < nkb; ++b) {
      const auto bin = [&](int i) {
        return flash_schedule_bin<Cfg::kBN, Cfg::kBM>(ds.data(), n, order[static_cast<size_t>(i)]);
      };
      if (bin(b) > bin(b - 1)) {
        std::printf("FAIL schedule: key block %d (bin %d) after a lighter one (bin %d)\n",
                    order[static_cast<size_t>(b)], bin(b), bin(b - 1));
        return false;
      }
    }
    BwdParams<T> p;
    p.q = q.data();
    p.k = k.data();
    p.v = v.data();
    p.d_o = d_o.data();
    p.lse = lse.data();
    p.delta = delta.data();
    p.doc_start = ds.data();
    p.order = order.data();
    p.dq_acc = acc.data();
    p.dk = dk.data();
    p.dv = dv.data();
    p.n = n;
    p.nh = nh;
    p.nkv = nkv;
    p.group = nh / nkv;
    p.scale = scale;
    p.scale_log2 = scale * kFlashLog2e;
    const std::function<void()> body = [&] { flash_backward_kernel<T, HD>(p); };
    prepare_smem(Cfg::kSmemBytes);
    emu::launch(dim3(nkb * nkv), dim3(Cfg::kWarps * 32), body);
    const std::function<void()> cv_body = [&] {
      flash_convert_kernel<T>(acc.data(), dq.data(), static_cast<int64_t>(nq), scale);
    };
    prepare_smem(0);
    emu::launch(dim3(2), dim3(128), cv_body);
  }

  std::vector<float> lse_err(lse.size());
  double lse_max = 0;
  for (size_t i = 0; i < lse.size(); ++i)
    lse_max = std::max(lse_max, std::isfinite(lse[i]) ? std::fabs(lse[i] - ref.lse[i]) : INFINITY);
  const double eo = rel_err(floats(o), ref.o), edq = rel_err(floats(dq), ref.dq),
               edk = rel_err(floats(dk), ref.dk), edv = rel_err(floats(dv), ref.dv);
  const bool bf16 = std::is_same_v<T, __nv_bfloat16>;
  const double tol = bf16 ? 2e-2 : 4e-3;
  const bool ok = eo < tol && edq < tol && edk < tol && edv < tol && lse_max < 1e-3;
  std::string docs;
  for (int d : c.docs) docs += std::to_string(d) + ",";
  std::printf(
      "%s %-4s hd %3d nh %2d nkv %2d n %4d docs [%s] mag %.0f scale %+.2f: o %.2e lse %.1e dq %.2e "
      "dk %.2e dv "
      "%.2e\n",
      ok ? "ok  " : "FAIL", bf16 ? "bf16" : "f16", HD, nh, nkv, n, docs.c_str(), mag, scale, eo,
      lse_max, edq, edk, edv);
  std::fflush(stdout);
  return ok;
}

template <typename T>
bool run_any(const Case& c, uint64_t seed, float mag = 1.0f, float scale_sign = 1.0f) {
  switch (c.hd) {
    case 16:
      return run<T, 16>(c, seed, mag, scale_sign);
    case 32:
      return run<T, 32>(c, seed, mag, scale_sign);
    case 64:
      return run<T, 64>(c, seed, mag, scale_sign);
    case 96:
      return run<T, 96>(c, seed, mag, scale_sign);
    case 128:
      return run<T, 128>(c, seed, mag, scale_sign);
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "quick";
  std::vector<Case> cases = {
      {{1}, 2, 2, 16},
      {{17}, 4, 2, 16},
      {{9, 8}, 2, 2, 32},
      {{1, 1, 1, 50, 3, 20, 59, 1}, 4, 2, 64},  // boundaries mid-block, length-1 docs
      {{70, 1, 129}, 2, 1, 64},                 // several key and query blocks
      {{33, 40}, 4, 2, 96},
      {{150}, 2, 2, 128},
      {{5, 60, 1, 1, 64, 7}, 4, 1, 128},
      {{200, 1, 99}, 2, 1, 128},  // three 128-key blocks, a document ending mid-block
  };
  if (quick) cases.resize(3);
  bool ok = true;
  uint64_t seed = 1;
  for (const Case& c : cases) {
    ok &= run_any<__nv_bfloat16>(c, ++seed);
    ok &= run_any<__half>(c, ++seed);
  }
  if (!quick) {
    ok &= run_any<__nv_bfloat16>({{100, 1, 99}, 2, 1, 64}, ++seed, 3.0f);
    ok &= run_any<__half>({{30, 40}, 2, 1, 32}, ++seed, 1.0f, -1.0f);  // negative scale
  }
  std::printf(ok ? "all ok\n" : "FAILURES\n");
  return ok ? 0 : 1;
}
