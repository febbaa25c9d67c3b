// What the GPU side of the build offers: device discovery for `ftune doctor` and the planner.
// Implemented by src/backend/cuda (FTUNE_CUDA=ON) or src/backend/no_gpu (CPU-only builds).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace ftune {

struct GpuDevice {
  int index = 0;
  std::string name;
  int64_t total_bytes = 0;
  int64_t free_bytes = 0;
  int cc_major = 0, cc_minor = 0;
  int multiprocessors = 0;
};

struct GpuRuntimeInfo {
  bool built_with_cuda = false;
  int runtime_version = 0;  // e.g. 13000
  int driver_version = 0;   // 0 when no driver
  std::string error;        // why no device is usable, if none is
  std::vector<GpuDevice> devices;
};

GpuRuntimeInfo query_gpus();

// Whether this build's bf16/fp16 attention runs through cuDNN (backend/cuda/cudnn): the memory
// model counts cuDNN's workspace then. False in CPU-only builds and with FTUNE_ATTENTION=flash.
bool gpu_attention_uses_cudnn();
// What bf16/fp16 attention runs on (`ftune doctor`), and how many attention calls cuDNN has run
// in this process (`ftune bench` reports which path a run took).
std::string gpu_attention_describe();
int64_t gpu_cudnn_attention_calls();

}  // namespace ftune
