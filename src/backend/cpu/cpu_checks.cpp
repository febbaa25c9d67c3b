// Argument checks shared by the CPU kernels: dtype, device, rank and shape, and the
// packed-document layout (doc_start) that attention relies on. Messages name the op and the
// argument so a caller can tell which tensor was wrong.
#include "backend/cpu/cpu_kernels.h"

namespace ftune::cpu {

void require_tensor(const char* op, const char* name, const Tensor& t, DType dt) {
  FTUNE_CHECK(t.defined(), "{}: {} is undefined", op, name);
  FTUNE_CHECK(t.device().is_cpu(), "{}: {} is on {}, the CPU backend needs host tensors", op,
              name, t.device().str());
  FTUNE_CHECK(t.dtype() == dt, "{}: {} has dtype {}, expected {}", op, name,
              dtype_name(t.dtype()), dtype_name(dt));
}

void require_shape(const char* op, const char* name, const Tensor& t, DType dt,
                   const Shape& want) {
  require_tensor(op, name, t, dt);
  FTUNE_CHECK(t.shape() == want, "{}: {} is {}, expected {}", op, name, shape_str(t.shape()),
              shape_str(want));
}

void require_rank(const char* op, const char* name, const Tensor& t, DType dt, int rank) {
  require_tensor(op, name, t, dt);
  FTUNE_CHECK(t.ndim() == rank, "{}: {} is {}, expected a {}-D tensor", op, name,
              shape_str(t.shape()), rank);
}

void require_doc_start(const char* op, const Tensor& doc_start, int64_t n) {
  require_shape(op, "doc_start", doc_start, DType::I32, {n});
  const int32_t* ds = doc_start.i32();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t s = ds[i];
    const bool starts_here = s == i;
    const bool continues = i > 0 && s == ds[i - 1] && s < i && s >= 0;
    FTUNE_CHECK(starts_here || continues,
                "{}: doc_start[{}] = {} is not a valid document start (must be {} or "
                "doc_start[{}], documents are contiguous)",
                op, i, s, i, i - 1);
  }
}

}  // namespace ftune::cpu
