// libFuzzer target for chat templates. An input that starts with '{' is a tokenizer_config.json
// whose chat_template is resolved and used to render a fixed conversation with its trainable
// spans; any other input is Jinja template text, parsed and rendered by the interpreter with
// small limits (output size, steps, macro depth), so hostile templates stay bounded.
#include "data/chat_template.h"
#include "data/jinja/builtins.h"
#include "data/jinja/interpreter.h"
#include "fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ftune;
  const std::string_view text = fuzz::as_text(data, size);
  const Conversation conv = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello!"},
                             {"user", "Again"}, {"assistant", "<think>r</think>Yes."}};
  if (!text.empty() && text[0] == '{') {
    const std::string path = fuzz::write_temp(text, "tokenizer_config.json");
    fuzz::expect_accept_or_refuse([&] {
      const ChatTemplate t = resolve_chat_template("auto", path);
      (void)join_segments(render_chat(t, conv));
    });
    return 0;
  }
  fuzz::expect_accept_or_refuse([&] {
    const auto parsed = jinja::load_template(text);
    std::tm date{};
    date.tm_year = 124;
    date.tm_mday = 1;
    auto globals = jinja::builtin_globals(date);
    jinja::Value::List messages;
    for (const ChatMessage& m : conv) {
      messages.push_back(jinja::Value::dict({{jinja::Value("role"), jinja::Value(m.role)},
                                             {jinja::Value("content"), jinja::Value(m.content)}}));
    }
    globals["messages"] = jinja::Value::list(std::move(messages));
    globals["bos_token"] = jinja::Value("<s>");
    globals["add_generation_prompt"] = jinja::Value(true);
    jinja::RenderLimits limits;
    limits.max_output_bytes = 1 << 20;
    limits.max_steps = 200000;
    limits.max_call_depth = 16;
    jinja::Interpreter in(*parsed, std::move(globals), limits);
    (void)in.render();
  });
  return 0;
}
