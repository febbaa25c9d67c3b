// CPU-only build: no GPU backend compiled in.
#include "backend/gpu.h"

namespace ftune {

bool gpu_attention_uses_cudnn() { return false; }

GpuRuntimeInfo query_gpus() {
  GpuRuntimeInfo info;
  info.built_with_cuda = false;
  info.error = "built without CUDA (FTUNE_CUDA=OFF)";
  return info;
}

}  // namespace ftune
