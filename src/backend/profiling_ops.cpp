#include "backend/profiling_ops.h"

namespace ftune {

const char* op_category_name(OpCategory c) {
  switch (c) {
    case OpCategory::Gemm: return "gemm";
    case OpCategory::Attention: return "attention";
    case OpCategory::Elementwise: return "elementwise";
    case OpCategory::Loss: return "lm_head+loss";
    case OpCategory::Optimizer: return "optimizer";
    default: return "?";
  }
}

}  // namespace ftune
