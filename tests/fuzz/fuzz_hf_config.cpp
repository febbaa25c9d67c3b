// libFuzzer target: an HF config.json, parsed into the model spec and validated.
#include "fuzz_common.h"
#include "io/hf_config.h"
#include "io/json_file.h"
#include "model/model_spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ftune;
  fuzz::expect_accept_or_refuse([&] {
    const auto j = parse_json_text(fuzz::as_text(data, size), "config.json");
    const ModelSpec spec = model_spec_from_hf(parse_hf_config(j, "config.json"), "config.json");
    spec.validate();
  });
  return 0;
}
