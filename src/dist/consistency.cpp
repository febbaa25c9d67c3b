// Cross-rank agreement checks (consistency.h).
#include "dist/consistency.h"

#include <cstring>
#include <fmt/format.h>

namespace ftune {

namespace {

std::vector<uint64_t> gather_u64(Communicator& comm, const std::vector<uint64_t>& mine) {
  std::vector<uint64_t> all(mine.size() * static_cast<size_t>(comm.world_size()));
  comm.all_gather_bytes({reinterpret_cast<const uint8_t*>(mine.data()), mine.size() * 8},
                        {reinterpret_cast<uint8_t*>(all.data()), all.size() * 8});
  return all;
}

}  // namespace

uint64_t tensor_checksum(const Tensor& t) {
  const Tensor h = t.device().is_cpu() ? t : t.to(Device::cpu());
  const auto* p = static_cast<const uint8_t*>(h.raw());
  uint64_t x = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < h.nbytes(); ++i) x = (x ^ p[i]) * 0x100000001b3ull;
  return x;
}

void check_same_job(Communicator& comm, const std::vector<std::pair<std::string, uint64_t>>& what) {
  std::vector<uint64_t> mine;
  for (const auto& [label, h] : what) mine.push_back(h);
  const std::vector<uint64_t> all = gather_u64(comm, mine);
  const size_t n = mine.size();
  for (int r = 1; r < comm.world_size(); ++r) {
    for (size_t i = 0; i < n; ++i) {
      const uint64_t h0 = all[i], hr = all[static_cast<size_t>(r) * n + i];
      if (h0 == hr) continue;
      fail("ranks disagree before training: rank {} has a different {} than rank 0 ({} hash "
           "{:016x} vs {:016x}); every rank must run the same config, model and data",
           r, what[i].first, what[i].first, hr, h0);
    }
  }
}

void verify_replicas(Communicator& comm,
                     const std::vector<std::pair<std::string, const Tensor*>>& tensors,
                     int64_t step) {
  std::vector<uint64_t> mine;
  for (const auto& [name, t] : tensors) mine.push_back(tensor_checksum(*t));
  const std::vector<uint64_t> all = gather_u64(comm, mine);
  const size_t n = mine.size();
  for (size_t i = 0; i < n; ++i) {
    std::vector<int> differ;
    for (int r = 1; r < comm.world_size(); ++r)
      if (all[static_cast<size_t>(r) * n + i] != all[i]) differ.push_back(r);
    if (differ.empty()) continue;
    fail("consistency check at step {}: rank{} {} differ{} from rank 0 in '{}' (the first "
         "differing tensor of {}); replicas diverged, stopping",
         step, differ.size() > 1 ? "s" : "", fmt::join(differ, ", "),
         differ.size() > 1 ? "" : "s", tensors[i].first, n);
  }
}

}  // namespace ftune

#include <algorithm>
#include <filesystem>
#include <fstream>

namespace ftune {

uint64_t model_folder_hash(const std::string& dir) {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (n == "config.json" || (n.size() > 12 && n.substr(n.size() - 12) == ".safetensors"))
      files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  uint64_t x = 0xcbf29ce484222325ull;
  auto mix = [&](const void* p, size_t n) {
    const auto* c = static_cast<const uint8_t*>(p);
    for (size_t i = 0; i < n; ++i) x = (x ^ c[i]) * 0x100000001b3ull;
  };
  for (const auto& f : files) {
    const std::string name = f.filename().string();
    mix(name.data(), name.size());
    const uint64_t size = fs::file_size(f);
    mix(&size, sizeof size);
    std::ifstream in(f, std::ios::binary);
    std::string buf(65536, '\0');
    in.read(buf.data(), static_cast<std::streamsize>(std::min<uint64_t>(size, buf.size())));
    mix(buf.data(), static_cast<size_t>(in.gcount()));
    if (size > buf.size()) {
      in.clear();
      in.seekg(static_cast<std::streamoff>(size - buf.size()));
      in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      mix(buf.data(), static_cast<size_t>(in.gcount()));
    }
  }
  return x;
}

}  // namespace ftune
