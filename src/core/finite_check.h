// NaN / Inf found where values enter ftune (base weights, adapters, optimizer state), not steps
// later as a NaN loss blamed on the learning rate.
#pragma once
#include <cstdint>
#include <string>

#include "core/tensor.h"

namespace ftune {

// Index of the first NaN or Inf element of a CPU tensor of dtype F32, BF16 or F16 (other dtypes
// hold no floats: -1), or -1 when all are finite. Works on the raw bits: no conversion.
int64_t first_non_finite(const Tensor& t);

// Throws ftune::Error "<what>: element <i> is NaN|Inf (non-finite values are refused)".
void check_finite(const Tensor& t, const std::string& what);

}  // namespace ftune
