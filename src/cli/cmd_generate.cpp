// `ftune generate --model DIR [--adapter DIR] (--prompt TEXT | --chat) ...`: text generation
// with a KV cache (model/generator.h) on the CPU or a GPU, from a base model and optionally a
// PEFT adapter (applied unmerged, as in training). --prompt: one completion, streamed to stdout
// (raw text, or one user turn of a chat template when --chat-template/--system is given).
// --chat: an interactive conversation, one user message per line of stdin (/reset forgets the
// conversation, /exit or end of input ends it); the cache keeps the tokens a turn shares with
// the previous one. --json: instead of streaming, one JSON object per reply with the prompt
// and generated token ids (tests/interop/check_generate.py compares them with HF generate).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/generation_setup.h"
#include "cli/job_setup.h"
#include "core/error.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "io/text_streamer.h"
#include "model/adapter_io.h"
#include "model/generator.h"
#include "model/unused_tensors.h"

namespace ftune {

namespace fs = std::filesystem;

namespace {

constexpr int64_t kMaxNewTokens = 1 << 20;

struct Session {
  const GenerateArgs& args;
  const Tokenizer& tok;
  Generator& gen;
  GenerationOptions opts;

  // Generates after `prompt`, streaming the text (or printing one JSON line); returns the
  // reply's text without the stop token.
  std::string reply(const std::vector<int32_t>& prompt) {
    TextStreamer streamer(tok);
    const auto t0 = std::chrono::steady_clock::now();
    const GenerationResult r = gen.generate(prompt, opts, [&](int32_t id) {
      if (!args.json) {
        const bool stop = std::find(opts.stop_ids.begin(), opts.stop_ids.end(), id) !=
                          opts.stop_ids.end();
        const std::string piece = stop ? streamer.finish() : streamer.put(id);
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
      }
      return true;
    });
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::vector<int32_t> reply_ids = r.ids;
    if (r.stop_reason == "stop" && !reply_ids.empty()) reply_ids.pop_back();
    const std::string text = tok.decode(reply_ids, /*skip_special_tokens=*/true);
    if (args.json) {
      const nlohmann::json out = {{"prompt_ids", prompt},
                                  {"ids", r.ids},
                                  {"text", text},
                                  {"stop_reason", r.stop_reason},
                                  {"stop_ids", opts.stop_ids},
                                  {"prompt_tokens", r.prompt_tokens},
                                  {"reused_tokens", r.reused_tokens}};
      std::printf("%s\n", out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    } else {
      if (r.stop_reason != "stop") {
        const std::string rest = streamer.finish();
        std::fwrite(rest.data(), 1, rest.size(), stdout);
      }
      std::printf("\n");
    }
    std::fflush(stdout);
    std::fprintf(stderr, "[%zu tokens in %.2f s, %.1f tokens/s; prompt %lld tokens (%lld cached); %s]\n",
                 r.ids.size(), s, s > 0 ? static_cast<double>(r.ids.size()) / s : 0.0,
                 static_cast<long long>(r.prompt_tokens), static_cast<long long>(r.reused_tokens),
                 r.stop_reason.c_str());
    return text;
  }
};

}  // namespace

int cmd_generate(const GenerateArgs& a) {
  FTUNE_CHECK(!a.model.empty(), "generate: --model is required");
  FTUNE_CHECK(a.chat != a.prompt.has_value(), "generate: give exactly one of --prompt TEXT and --chat");
  FTUNE_CHECK(fs::exists(a.model + "/config.json"), "generate: {}: no config.json", a.model);
  FTUNE_CHECK(fs::exists(a.model + "/tokenizer.json"), "generate: {}: no tokenizer.json", a.model);
  FTUNE_CHECK(a.max_new_tokens >= 0 && a.max_new_tokens <= kMaxNewTokens,
              "generate: --max-new-tokens {} is out of range [0, {}]", a.max_new_tokens,
              kMaxNewTokens);
  GenerationOptions opts;
  opts.max_new_tokens = a.max_new_tokens;
  opts.sampling.temperature = a.temperature;
  opts.sampling.top_k = a.top_k;
  opts.sampling.top_p = a.top_p;
  opts.sampling.seed = a.seed;
  opts.sampling.validate();

  const Tokenizer tok = Tokenizer::from_file(a.model + "/tokenizer.json");
  const ModelSpec spec = model_spec_from_hf(load_hf_config(a.model + "/config.json"),
                                            a.model + "/config.json");
  FTUNE_CHECK(tok.vocab_size() <= spec.vocab_size,
              "{}/tokenizer.json has token ids up to {}, outside the model's vocabulary "
              "(vocab_size {} in {}/config.json)",
              a.model, tok.vocab_size() - 1, spec.vocab_size, a.model);
  // A chat template: always for --chat (auto = the model's), for --prompt when asked for.
  const bool templated = a.chat || !a.chat_template.empty() || !a.system.empty();
  std::optional<ChatTemplate> tmpl;
  if (templated)
    tmpl = generation_chat_template(a.chat_template.empty() ? "auto" : a.chat_template, a.model,
                                    tok);
  opts.stop_ids = stop_token_ids(a.model, a.model, spec, tok, tmpl ? &*tmpl : nullptr);

  check_unused_tensors(spec, CheckpointReader::open_folder(a.model), a.model + "/config.json");
  auto ops = make_ops(a.device);
  ModelOptions mo;
  mo.dtype = compute_dtype("auto", *ops);
  LlamaModel model = LlamaModel::from_hf_folder(a.model, *ops, mo);
  if (!a.adapter.empty())
    model.attach_lora(load_peft_adapter(a.adapter, model.spec(), ops->device()));
  Generator gen(model);
  Session session{a, tok, gen, opts};

  Conversation conv;
  if (!a.system.empty()) conv.push_back({"system", a.system});
  if (!a.chat) {
    if (tmpl) {
      conv.push_back({"user", *a.prompt});
      session.reply(chat_prompt_ids(tok, *tmpl, conv));
    } else {
      FTUNE_CHECK(!a.prompt->empty(), "generate: --prompt is empty");
      session.reply(raw_prompt_ids(tok, *a.prompt));
    }
    return 0;
  }
  const Conversation start = conv;
  const bool tty = ::isatty(STDIN_FILENO) != 0;
  if (tty)
    std::fprintf(stderr, "chat with %s%s%s (template %s); /reset starts over, /exit or Ctrl-D ends\n",
                 a.model.c_str(), a.adapter.empty() ? "" : " + ", a.adapter.c_str(),
                 tmpl->name.c_str());
  std::string line;
  while (true) {
    if (tty) std::fprintf(stderr, "> ");
    if (!std::getline(std::cin, line)) break;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (line == "/exit" || line == "/quit") break;
    if (line == "/reset") {
      conv = start;
      continue;
    }
    conv.push_back({"user", line});
    const std::string text = session.reply(chat_prompt_ids(tok, *tmpl, conv));
    conv.push_back({"assistant", text});
  }
  return 0;
}

}  // namespace ftune
