// Tensor: a row-major view (shape, dtype, device) over shared storage. Views are contiguous,
// except the 2-D column slices made by col_slice(): their rows lie row_stride() elements apart
// (the q/k/v blocks of a fused QKV output, say). Only gemm accepts such views; every other op
// and every copy requires is_contiguous().
// Storage is owned (allocated through the accounting allocator) or borrowed (e.g. an mmap'ed
// safetensors file kept alive by a shared handle). Views share storage; clone() copies.
#pragma once
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/error.h"

namespace ftune {

using Shape = std::vector<int64_t>;

enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  static Device cpu() { return {DeviceType::CPU, 0}; }
  static Device cuda(int i) { return {DeviceType::CUDA, i}; }
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  std::string str() const;
};

int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);

// Raw bytes on a device. The allocator hooks let backends (CUDA) provide device memory.
class Storage {
 public:
  Storage(void* data, size_t bytes, Device dev, std::shared_ptr<void> owner)
      : data_(data), bytes_(bytes), device_(dev), owner_(std::move(owner)) {}
  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void* data_;
  size_t bytes_;
  Device device_;
  std::shared_ptr<void> owner_;  // frees (or unmaps) when the last view goes
};

// Allocation accounting per device type: bytes live in tensors now and their peak (since the
// start or reset_peak_memory), and bytes the device allocator holds from the driver (in tensors
// plus its cache of free blocks; 0 for the CPU) and their peak.
struct MemoryStats {
  int64_t live_bytes = 0;
  int64_t peak_bytes = 0;
  int64_t reserved_bytes = 0;
  int64_t peak_reserved_bytes = 0;
};
MemoryStats memory_stats(DeviceType t);
void reset_peak_memory(DeviceType t);
// Returns the device allocator's cached free blocks to the driver (no-op for the CPU).
void release_cached_memory(DeviceType t);

// A device allocator (the CUDA backend registers one); CPU uses aligned host memory.
struct DeviceAllocator {
  virtual ~DeviceAllocator() = default;
  virtual void* allocate(size_t bytes, int device_index) = 0;
  virtual void deallocate(void* p, int device_index) = 0;
  virtual void memset_zero(void* p, size_t bytes, int device_index) = 0;
  virtual void copy(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) = 0;
  // Bytes held from the driver (all devices of this type), its peak, and dropping the cache.
  virtual int64_t reserved_bytes() const { return 0; }
  virtual int64_t peak_reserved_bytes() const { return 0; }
  virtual void reset_peak_reserved() {}
  virtual void release_cached() {}
};
void register_device_allocator(DeviceType t, DeviceAllocator* a);

class Tensor {
 public:
  Tensor() = default;

  static Tensor empty(const Shape& shape, DType dt = DType::F32, Device dev = Device::cpu());
  static Tensor zeros(const Shape& shape, DType dt = DType::F32, Device dev = Device::cpu());
  // A CPU f32 tensor holding the given values (shape must match the count).
  static Tensor from_vector(const std::vector<float>& v, const Shape& shape);
  static Tensor from_ints(const std::vector<int32_t>& v, const Shape& shape);
  // Borrows memory kept alive by `owner` (e.g. an mmap). No copy.
  static Tensor borrow(void* data, const Shape& shape, DType dt, std::shared_ptr<void> owner,
                       Device dev = Device::cpu());

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t dim(int i) const;  // negative counts from the end
  int64_t numel() const { return numel_; }
  size_t nbytes() const { return static_cast<size_t>(numel_) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device() : Device::cpu(); }

  void* raw() const;
  template <typename T>
  T* data() const {
    return static_cast<T*>(raw());
  }
  // Typed accessors that check the dtype.
  float* f32() const;
  int32_t* i32() const;

  // Same storage, new shape with the same element count.
  Tensor view(const Shape& shape) const;
  // Rows [begin, end) of dim 0, sharing storage.
  Tensor slice_rows(int64_t begin, int64_t end) const;
  // Columns [begin, end) of a 2-D tensor, sharing storage: a row-strided view.
  Tensor col_slice(int64_t begin, int64_t end) const;
  // Elements [offset, offset + numel(shape)) of a contiguous tensor, viewed with `shape`.
  Tensor slice_flat(int64_t offset, const Shape& shape) const;
  // Elements between the starts of consecutive rows of a 2-D tensor (dim(1) when contiguous).
  int64_t row_stride() const;
  bool is_contiguous() const;
  // Same storage and offset (views of one buffer).
  bool same_data(const Tensor& o) const { return storage_ == o.storage_ && offset_ == o.offset_; }
  // Deep copy on the same device.
  Tensor clone() const;
  // Copy to another device (same dtype).
  Tensor to(Device dev) const;
  // Converted copy (CPU only): F32/BF16/F16 in and out.
  Tensor to_dtype(DType dt) const;
  void zero_();
  void fill_(float v);  // CPU f32 only
  // Copies the bytes of src (same dtype and numel) into this tensor.
  void copy_from(const Tensor& src);

  std::vector<float> to_vector() const;  // CPU f32 -> host vector

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;  // bytes into storage
  int64_t row_stride_ = 0;  // 2-D column slices only: elements between rows; 0 = contiguous
  Shape shape_;
  int64_t numel_ = 0;
  DType dtype_ = DType::F32;
};

}  // namespace ftune
