// Argument checks shared by the CUDA launchers (dtype, device, rank, shape; index tensors and
// the packed-document layout, validated on a host copy), and the launch-error check. Messages
// name the op and the argument, like the CPU backend's (src/backend/cpu/cpu_checks.cpp).
#include <algorithm>
#include <cstdlib>

#include "backend/cuda/check.h"
#include "backend/cuda/cuda_kernels.h"

namespace ftune::cuda {

void require_tensor(const CudaContext& ctx, const char* op, const char* name, const Tensor& t,
                    DType dt) {
  FTUNE_CHECK(t.defined(), "{}: {} is undefined", op, name);
  FTUNE_CHECK(t.device() == Device::cuda(ctx.device),
              "{}: {} is on {}, the CUDA backend of cuda:{} needs tensors on that device", op, name,
              t.device().str(), ctx.device);
  FTUNE_CHECK(t.dtype() == dt, "{}: {} has dtype {}, expected {}", op, name, dtype_name(t.dtype()),
              dtype_name(dt));
}

void require_shape(const CudaContext& ctx, const char* op, const char* name, const Tensor& t,
                   DType dt, const Shape& want) {
  require_tensor(ctx, op, name, t, dt);
  FTUNE_CHECK(t.shape() == want, "{}: {} is {}, expected {}", op, name, shape_str(t.shape()),
              shape_str(want));
}

void require_rank(const CudaContext& ctx, const char* op, const char* name, const Tensor& t,
                  DType dt, int rank) {
  require_tensor(ctx, op, name, t, dt);
  FTUNE_CHECK(t.ndim() == rank, "{}: {} is {}, expected a {}-D tensor", op, name,
              shape_str(t.shape()), rank);
}

std::vector<int32_t> ints_to_host(const CudaContext& ctx, const Tensor& t) {
  std::vector<int32_t> v(static_cast<size_t>(t.numel()));
  if (v.empty()) return v;
  // Pageable destination: the copy is synchronous for the host; waiting on the stream first
  // orders it after the kernels that may have written t.
  FTUNE_CUDA_CHECK(
      cudaMemcpyAsync(v.data(), t.raw(), t.nbytes(), cudaMemcpyDeviceToHost, ctx.stream));
  FTUNE_CUDA_CHECK(cudaStreamSynchronize(ctx.stream));
  return v;
}

std::vector<int32_t> require_indices(const CudaContext& ctx, const char* op, const char* name,
                                     const Tensor& t, int64_t limit, const char* what,
                                     const int32_t* allowed) {
  std::vector<int32_t> v = ints_to_host(ctx, t);
  for (size_t i = 0; i < v.size(); ++i) {
    if (allowed != nullptr && v[i] == *allowed) continue;
    FTUNE_CHECK(v[i] >= 0 && v[i] < limit, "{}: {}[{}] = {} is outside {} [0, {}){}", op, name, i,
                v[i], what, limit,
                allowed != nullptr ? fmt::format(" and is not {}", *allowed) : std::string());
  }
  return v;
}

void require_doc_start(const CudaContext& ctx, const char* op, const Tensor& doc_start, int64_t n) {
  require_shape(ctx, op, "doc_start", doc_start, DType::I32, {n});
  const std::vector<int32_t> ds = ints_to_host(ctx, doc_start);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t s = ds[static_cast<size_t>(i)];
    const bool starts_here = s == i;
    const bool continues = i > 0 && s == ds[static_cast<size_t>(i - 1)] && s < i && s >= 0;
    FTUNE_CHECK(starts_here || continues,
                "{}: doc_start[{}] = {} is not a valid document start (must be {} or "
                "doc_start[{}], documents are contiguous)",
                op, i, s, i, i - 1);
  }
}

namespace {
bool sync_after_launch() {
  static const bool on = [] {
    const char* e = std::getenv("FTUNE_CUDA_SYNC");
    return e != nullptr && e[0] != '\0' && e[0] != '0';
  }();
  return on;
}
}  // namespace

void check_launch(const CudaContext& ctx, const char* op) {
  const cudaError_t e = cudaGetLastError();
  FTUNE_CHECK(e == cudaSuccess, "{}: kernel launch failed: {}", op, cudaGetErrorString(e));
  if (sync_after_launch()) {
    const cudaError_t s = cudaStreamSynchronize(ctx.stream);
    FTUNE_CHECK(s == cudaSuccess, "{}: kernel failed: {}", op, cudaGetErrorString(s));
  }
}

unsigned grid_for(int64_t n, int block) {
  // Enough blocks to fill any current GPU several times over; kernels stride beyond that.
  constexpr int64_t kMaxBlocks = 65536;
  const int64_t blocks = (n + block - 1) / block;
  return static_cast<unsigned>(std::clamp<int64_t>(blocks, 1, kMaxBlocks));
}

}  // namespace ftune::cuda
