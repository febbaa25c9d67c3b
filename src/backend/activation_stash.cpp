#include "backend/activation_stash.h"

#include "core/error.h"

namespace ftune {

namespace {

class HostCopyStash final : public ActivationStash {
 public:
  void put(int slot, const Tensor& t) override {
    FTUNE_CHECK(slot >= 0, "activation stash: negative slot {}", slot);
    if (static_cast<size_t>(slot) >= slots_.size()) slots_.resize(static_cast<size_t>(slot) + 1);
    Entry& e = slots_[static_cast<size_t>(slot)];
    FTUNE_CHECK(!e.host.defined(), "activation stash: slot {} is already in use", slot);
    e.device = t.device();
    e.host = t.to(Device::cpu());
    if (e.host.raw() == t.raw()) {  // a CPU tensor: keep a copy of its own, not the caller's
      Tensor copy = Tensor::empty(t.shape(), t.dtype());
      copy.copy_from(t);
      e.host = copy;
    }
  }
  void prefetch(int) override {}
  Tensor take(int slot) override {
    FTUNE_CHECK(slot >= 0 && static_cast<size_t>(slot) < slots_.size() &&
                    slots_[static_cast<size_t>(slot)].host.defined(),
                "activation stash: slot {} is empty", slot);
    Entry& e = slots_[static_cast<size_t>(slot)];
    Tensor out = e.host.to(e.device);
    if (out.raw() == e.host.raw()) out = e.host;  // CPU: hand over our copy
    e = Entry();
    return out;
  }
  void clear() override { slots_.clear(); }
  int64_t host_bytes() const override {
    int64_t n = 0;
    for (const Entry& e : slots_) n += e.host.defined() ? static_cast<int64_t>(e.host.nbytes()) : 0;
    return n;
  }

 private:
  struct Entry {
    Tensor host;
    Device device = Device::cpu();
  };
  std::vector<Entry> slots_;
};

}  // namespace

std::unique_ptr<ActivationStash> make_host_copy_stash() { return std::make_unique<HostCopyStash>(); }

}  // namespace ftune
