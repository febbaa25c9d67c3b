// NF4 quantization and dequantization on the host, bit for bit as bitsandbytes (see nf4.h; the
// reference is bitsandbytes csrc/kernels.cu kQuantizeBlockwise, dQuantizeNF4 and dQuantize, and
// functional.py quantize_4bit / dequantize_4bit). Every product and sum is one fp32 operation
// in bnb's order (this file is compiled with -ffp-contract=off: no fused multiply-adds).
#include "core/nf4.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "core/error.h"
#include "core/nf4_dynamic_map.h"

namespace ftune {
namespace nf4 {

const std::array<float, 16> kCode = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

namespace {
// The decision thresholds between neighbouring codes: the midpoints of the code values, computed
// in double, written as their shortest decimal representation and read as float literals (bnb's
// CUDA decision tree dQuantizeNF4 holds exactly these literals). Four of them (0, 8, 12, 14)
// are one ulp away from the fp32 midpoint that bnb's CPU path (torch.bucketize) uses, since the
// double midpoint sits on a tie between two floats; values exactly there quantize differently
// on bnb's CPU and CUDA paths. ftune follows CUDA, which made the checkpoints people use.
constexpr std::array<float, 15> kThresholds = {
    -0.8480964004993439f,  -0.6106329262256622f,  -0.4599952697753906f, -0.33967943489551544f,
    -0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
    0.1202552504837513f,   0.2035212516784668f,   0.2920137718319893f,  0.3893125355243683f,
    0.5016634166240692f,   0.6427869200706482f,   0.8614784181118011f};
}  // namespace

const std::array<float, 256>& dynamic_map() { return kDynamicMap; }

uint8_t quantize_scaled(float x) {
  // The code is the number of thresholds strictly below x (x on a threshold: the lower code);
  // NaN compares false everywhere and gets 0, as in bnb's tree.
  uint8_t c = 0;
  for (const float t : kThresholds) c += static_cast<uint8_t>(x > t);
  return c;
}

uint8_t quantize_dynamic(const std::array<float, 256>& code, float x) {
  // bnb dQuantize<0>: a 7-step binary search from the middle, then the nearer of the last value
  // visited and the bracketing one, comparing against their fp32 midpoint.
  int pivot = 127, upper_pivot = 255, lower_pivot = 0;
  float lower = -1.0f, upper = 1.0f;
  float val = code[static_cast<size_t>(pivot)];
  for (int step = 64; step > 0; step >>= 1) {
    if (x > val) {
      lower_pivot = pivot;
      lower = val;
      pivot += step;
    } else {
      upper_pivot = pivot;
      upper = val;
      pivot -= step;
    }
    val = code[static_cast<size_t>(pivot)];
  }
  if (upper_pivot == 255) upper = code[255];
  if (lower_pivot == 0) lower = code[0];
  if (x > val) {
    const float mid = (upper + val) * 0.5f;
    return static_cast<uint8_t>(x > mid ? upper_pivot : pivot);
  }
  const float mid = (lower + val) * 0.5f;
  return static_cast<uint8_t>(x < mid ? lower_pivot : pivot);
}

bool valid_blocksize(int64_t b) {
  for (int64_t v = 32; v <= 4096; v *= 2)
    if (b == v) return true;
  return false;
}

}  // namespace nf4

namespace {

Tensor cpu_u8(int64_t n) { return Tensor::empty({n}, DType::U8); }

// Element i of a CPU F32/BF16/F16 tensor as float.
struct FloatReader {
  const void* p;
  DType dt;
  float operator()(int64_t i) const {
    switch (dt) {
      case DType::F32: return static_cast<const float*>(p)[i];
      case DType::BF16: return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
      default: return f16_to_f32(static_cast<const uint16_t*>(p)[i]);
    }
  }
};

// The reciprocal every block is scaled by (bnb: 1.0f / local_abs_max; 1/0 = inf, so a block of
// zeros scales to NaN and gets code 0 in the CUDA kernel).
float reciprocal(float amax) { return 1.0f / amax; }

}  // namespace

int64_t Nf4Weight::nbytes() const {
  int64_t b = 0;
  for (const Tensor* t : {&packed, &code, &absmax, &nested_absmax, &nested_code})
    if (t->defined()) b += static_cast<int64_t>(t->nbytes());
  return b;
}

Nf4Weight Nf4Weight::to(Device dev) const {
  Nf4Weight o = *this;
  for (Tensor* t : {&o.packed, &o.code, &o.absmax, &o.nested_absmax, &o.nested_code})
    if (t->defined()) *t = t->to(dev);
  return o;
}

void Nf4Weight::validate(const std::string& what) const {
  FTUNE_CHECK(packed.defined() && code.defined() && absmax.defined(),
              "{}: NF4 weight without packed codes, quant_map or absmax", what);
  FTUNE_CHECK(nf4::valid_blocksize(blocksize),
              "{}: NF4 blocksize {} is not one bitsandbytes makes (32 ... 4096, powers of two)",
              what, blocksize);
  const int64_t n = numel();
  FTUNE_CHECK(packed.dtype() == DType::U8 && packed.numel() == (n + 1) / 2,
              "{}: packed NF4 codes are {} {}, expected U8 with {} bytes for shape {}", what,
              dtype_name(packed.dtype()), shape_str(packed.shape()), (n + 1) / 2, shape_str(shape));
  FTUNE_CHECK(code.dtype() == DType::F32 && code.numel() == 16,
              "{}: quant_map is {} {}, expected F32 [16]", what, dtype_name(code.dtype()),
              shape_str(code.shape()));
  if (nested()) {
    FTUNE_CHECK(absmax.dtype() == DType::U8 && absmax.numel() == nblocks(),
                "{}: absmax is {} {}, expected U8 [{}] (double quantization)", what,
                dtype_name(absmax.dtype()), shape_str(absmax.shape()), nblocks());
    FTUNE_CHECK(nested_blocksize > 0, "{}: nested_blocksize {} must be positive", what,
                nested_blocksize);
    const int64_t nb2 = (nblocks() + nested_blocksize - 1) / nested_blocksize;
    FTUNE_CHECK(nested_absmax.dtype() == DType::F32 && nested_absmax.numel() == nb2,
                "{}: nested_absmax is {} {}, expected F32 [{}]", what,
                dtype_name(nested_absmax.dtype()), shape_str(nested_absmax.shape()), nb2);
    FTUNE_CHECK(nested_code.defined() && nested_code.dtype() == DType::F32 &&
                    nested_code.numel() == 256,
                "{}: nested_quant_map missing or not F32 [256]", what);
    FTUNE_CHECK(std::isfinite(nested_offset), "{}: nested_offset is not finite", what);
  } else {
    FTUNE_CHECK(absmax.dtype() == DType::F32 && absmax.numel() == nblocks(),
                "{}: absmax is {} {}, expected F32 [{}]", what, dtype_name(absmax.dtype()),
                shape_str(absmax.shape()), nblocks());
  }
}

Nf4Weight quantize_nf4(const Tensor& t, bool double_quant) {
  FTUNE_CHECK(t.device().is_cpu() && t.is_contiguous(),
              "quantize_nf4: needs a contiguous CPU tensor");
  FTUNE_CHECK(t.dtype() == DType::F32 || t.dtype() == DType::BF16 || t.dtype() == DType::F16,
              "quantize_nf4: dtype {} is not F32, BF16 or F16", dtype_name(t.dtype()));
  Nf4Weight w;
  w.shape = t.shape();
  w.blocksize = nf4::kBlockSize;
  const int64_t n = t.numel(), bs = w.blocksize, nb = w.nblocks();
  const FloatReader x{t.raw(), t.dtype()};
  w.packed = cpu_u8((n + 1) / 2);
  uint8_t* out = w.packed.data<uint8_t>();
  std::fill(out, out + w.packed.numel(), uint8_t{0});
  Tensor amax = Tensor::empty({nb});
  float* am = amax.f32();
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t lo = b * bs, hi = std::min(n, lo + bs);
    float m = 0.0f;
    for (int64_t i = lo; i < hi; ++i) m = std::max(m, std::fabs(x(i)));
    am[b] = m;
    const float r = reciprocal(m);
    for (int64_t i = lo; i < hi; ++i) {
      const uint8_t c = nf4::quantize_scaled(x(i) * r);
      out[i / 2] |= static_cast<uint8_t>((i % 2 == 0) ? c << 4 : c);
    }
    // An odd count leaves the last low nibble: bnb's kernel loads a 0 there and quantizes it.
    if (hi == n && n % 2 == 1) out[n / 2] |= nf4::quantize_scaled(0.0f * r);
  }
  w.code = Tensor::from_vector(std::vector<float>(nf4::kCode.begin(), nf4::kCode.end()), {16});
  w.absmax = amax;
  if (!double_quant) return w;
  // bnb: offset = absmax.mean() (torch's reduction; here the exact mean rounded once, which can
  // differ from torch's by an ulp on long tensors).
  double sum = 0.0;
  for (int64_t b = 0; b < nb; ++b) sum += am[b];
  double_quantize_absmax(w, static_cast<float>(sum / static_cast<double>(nb)));
  return w;
}

