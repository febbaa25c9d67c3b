#include "core/tensor.h"

#include <fmt/format.h>

#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>

namespace ftune {

namespace {
struct Accounting {
  std::atomic<int64_t> live{0};
  std::atomic<int64_t> peak{0};
};
std::array<Accounting, 2> g_acct;
std::array<DeviceAllocator*, 2> g_allocators{nullptr, nullptr};

void account(DeviceType t, int64_t delta) {
  auto& a = g_acct[static_cast<size_t>(t)];
  const int64_t now = a.live.fetch_add(delta) + delta;
  int64_t peak = a.peak.load();
  while (now > peak && !a.peak.compare_exchange_weak(peak, now)) {
  }
}

std::shared_ptr<Storage> allocate(size_t bytes, Device dev) {
  const size_t alloc = bytes == 0 ? 1 : bytes;
  if (dev.is_cpu()) {
    const size_t rounded = (alloc + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, rounded);
    FTUNE_CHECK(p != nullptr, "out of host memory allocating {} bytes", bytes);
    account(DeviceType::CPU, static_cast<int64_t>(bytes));
    std::shared_ptr<void> owner(p, [bytes](void* q) {
      std::free(q);
      account(DeviceType::CPU, -static_cast<int64_t>(bytes));
    });
    return std::make_shared<Storage>(p, bytes, dev, std::move(owner));
  }
  DeviceAllocator* a = g_allocators[static_cast<size_t>(dev.type)];
  FTUNE_CHECK(a != nullptr, "no allocator for device {} (built without that backend?)", dev.str());
  void* p = a->allocate(alloc, dev.index);
  account(dev.type, static_cast<int64_t>(bytes));
  std::shared_ptr<void> owner(p, [a, dev, bytes](void* q) {
    a->deallocate(q, dev.index);
    account(dev.type, -static_cast<int64_t>(bytes));
  });
  return std::make_shared<Storage>(p, bytes, dev, std::move(owner));
}
}  // namespace

std::string Device::str() const {
  return type == DeviceType::CPU ? std::string("cpu") : fmt::format("cuda:{}", index);
}

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) {
    FTUNE_CHECK(d >= 0, "negative dimension in shape {}", shape_str(s));
    n *= d;
  }
  return n;
}

std::string shape_str(const Shape& s) { return fmt::format("[{}]", fmt::join(s, ", ")); }

MemoryStats memory_stats(DeviceType t) {
  const auto& a = g_acct[static_cast<size_t>(t)];
  MemoryStats s{a.live.load(), a.peak.load(), 0, 0};
  if (const DeviceAllocator* al = g_allocators[static_cast<size_t>(t)]) {
    s.reserved_bytes = al->reserved_bytes();
    s.peak_reserved_bytes = al->peak_reserved_bytes();
  }
  return s;
}
void reset_peak_memory(DeviceType t) {
  auto& a = g_acct[static_cast<size_t>(t)];
  a.peak.store(a.live.load());
  if (DeviceAllocator* al = g_allocators[static_cast<size_t>(t)]) al->reset_peak_reserved();
}
void release_cached_memory(DeviceType t) {
  if (DeviceAllocator* al = g_allocators[static_cast<size_t>(t)]) al->release_cached();
}
void register_device_allocator(DeviceType t, DeviceAllocator* a) {
  g_allocators[static_cast<size_t>(t)] = a;
}

Tensor Tensor::empty(const Shape& shape, DType dt, Device dev) {
  FTUNE_CHECK(dt != DType::NF4, "Tensor::empty: NF4 tensors are packed; allocate U8 storage");
  Tensor t;
  t.shape_ = shape;
  t.numel_ = shape_numel(shape);
  t.dtype_ = dt;
  t.storage_ = allocate(t.nbytes(), dev);
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dt, Device dev) {
  Tensor t = empty(shape, dt, dev);
  t.zero_();
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& v, const Shape& shape) {
  FTUNE_CHECK(static_cast<int64_t>(v.size()) == shape_numel(shape),
              "Tensor::from_vector: {} values for shape {}", v.size(), shape_str(shape));
  Tensor t = empty(shape, DType::F32);
  std::memcpy(t.raw(), v.data(), v.size() * 4);
  return t;
}

