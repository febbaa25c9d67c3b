// Non-finite detection on the raw bits of float tensors (see finite_check.h): an exponent of
// all ones is Inf (mantissa 0) or NaN (mantissa not 0), in IEEE f32, bf16 and f16 alike.
#include "core/finite_check.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"

namespace ftune {

namespace {

template <typename Bits>
int64_t scan(const Tensor& t, Bits exp_mask) {
  // Through memcpy: a safetensors tensor may sit at any byte offset of the mapping.
  const auto* bytes = static_cast<const char*>(t.raw());
  auto at = [&](int64_t i) {
    Bits v;
    std::memcpy(&v, bytes + i * static_cast<int64_t>(sizeof(Bits)), sizeof(Bits));
    return v;
  };
  const int64_t n = t.numel();
  // Branch-free blocks, so a clean tensor (the usual case) costs one pass at memory speed.
  constexpr int64_t kBlock = 4096;
  for (int64_t b = 0; b < n; b += kBlock) {
    const int64_t e = std::min(n, b + kBlock);
    bool bad = false;
    for (int64_t i = b; i < e; ++i) bad |= (at(i) & exp_mask) == exp_mask;
    if (!bad) continue;
    for (int64_t i = b; i < e; ++i)
      if ((at(i) & exp_mask) == exp_mask) return i;
  }
  return -1;
}

}  // namespace

int64_t first_non_finite(const Tensor& t) {
  if (!t.defined() || t.numel() == 0) return -1;
  FTUNE_CHECK(t.device().is_cpu(), "first_non_finite: the tensor must be on the CPU");
  switch (t.dtype()) {
    case DType::F32: return scan<uint32_t>(t, 0x7F800000u);
    case DType::BF16: return scan<uint16_t>(t, static_cast<uint16_t>(0x7F80));
    case DType::F16: return scan<uint16_t>(t, static_cast<uint16_t>(0x7C00));
    default: return -1;
  }
}

void check_finite(const Tensor& t, const std::string& what) {
  const int64_t i = first_non_finite(t);
  if (i < 0) return;
  bool nan = false;
  if (t.dtype() == DType::F32) {
    uint32_t b;
    std::memcpy(&b, static_cast<const char*>(t.raw()) + 4 * i, 4);
    nan = (b & 0x007FFFFFu) != 0;
  } else {
    uint16_t b;
    std::memcpy(&b, static_cast<const char*>(t.raw()) + 2 * i, 2);
    nan = (b & (t.dtype() == DType::BF16 ? 0x007F : 0x03FF)) != 0;
  }
  fail("{}: element {} is {} (non-finite values are refused)", what, i, nan ? "NaN" : "Inf");
}

}  // namespace ftune