void double_quantize_absmax(Nf4Weight& w, float offset) {
  FTUNE_CHECK(!w.nested() && w.absmax.defined() && w.absmax.dtype() == DType::F32 &&
                  w.absmax.device().is_cpu(),
              "double_quantize_absmax: needs F32 block scales on the CPU");
  // bnb quantize_4bit(compress_statistics=True): quantize_blockwise(absmax - offset,
  // blocksize=256) with the signed dynamic map; each block scaled by 1/max|.| like the 4-bit one.
  const float* am = w.absmax.f32();
  const int64_t nb = w.absmax.numel();
  const auto& dyn = nf4::dynamic_map();
  const int64_t bs2 = nf4::kNestedBlockSize, nb2 = (nb + bs2 - 1) / bs2;
  std::vector<float> centred(static_cast<size_t>(nb));
  for (int64_t b = 0; b < nb; ++b) centred[static_cast<size_t>(b)] = am[b] - offset;
  Tensor q_t = cpu_u8(nb);
  Tensor nabs_t = Tensor::empty({nb2});
  uint8_t* q = q_t.data<uint8_t>();
  float* nabs = nabs_t.f32();
  for (int64_t b2 = 0; b2 < nb2; ++b2) {
    const int64_t lo = b2 * bs2, hi = std::min(nb, lo + bs2);
    float m = 0.0f;
    for (int64_t i = lo; i < hi; ++i) m = std::max(m, std::fabs(centred[static_cast<size_t>(i)]));
    nabs[b2] = m;
    const float r = reciprocal(m);
    for (int64_t i = lo; i < hi; ++i)
      q[i] = nf4::quantize_dynamic(dyn, centred[static_cast<size_t>(i)] * r);
  }
  w.absmax = q_t;
  w.nested_absmax = nabs_t;
  w.nested_offset = offset;
  w.nested_blocksize = bs2;
  w.nested_code = Tensor::from_vector(std::vector<float>(dyn.begin(), dyn.end()), {256});
}