Tensor Tensor::from_ints(const std::vector<int32_t>& v, const Shape& shape) {
  FTUNE_CHECK(static_cast<int64_t>(v.size()) == shape_numel(shape),
              "Tensor::from_ints: {} values for shape {}", v.size(), shape_str(shape));
  Tensor t = empty(shape, DType::I32);
  std::memcpy(t.raw(), v.data(), v.size() * 4);
  return t;
}

Tensor Tensor::borrow(void* data, const Shape& shape, DType dt, std::shared_ptr<void> owner,
                      Device dev) {
  Tensor t;
  t.shape_ = shape;
  t.numel_ = shape_numel(shape);
  t.dtype_ = dt;
  t.storage_ = std::make_shared<Storage>(data, t.nbytes(), dev, std::move(owner));
  return t;
}

int64_t Tensor::dim(int i) const {
  const int n = ndim();
  const int j = i < 0 ? i + n : i;
  FTUNE_CHECK(j >= 0 && j < n, "Tensor::dim({}) on a tensor of shape {}", i, shape_str(shape_));
  return shape_[static_cast<size_t>(j)];
}

void* Tensor::raw() const {
  FTUNE_CHECK(storage_ != nullptr, "access to an undefined tensor");
  return static_cast<char*>(storage_->data()) + offset_;
}

float* Tensor::f32() const {
  FTUNE_CHECK(dtype_ == DType::F32, "expected an F32 tensor, got {}", dtype_name(dtype_));
  return data<float>();
}

int32_t* Tensor::i32() const {
  FTUNE_CHECK(dtype_ == DType::I32, "expected an I32 tensor, got {}", dtype_name(dtype_));
  return data<int32_t>();
}

int64_t Tensor::row_stride() const {
  FTUNE_CHECK(ndim() == 2, "Tensor::row_stride on a tensor of shape {}", shape_str(shape_));
  return row_stride_ != 0 ? row_stride_ : shape_[1];
}

bool Tensor::is_contiguous() const {
  return row_stride_ == 0 || row_stride_ == shape_[1] || shape_[0] <= 1;
}

Tensor Tensor::col_slice(int64_t begin, int64_t end) const {
  FTUNE_CHECK(ndim() == 2 && begin >= 0 && begin <= end && end <= shape_[1],
              "Tensor::col_slice({}, {}) on shape {}", begin, end, shape_str(shape_));
  Tensor t = *this;
  t.row_stride_ = row_stride();
  t.shape_[1] = end - begin;
  t.numel_ = shape_[0] * (end - begin);
  t.offset_ = offset_ + static_cast<size_t>(begin) * dtype_size(dtype_);
  return t;
}

Tensor Tensor::slice_flat(int64_t offset, const Shape& shape) const {
  FTUNE_CHECK(is_contiguous(), "Tensor::slice_flat on a strided view");
  const int64_t n = shape_numel(shape);
  FTUNE_CHECK(offset >= 0 && offset + n <= numel_, "Tensor::slice_flat({}, {}) on {} elements",
              offset, shape_str(shape), numel_);
  Tensor t = *this;
  t.shape_ = shape;
  t.numel_ = n;
  t.row_stride_ = 0;
  t.offset_ = offset_ + static_cast<size_t>(offset) * dtype_size(dtype_);
  return t;
}

