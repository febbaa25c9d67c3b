// libFuzzer target: a tokenizer_config.json whose chat_template is detected (or refused) and,
// when recognised, used to render a fixed conversation.
#include "data/chat_template.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ftune;
  const std::string path = fuzz::write_temp(fuzz::as_text(data, size), "tokenizer_config.json");
  fuzz::expect_accept_or_refuse([&] {
    const ChatTemplate t = resolve_chat_template("auto", path);
    const Conversation c = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"}};
    (void)join_segments(render_chat(t, c));
  });
  return 0;
}
