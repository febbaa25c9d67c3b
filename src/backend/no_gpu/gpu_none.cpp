// CPU-only build: no GPU backend compiled in.
#include "backend/gpu.h"

namespace ftune {

bool gpu_attention_uses_cudnn() { return false; }
std::string gpu_attention_describe() { return "none (CPU-only build)"; }
int64_t gpu_cudnn_attention_calls() { return 0; }

GpuRuntimeInfo query_gpus() {
  GpuRuntimeInfo info;
  info.built_with_cuda = false;
  info.error = "built without CUDA (FTUNE_CUDA=OFF)";
  return info;
}

}  // namespace ftune