Tensor Tensor::view(const Shape& shape) const {
  FTUNE_CHECK(is_contiguous(), "Tensor::view on a strided view of shape {}", shape_str(shape_));
  FTUNE_CHECK(shape_numel(shape) == numel_, "Tensor::view: cannot view {} as {}", shape_str(shape_),
              shape_str(shape));
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

Tensor Tensor::slice_rows(int64_t begin, int64_t end) const {
  FTUNE_CHECK(ndim() >= 1 && begin >= 0 && begin <= end && end <= shape_[0],
              "Tensor::slice_rows({}, {}) on shape {}", begin, end, shape_str(shape_));
  const int64_t row = row_stride_ != 0 ? row_stride_ : (shape_[0] == 0 ? 0 : numel_ / shape_[0]);
  Tensor t = *this;
  t.shape_[0] = end - begin;
  t.numel_ = (row_stride_ != 0 ? shape_[1] : row) * (end - begin);
  t.offset_ = offset_ + static_cast<size_t>(begin * row) * dtype_size(dtype_);
  return t;
}

Tensor Tensor::clone() const {
  FTUNE_CHECK(is_contiguous(), "Tensor::clone of a strided view");
  Tensor t = empty(shape_, dtype_, device());
  t.copy_from(*this);
  return t;
}

Tensor Tensor::to(Device dev) const {
  if (dev == device()) return clone();
  Tensor t = empty(shape_, dtype_, dev);
  t.copy_from(*this);
  return t;
}

void Tensor::copy_from(const Tensor& src) {
  FTUNE_CHECK(is_contiguous() && src.is_contiguous(), "Tensor::copy_from with a strided view");
  FTUNE_CHECK(src.dtype_ == dtype_ && src.numel_ == numel_,
              "Tensor::copy_from: {} {} into {} {}", dtype_name(src.dtype_), shape_str(src.shape_),
              dtype_name(dtype_), shape_str(shape_));
  if (nbytes() == 0) return;
  if (device().is_cpu() && src.device().is_cpu()) {
    std::memcpy(raw(), src.raw(), nbytes());
    return;
  }
  const DeviceType t = device().is_cpu() ? src.device().type : device().type;
  DeviceAllocator* a = g_allocators[static_cast<size_t>(t)];
  FTUNE_CHECK(a != nullptr, "no allocator registered for device copies");
  a->copy(raw(), device(), src.raw(), src.device(), nbytes());
}

Tensor Tensor::to_dtype(DType dt) const {
  FTUNE_CHECK(device().is_cpu(), "Tensor::to_dtype works on CPU tensors");
  FTUNE_CHECK(is_contiguous(), "Tensor::to_dtype of a strided view");
  if (dt == dtype_) return clone();
  Tensor out = empty(shape_, dt);
  const int64_t n = numel_;
  auto load = [&](int64_t i) -> float {
    switch (dtype_) {
      case DType::F32: return data<float>()[i];
      case DType::BF16: return bf16_to_f32(data<uint16_t>()[i]);
      case DType::F16: return f16_to_f32(data<uint16_t>()[i]);
      case DType::F64: return static_cast<float>(data<double>()[i]);
      default: fail("Tensor::to_dtype: cannot convert from {}", dtype_name(dtype_));
    }
  };
  for (int64_t i = 0; i < n; ++i) {
    const float v = load(i);
    switch (dt) {
      case DType::F32: out.data<float>()[i] = v; break;
      case DType::BF16: out.data<uint16_t>()[i] = f32_to_bf16(v); break;
      case DType::F16: out.data<uint16_t>()[i] = f32_to_f16(v); break;
      default: fail("Tensor::to_dtype: cannot convert to {}", dtype_name(dt));
    }
  }
  return out;
}

void Tensor::zero_() {
  FTUNE_CHECK(is_contiguous(), "Tensor::zero_ on a strided view");
  if (nbytes() == 0) return;
  if (device().is_cpu()) {
    std::memset(raw(), 0, nbytes());
    return;
  }
  DeviceAllocator* a = g_allocators[static_cast<size_t>(device().type)];
  FTUNE_CHECK(a != nullptr, "no allocator for {}", device().str());
  a->memset_zero(raw(), nbytes(), device().index);
}

void Tensor::fill_(float v) {
  float* p = f32();
  FTUNE_CHECK(device().is_cpu(), "Tensor::fill_ works on CPU tensors");
  for (int64_t i = 0; i < numel_; ++i) p[i] = v;
}

std::vector<float> Tensor::to_vector() const {
  FTUNE_CHECK(device().is_cpu(), "Tensor::to_vector works on CPU tensors");
  if (dtype_ != DType::F32) return to_dtype(DType::F32).to_vector();
  const float* p = f32();
  return std::vector<float>(p, p + numel_);
}

}  // namespace ftune
