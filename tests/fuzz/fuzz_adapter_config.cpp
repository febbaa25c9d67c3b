// libFuzzer target: a PEFT adapter_config.json.
#include "fuzz_common.h"
#include "model/adapter_io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ftune;
  const std::string path = fuzz::write_temp(fuzz::as_text(data, size), "adapter_config.json");
  fuzz::expect_accept_or_refuse([&] { (void)load_adapter_config(path); });
  return 0;
}
