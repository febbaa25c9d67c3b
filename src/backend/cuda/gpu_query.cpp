// Device discovery through the CUDA runtime; never throws (doctor reports what failed).
#include <cuda_runtime.h>

#include "backend/cuda/cudnn/cudnn_attention.h"
#include "backend/gpu.h"

namespace ftune {

bool gpu_attention_uses_cudnn() { return cuda::cudnn_attention_enabled(); }
std::string gpu_attention_describe() { return cuda::cudnn_attention_describe(); }
int64_t gpu_cudnn_attention_calls() { return cuda::cudnn_attention_calls(); }

GpuRuntimeInfo query_gpus() {
  GpuRuntimeInfo info;
  info.built_with_cuda = true;
  cudaRuntimeGetVersion(&info.runtime_version);
  cudaDriverGetVersion(&info.driver_version);
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess) {
    info.error = cudaGetErrorString(e);
    return info;
  }
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) continue;
    GpuDevice d;
    d.index = i;
    d.name = p.name;
    d.total_bytes = static_cast<int64_t>(p.totalGlobalMem);
    d.cc_major = p.major;
    d.cc_minor = p.minor;
    d.multiprocessors = p.multiProcessorCount;
    size_t fr = 0, tot = 0;
    if (cudaSetDevice(i) == cudaSuccess && cudaMemGetInfo(&fr, &tot) == cudaSuccess)
      d.free_bytes = static_cast<int64_t>(fr);
    info.devices.push_back(d);
  }
  return info;
}

}  // namespace ftune
