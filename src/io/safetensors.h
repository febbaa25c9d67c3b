// safetensors files (FORMATS.md §1): a validating mmap reader, an atomic writer, and the reader
// of HF model folders that holds either one model.safetensors or a sharded set listed by
// model.safetensors.index.json.
//
// Layout: u64 LE header length N, N bytes of UTF-8 JSON (object), then the data buffer. The
// reader checks everything upstream safetensors checks (safetensors/src/tensor.rs,
// Metadata::validate): header size limit, entry fields, dtype names, byte counts per tensor,
// that the tensors tile the data buffer exactly, and that the buffer ends at end of file.
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/dtype.h"
#include "core/tensor.h"

namespace ftune {

// Upstream readers refuse headers larger than this (safetensors MAX_HEADER_SIZE).
inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  uint64_t begin = 0;  // byte offsets into the data buffer, end exclusive
  uint64_t end = 0;
};

class SafetensorsFile {
 public:
  // Maps the file read-only (MAP_PRIVATE) and validates its header; throws ftune::Error naming
  // the file and the problem.
  static SafetensorsFile open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::vector<std::string>& names() const { return names_; }  // sorted
  bool contains(const std::string& name) const { return infos_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  // A CPU tensor borrowing the mapped bytes (no copy). Every such tensor keeps the mapping
  // alive. The mapping is read-only: writing through the tensor faults; clone() to modify.
  // Data are at their file offset, so elements are aligned only as far as the writer aligned
  // them (ftune's writer and upstream's pad the header to 8 bytes).
  Tensor tensor(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // File offset of the data buffer (8 + header length) and the file size.
  uint64_t data_start() const { return data_start_; }
  uint64_t file_size() const { return file_size_; }

 private:
  std::string path_;
  std::shared_ptr<void> mapping_;  // unmaps when the file object and all tensors are gone
  const uint8_t* base_ = nullptr;
  uint64_t file_size_ = 0;
  uint64_t data_start_ = 0;
  std::vector<std::string> names_;
  std::map<std::string, TensorInfo> infos_;
  std::map<std::string, std::string> metadata_;
};

class AtomicFile;

// Writes a safetensors file one tensor at a time: the header (names, dtypes, shapes, offsets) is
// written from the declared entries first, then each tensor's bytes in the declared order, so a
// large file never needs all its tensors in memory at once. Atomic (see io/atomic_file.h):
// nothing appears at `path` until commit(); a writer destroyed before that leaves no file.
class SafetensorsStreamWriter {
 public:
  struct TensorEntry {
    std::string name;
    DType dtype = DType::F32;
    Shape shape;
  };
  SafetensorsStreamWriter(const std::string& path, const std::vector<TensorEntry>& entries,
                          const std::map<std::string, std::string>& metadata = {{"format", "pt"}});
  ~SafetensorsStreamWriter();
  // The next declared tensor (dtype and shape must match the entry; CPU, contiguous).
  void write(const Tensor& t);
  // Checks every entry was written, then fsyncs and renames into place.
  void commit();

 private:
  std::string path_;
  std::vector<TensorEntry> entries_;
  size_t next_ = 0;
  std::unique_ptr<AtomicFile> file_;
};

// Writes CPU tensors (any dtype except packed NF4) in the given order, header first with
// "__metadata__" (omitted when empty) and padded with spaces to 8-byte alignment. Atomic:
// writes path + ".tmp", fsyncs, renames over path. Rejects duplicate or empty names.
void write_safetensors(const std::string& path,
                       const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// The weights of an HF model folder. Like transformers (modeling_utils.py,
// _get_resolved_checkpoint_files), a folder with model.safetensors uses that file; otherwise
// model.safetensors.index.json's weight_map names the shard of each tensor, and each shard is
// opened once. The weight_map is authoritative: every tensor it lists must be in its shard;
// tensors a shard holds beyond it are not exposed.
class CheckpointReader {
 public:
  static CheckpointReader open_folder(const std::string& dir);

  const std::string& folder() const { return dir_; }
  const std::vector<std::string>& names() const { return names_; }  // sorted
  bool contains(const std::string& name) const { return where_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const;
  Tensor tensor(const std::string& name) const;
  // Path of the file holding `name`.
  const std::string& file_of(const std::string& name) const;
  // The opened files (one, or each shard once), in the order first named by the index.
  const std::vector<SafetensorsFile>& files() const { return files_; }

 private:
  const SafetensorsFile& file_for(const std::string& name) const;
  std::string dir_;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, size_t> where_;  // tensor name -> index into files_
  std::vector<std::string> names_;
};

}  // namespace ftune
