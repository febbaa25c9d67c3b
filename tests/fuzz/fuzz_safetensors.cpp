// libFuzzer target: a safetensors file (header length, JSON header, data buffer), opened and
// every tensor read and scanned.
#include "core/finite_check.h"
#include "fuzz_common.h"
#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ftune;
  const std::string path = fuzz::write_temp(fuzz::as_text(data, size), "model.safetensors");
  fuzz::expect_accept_or_refuse([&] {
    SafetensorsFile f = SafetensorsFile::open(path);
    for (const auto& name : f.names()) {
      Tensor t = f.tensor(name);
      (void)first_non_finite(t);
    }
  });
  return 0;
}
