// libFuzzer target: a tokenizer.json, then (after the first NUL byte of the input) a text that
// is encoded and decoded with it.
#include "fuzz_common.h"
#include "io/tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ftune;
  const std::string_view in = fuzz::as_text(data, size);
  const size_t nul = in.find('\0');
  const std::string json(in.substr(0, nul));
  const std::string_view text = nul == std::string_view::npos ? "Hello world! 123" : in.substr(nul + 1);
  fuzz::expect_accept_or_refuse([&] {
    const Tokenizer tok = Tokenizer::from_json(json, "tokenizer.json");
    const auto ids = tok.encode(text, true);
    (void)tok.decode(ids, false);
  });
  return 0;
}
