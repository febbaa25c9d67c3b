// libFuzzer target: the YAML job config (every key, type and range check).
#include "fuzz_common.h"
#include "train/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ftune;
  fuzz::expect_accept_or_refuse([&] {
    const TrainConfig c = load_config_text(std::string(fuzz::as_text(data, size)), "job.yaml", {});
    (void)to_resolved_yaml(c);
  });
  return 0;
}
