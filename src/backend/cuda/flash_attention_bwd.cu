// Host launchers of the flash-attention backward (kernels: device/flash_backward.cuh) and
// their explicit instantiations for bf16 and fp16. API: flash_attention.h.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#include "backend/cuda/device/flash_backward.cuh"
#include "backend/cuda/flash_attention.h"
#include "backend/cuda/flash_attention_common.h"
#include "core/error.h"

namespace ftune::cuda {

namespace {

template <typename T, int HD>
void launch_backward(const device::BwdParams<T>& p, int* order, cudaStream_t stream) {
  using Cfg = device::BwdConfig<HD>;
  auto kernel = device::flash_backward_kernel<T, HD>;
  FTUNE_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                   Cfg::kSmemBytes) == cudaSuccess,
              "flash_attention_backward: cannot set {} bytes of shared memory", Cfg::kSmemBytes);
  // Key blocks heaviest first (into order = p.order), then one CTA per (key block, kv head).
  const int nkb = (p.n + Cfg::kBN - 1) / Cfg::kBN;
  device::flash_schedule_kernel<Cfg::kBN, Cfg::kBM>
      <<<1, 1024, device::kFlashScheduleBins * sizeof(int), stream>>>(p.doc_start, p.n, order);
  flash::check_launch_error("flash_attention_backward");
  const int64_t blocks = static_cast<int64_t>(nkb) * p.nkv;
  FTUNE_CHECK(blocks <= INT32_MAX, "flash_attention_backward: {} CTAs exceed the grid limit",
              blocks);
  kernel<<<static_cast<unsigned>(blocks), Cfg::kWarps * 32, Cfg::kSmemBytes, stream>>>(p);
}

}  // namespace

template <typename T>
void flash_attention_backward(const T* q, const T* k, const T* v, const T* o, const float* lse,
                              const T* d_o, const int32_t* doc_start, int64_t n, int nh, int nkv,
                              int hd, float scale, T* dq, T* dk, T* dv, void* workspace,
                              cudaStream_t stream) {
  constexpr const char* op = "flash_attention_backward";
  flash::check_arguments(op, n, nh, nkv, hd);
  if (n == 0) return;
  FTUNE_CHECK(workspace != nullptr, "{}: no workspace", op);
  const std::pair<const char*, const void*> pointers[] = {
      {"q", q},   {"k", k},     {"v", v},
      {"o", o},   {"d_o", d_o}, {"dq", dq},
      {"dk", dk}, {"dv", dv},   {"workspace", workspace}};
  for (const auto& [name, ptr] : pointers) flash::check_aligned(op, name, ptr);
  const int64_t rows = n * nh;
  const size_t acc_bytes = (static_cast<size_t>(rows) * hd * sizeof(float) + 255) / 256 * 256;
  float* dq_acc = static_cast<float*>(workspace);
  const size_t delta_bytes = (static_cast<size_t>(rows) * sizeof(float) + 255) / 256 * 256;
  float* delta = reinterpret_cast<float*>(static_cast<char*>(workspace) + acc_bytes);
  int* order = reinterpret_cast<int*>(static_cast<char*>(workspace) + acc_bytes + delta_bytes);

  FTUNE_CHECK(cudaMemsetAsync(dq_acc, 0, static_cast<size_t>(rows) * hd * sizeof(float), stream) ==
                  cudaSuccess,
              "{}: clearing the dq accumulator failed", op);
  constexpr int kBlock = 256;
  const auto delta_blocks =
      static_cast<unsigned>(std::min<int64_t>((rows + kBlock / 32 - 1) / (kBlock / 32), 65536));
  device::flash_delta_kernel<T><<<delta_blocks, kBlock, 0, stream>>>(o, d_o, delta, rows, hd);
  flash::check_launch_error(op);

  device::BwdParams<T> p;
  p.q = q;
  p.k = k;
  p.v = v;
  p.d_o = d_o;
  p.lse = lse;
  p.delta = delta;
  p.doc_start = doc_start;
  p.order = order;
  p.dq_acc = dq_acc;
  p.dk = dk;
  p.dv = dv;
  p.n = static_cast<int>(n);
  p.nh = nh;
  p.nkv = nkv;
  p.group = nh / nkv;
  p.scale = scale;
  p.scale_log2 = scale * device::kFlashLog2e;
  flash::with_head_dim(hd,
                       [&](auto head_dim) { launch_backward<T, head_dim()>(p, order, stream); });
  flash::check_launch_error(op);

  const int64_t count = rows * hd;
  const auto conv_blocks =
      static_cast<unsigned>(std::min<int64_t>((count + kBlock - 1) / kBlock, 65536));
  device::flash_convert_kernel<T><<<conv_blocks, kBlock, 0, stream>>>(dq_acc, dq, count, scale);
  flash::check_launch_error(op);
}

template void flash_attention_backward<__nv_bfloat16>(const __nv_bfloat16*, const __nv_bfloat16*,
                                                      const __nv_bfloat16*, const __nv_bfloat16*,
                                                      const float*, const __nv_bfloat16*,
                                                      const int32_t*, int64_t, int, int, int, float,
                                                      __nv_bfloat16*, __nv_bfloat16*,
                                                      __nv_bfloat16*, void*, cudaStream_t);
template void flash_attention_backward<__half>(const __half*, const __half*, const __half*,
                                               const __half*, const float*, const __half*,
                                               const int32_t*, int64_t, int, int, int, float,
                                               __half*, __half*, __half*, void*, cudaStream_t);

}  // namespace ftune::cuda
