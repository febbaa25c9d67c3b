// Host launchers of the flash-attention forward (kernel: device/flash_forward.cuh) and their
// explicit instantiations for bf16 and fp16. API: flash_attention.h.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "backend/cuda/device/flash_forward.cuh"
#include "backend/cuda/flash_attention.h"
#include "backend/cuda/flash_attention_common.h"
#include "core/error.h"

namespace ftune::cuda {

namespace {

template <typename T, int HD>
void launch_forward(const device::FwdParams<T>& p, cudaStream_t stream) {
  using Cfg = device::FwdConfig<HD>;
  auto kernel = device::flash_forward_kernel<T, HD>;
  FTUNE_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   Cfg::kSmemBytes) == cudaSuccess,
              "flash_attention_forward: cannot set {} bytes of shared memory", Cfg::kSmemBytes);
  const int64_t blocks = (static_cast<int64_t>(p.n) + Cfg::kBM - 1) / Cfg::kBM * p.nh;
  FTUNE_CHECK(blocks <= INT32_MAX, "flash_attention_forward: {} CTAs exceed the grid limit",
              blocks);
  kernel<<<static_cast<unsigned>(blocks), Cfg::kWarps * 32, Cfg::kSmemBytes, stream>>>(p);
}

}  // namespace

template <typename T>
void flash_attention_forward(const T* q, const T* k, const T* v, const int32_t* doc_start,
                             int64_t n, int nh, int nkv, int hd, float scale, T* o, float* lse,
                             cudaStream_t stream) {
  constexpr const char* op = "flash_attention_forward";
  flash::check_arguments(op, n, nh, nkv, hd);
  if (n == 0) return;
  flash::check_aligned(op, "q", q);
  flash::check_aligned(op, "k", k);
  flash::check_aligned(op, "v", v);
  flash::check_aligned(op, "o", o);
  device::FwdParams<T> p;
  p.q = q;
  p.k = k;
  p.v = v;
  p.doc_start = doc_start;
  p.o = o;
  p.lse = lse;
  p.n = static_cast<int>(n);
  p.nh = nh;
  p.nkv = nkv;
  p.group = nh / nkv;
  p.scale_log2 = scale * device::kFlashLog2e;
  flash::with_head_dim(hd, [&](auto head_dim) { launch_forward<T, head_dim()>(p, stream); });
  flash::check_launch_error(op);
}

template void flash_attention_forward<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*,
                                                     const __nv_bfloat16*, const int32_t*, int64_t,
                                                     int, int, int, float, __nv_bfloat16*, float*,
                                                     cudaStream_t);
template void flash_attention_forward<__half>(const __half*, const __half*, const __half*,
                                              const int32_t*, int64_t, int, int, int, float,
                                              __half*, float*, cudaStream_t);

}  // namespace ftune::cuda