Tensor nf4_block_absmax(const Nf4Weight& w) {
  FTUNE_CHECK(w.device().is_cpu(), "nf4_block_absmax: CPU weights only");
  if (!w.nested()) return w.absmax;
  const int64_t nb = w.nblocks();
  Tensor out = Tensor::empty({nb});
  float* o = out.f32();
  const uint8_t* q = w.absmax.data<uint8_t>();
  const float* code = w.nested_code.f32();
  const float* nabs = w.nested_absmax.f32();
  for (int64_t b = 0; b < nb; ++b) {
    // bnb: dequantize_blockwise (code * absmax), then absmax += offset: two roundings.
    const float scaled = code[q[b]] * nabs[b / w.nested_blocksize];
    o[b] = scaled + w.nested_offset;
  }
  return out;
}

void dequantize_nf4_cpu(const Nf4Weight& w, Tensor& out) {
  w.validate("dequantize_nf4");
  FTUNE_CHECK(w.device().is_cpu() && out.device().is_cpu() && out.is_contiguous(),
              "dequantize_nf4_cpu: CPU tensors only");
  FTUNE_CHECK(out.numel() == w.numel(), "dequantize_nf4: output has {} elements, weight {} has {}",
              out.numel(), shape_str(w.shape), w.numel());
  const Tensor amax_t = nf4_block_absmax(w);
  const float* amax = amax_t.f32();
  const float* code = w.code.f32();
  const uint8_t* p = w.packed.data<uint8_t>();
  const int64_t n = w.numel(), bs = w.blocksize;
  auto value = [&](int64_t i) {
    const uint8_t byte = p[i / 2];
    const uint8_t c = (i % 2 == 0) ? static_cast<uint8_t>(byte >> 4) : static_cast<uint8_t>(byte & 0x0f);
    return code[c] * amax[i / bs];
  };
  switch (out.dtype()) {
    case DType::F32: {
      float* o = out.f32();
      for (int64_t i = 0; i < n; ++i) o[i] = value(i);
      break;
    }
    case DType::BF16: {
      auto* o = out.data<uint16_t>();
      for (int64_t i = 0; i < n; ++i) o[i] = f32_to_bf16(value(i));
      break;
    }
    case DType::F16: {
      auto* o = out.data<uint16_t>();
      for (int64_t i = 0; i < n; ++i) o[i] = f32_to_f16(value(i));
      break;
    }
    default:
      FTUNE_CHECK(false, "dequantize_nf4: output dtype {} is not F32, BF16 or F16",
                  dtype_name(out.dtype()));
  }
}

}  // namespace ftune
