// Chat templates: presets, resolution from tokenizer_config.json, rendering through the Jinja
// interpreter with trainable spans, template errors. (Byte parity with jinja2 over ~20
// official templates: tests/py/test_jinja_parity.py and tests/py/test_chat_templates.py.)
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/chat_template.h"
#include "data/data_files.h"
#include "support/test_support.h"

namespace ftune {
namespace {

std::string fixture(const std::string& name) {
  return read_file_bytes(std::string(FTUNE_TEST_DATA) + "/fixtures/chat_templates/" + name);
}

std::string write_config(const std::string& dir, const nlohmann::json& cfg) {
  const std::string path = dir + "/tokenizer_config.json";
  std::ofstream(path) << cfg.dump();
  return path;
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

std::vector<std::string> trained(const std::vector<TextSegment>& segs) {
  std::vector<std::string> out;
  for (const auto& s : segs) {
    if (s.trainable) out.push_back(s.text);
  }
  return out;
}

TEST(ChatTemplate, PresetNamesResolveAndUnknownNameIsAnError) {
  const auto names = chat_template_names();
  ASSERT_EQ(names, (std::vector<std::string>{"llama-3", "llama-2", "mistral", "chatml", "alpaca"}));
  for (const auto& n : names) EXPECT_EQ(chat_template_by_name(n).name, n);
  EXPECT_EQ(chat_template_by_name("llama3").name, "llama-3");
  EXPECT_EQ(chat_template_by_name("Llama_2").name, "llama-2");
  const std::string err = error_of([] { chat_template_by_name("vicuna"); });
  EXPECT_NE(err.find("unknown chat template 'vicuna'"), std::string::npos) << err;
  EXPECT_NE(err.find("llama-3, llama-2, mistral, chatml, alpaca"), std::string::npos) << err;
}

TEST(ChatTemplate, PresetsEmbedTheOfficialSources) {
  EXPECT_EQ(chat_template_by_name("llama-3").source, fixture("llama-3.jinja"));
  EXPECT_EQ(chat_template_by_name("llama-2").source, fixture("llama-2.jinja"));
  EXPECT_EQ(chat_template_by_name("mistral").source, fixture("mistral-v0.1.jinja"));
  EXPECT_EQ(chat_template_by_name("chatml").source, fixture("qwen2.jinja"));
  EXPECT_EQ(chat_template_by_name("alpaca").source, fixture("alpaca.jinja"));
}

TEST(ChatTemplate, EveryPresetRendersAndMarksOnlyAssistantRepliesTrainable) {
  const Conversation conv = {{"user", "Q1"}, {"assistant", "A1"}, {"user", "Q2"},
                             {"assistant", "A2"}};
  for (const auto& name : chat_template_names()) {
    const ChatTemplate t = chat_template_by_name(name);
    const auto segs = render_chat(t, conv);
    const auto spans = trained(segs);
    ASSERT_EQ(spans.size(), 2u) << name;
    for (size_t i = 0; i < 2; ++i) {
      EXPECT_NE(spans[i].find(i == 0 ? "A1" : "A2"), std::string::npos) << name;
      EXPECT_EQ(spans[i].find("Q"), std::string::npos) << name;
    }
    for (size_t i = 1; i < segs.size(); ++i) EXPECT_NE(segs[i].trainable, segs[i - 1].trainable);
    EXPECT_EQ(join_segments(segs), render_chat_text(t, conv, false)) << name;
  }
}

TEST(ChatTemplate, Llama3SegmentsExactly) {
  const ChatTemplate t = chat_template_by_name("llama-3");
  const auto segs = render_chat(t, {{"system", " Be nice. "}, {"user", "Hi\n"}, {"assistant", "  Yo  "}});
  ASSERT_EQ(segs.size(), 2u);
  EXPECT_EQ(segs[0].text,
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe nice.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_FALSE(segs[0].trainable);
  EXPECT_EQ(segs[1].text, "Yo<|eot_id|>");
  EXPECT_TRUE(segs[1].trainable);
  // add_generation_prompt appends the assistant header.
  EXPECT_EQ(render_chat_text(t, {{"user", "Hi"}}, true),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplate, ChatmlTrainsContentAndImEndButNotTheNewline) {
  const auto segs = render_chat(chat_template_by_name("chatml"), {{"user", "Q"}, {"assistant", "A"}});
  ASSERT_EQ(segs.size(), 3u);
  EXPECT_EQ(segs[0].text,
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nQ<|im_end|>"
            "\n<|im_start|>assistant\n");
  EXPECT_EQ(segs[1].text, "A<|im_end|>");
  EXPECT_TRUE(segs[1].trainable);
  EXPECT_EQ(segs[2].text, "\n");
  EXPECT_FALSE(segs[2].trainable);
}

// Formerly refused: the Llama-3.1+ template with its date header now renders, with
// strftime_now() formatting the template's date.
TEST(ChatTemplate, Llama32DateHeaderRenders) {
  ChatTemplate t = make_chat_template("llama-3.2", fixture("llama-3.2.jinja"));
  t.bos_token = "<|begin_of_text|>";
  t.date = "2024-07-26";
  const auto segs = render_chat(t, {{"system", "Sys"}, {"user", "Hi"}, {"assistant", "Yo"}});
  EXPECT_EQ(join_segments(segs),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
            "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\nSys<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nYo<|eot_id|>");
  EXPECT_EQ(trained(segs), (std::vector<std::string>{"Yo<|eot_id|>"}));
  t.date = "2025-01-02";
  EXPECT_NE(render_chat_text(t, {{"user", "Hi"}}, false).find("Today Date: 02 Jan 2025"),
            std::string::npos);
}

// Formerly refused: Qwen3 with <think> blocks. The last turn keeps its reasoning, earlier
// turns lose it; each trainable span is the turn as the full rendering writes it.
TEST(ChatTemplate, Qwen3ThinkBlocksAndSpans) {
  const ChatTemplate t = make_chat_template("qwen3", fixture("qwen3.jinja"));
  const Conversation conv = {{"user", "q1"},
                             {"assistant", "<think>\nr1\n</think>\n\na1"},
                             {"user", "q2"},
                             {"assistant", "<think>\nr2\n</think>\n\na2"}};
  const auto segs = render_chat(t, conv);
  EXPECT_EQ(join_segments(segs),
            "<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n"
            "<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n<think>\nr2\n</think>\n\n"
            "a2<|im_end|>\n");
  EXPECT_EQ(trained(segs), (std::vector<std::string>{"a1<|im_end|>",
                                                     "<think>\nr2\n</think>\n\na2<|im_end|>"}));
  // enable_thinking=false: the generation prompt carries an empty think block.
  ChatTemplate no_think = t;
  no_think.variables["enable_thinking"] = false;
  EXPECT_EQ(render_chat_text(no_think, {{"user", "q"}}, true),
            "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
}

// Mistral-Nemo moves the system prompt into the last user turn, so no prefix of the
// conversation renders as a prefix of the whole: spans are found by perturbation.
TEST(ChatTemplate, SystemPromptInLastTurnStillFindsSpans) {
  ChatTemplate t = make_chat_template("nemo", fixture("mistral-nemo-tekken.jinja"));
  t.bos_token = "<s>";
  t.eos_token = "</s>";
  const auto segs = render_chat(t, {{"system", "S"}, {"user", "u1"}, {"assistant", "a1"},
                                    {"user", "u2"}, {"assistant", "a2"}, {"user", "u3"}});
  EXPECT_EQ(join_segments(segs), "<s>[INST]u1[/INST]a1</s>[INST]u2[/INST]a2</s>[INST]S\n\nu3[/INST]");
  EXPECT_EQ(trained(segs), (std::vector<std::string>{"a1</s>", "a2</s>"}));
}

// Where a template marks {% generation %}, the spans found from the rendering agree.
TEST(ChatTemplate, SpansAgreeWithGenerationMarkers) {
  for (const char* file : {"phi-4-generation.jinja", "llama-3-generation.jinja"}) {
    ChatTemplate t = make_chat_template(file, fixture(file));
    t.bos_token = "<s>";
    const Conversation conv = {{"system", "s"}, {"user", "q1"}, {"assistant", " a1 "},
                               {"user", "q2"}, {"assistant", "a2"}};
    std::vector<std::pair<size_t, size_t>> marks;
    const std::string text = render_chat_text(t, conv, false, &marks);
    std::vector<std::string> marked;
    for (const auto& [b, e] : marks) marked.push_back(text.substr(b, e - b));
    ASSERT_EQ(marked.size(), 2u) << file;
    EXPECT_EQ(trained(render_chat(t, conv)), marked) << file;
  }
}

TEST(ChatTemplate, TemplateErrorsNameTheTemplate) {
  const std::string e1 = error_of([] {
    render_chat(chat_template_by_name("llama-2"), {{"user", "a"}, {"user", "b"}});
  });
  EXPECT_NE(e1.find("chat template llama-2: Conversation roles must alternate"), std::string::npos) << e1;
  const std::string e2 = error_of([] {
    render_chat(chat_template_by_name("mistral"), {{"user", "a"}, {"system", "b"}});
  });
  EXPECT_NE(e2.find("mistral: Only user and assistant roles are supported!"), std::string::npos) << e2;
  const std::string e3 = error_of([] { render_chat(chat_template_by_name("chatml"), {}); });
  EXPECT_NE(e3.find("conversation is empty"), std::string::npos) << e3;
  const std::string e4 = error_of([] { make_chat_template("broken", fixture("syntax-error.jinja")); });
  EXPECT_NE(e4.find("chat template broken: template syntax error at line 4, column"), std::string::npos) << e4;
}

TEST(ChatTemplate, ResolveAutoReadsTokenizerConfig) {
  const std::string dir = test::temp_dir("chat_auto");
  const std::string llama3 = fixture("llama-3.jinja");
  const std::string cfg = write_config(
      dir, {{"chat_template", llama3},
            {"bos_token", "<|begin_of_text|>"},
            {"pad_token", "<|finetune_right_pad_id|>"},
            {"eos_token", {{"__type", "AddedToken"}, {"content", "<|eot_id|>"}}}});
  const ChatTemplate t = resolve_chat_template("auto", cfg);
  EXPECT_EQ(t.source, llama3);
  EXPECT_EQ(t.bos_token, "<|begin_of_text|>");
  EXPECT_EQ(t.eos_token, "<|eot_id|>");
  EXPECT_EQ(t.variables.value("pad_token", ""), "<|finetune_right_pad_id|>");
  // The official Llama-3 source is recognised as the preset, with its special tokens.
  EXPECT_EQ(t.name, "llama-3");
  EXPECT_EQ(t.special_tokens().size(), 4u);

  // Any valid template renders, also ones no preset resembles.
  write_config(dir, {{"chat_template", "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"}});
  const ChatTemplate own = resolve_chat_template("auto", cfg);
  EXPECT_EQ(join_segments(render_chat(own, {{"user", "hi"}})), "<user>hi");
  EXPECT_EQ(own.name, cfg);
  EXPECT_TRUE(own.special_tokens().empty());  // a model's own template: nothing to check

  // By name, bos/eos still come from the config; a null bos renders as "".
  const std::string cfg2 = write_config(dir, {{"bos_token", nullptr}, {"eos_token", "<|im_end|>"}});
  const ChatTemplate a = resolve_chat_template("alpaca", cfg2);
  EXPECT_EQ(a.bos_token, "");
  EXPECT_EQ(a.eos_token, "<|im_end|>");
  EXPECT_EQ(a.special_tokens(), (std::vector<std::string>{"<|im_end|>"}));

  // A list of named templates: the "default" one.
  const std::string mistral = fixture("mistral-v0.1.jinja");
  write_config(dir, {{"chat_template", {{{"name", "tool_use"}, {"template", llama3}},
                                        {{"name", "default"}, {"template", mistral}}}}});
  EXPECT_EQ(resolve_chat_template("auto", cfg).source, mistral);

  // No chat_template in the config: chat_template.jinja next to it.
  write_config(dir, {{"eos_token", "</s>"}});
  std::ofstream(dir + "/chat_template.jinja") << fixture("phi-4.jinja");
  const ChatTemplate j = resolve_chat_template("auto", cfg);
  EXPECT_EQ(j.source, fixture("phi-4.jinja"));
  EXPECT_NE(j.name.find("chat_template.jinja"), std::string::npos);
  std::filesystem::remove(dir + "/chat_template.jinja");

  const std::string e1 = error_of([&] { resolve_chat_template("auto", cfg); });
  EXPECT_NE(e1.find("tokenizer_config.json: no chat_template"), std::string::npos) << e1;
  write_config(dir, {{"chat_template", "{% for m in messages %}"}});
  const std::string e2 = error_of([&] { resolve_chat_template("auto", cfg); });
  EXPECT_NE(e2.find("template syntax error at line 1"), std::string::npos) << e2;
  const std::string e3 = error_of([] { resolve_chat_template("auto", ""); });
  EXPECT_NE(e3.find("no tokenizer_config.json was given"), std::string::npos) << e3;
}

TEST(ChatTemplate, SpecialTokensPerPreset) {
  EXPECT_EQ(chat_template_by_name("llama-3").special_tokens(),
            (std::vector<std::string>{"<|begin_of_text|>", "<|start_header_id|>",
                                      "<|end_header_id|>", "<|eot_id|>"}));
  EXPECT_EQ(chat_template_by_name("chatml").special_tokens(),
            (std::vector<std::string>{"<|im_start|>", "<|im_end|>"}));
  EXPECT_EQ(chat_template_by_name("mistral").special_tokens(),
            (std::vector<std::string>{"<s>", "</s>"}));
}

TEST(ChatTemplate, FingerprintFollowsWhatChangesTheRendering) {
  ChatTemplate a = chat_template_by_name("llama-3");
  ChatTemplate b = a;
  EXPECT_EQ(a.fingerprint(), b.fingerprint());
  b.eos_token = "x";
  EXPECT_NE(a.fingerprint(), b.fingerprint());
  b = a;
  b.variables["enable_thinking"] = false;
  EXPECT_NE(a.fingerprint(), b.fingerprint());
  b = a;
  b.date = "2020-01-01";  // llama-3 never calls strftime_now: the date does not matter
  EXPECT_EQ(a.fingerprint(), b.fingerprint());
  ChatTemplate c = make_chat_template("l32", fixture("llama-3.2.jinja")), d = c;
  c.date = "2020-01-01";
  d.date = "2020-01-02";
  EXPECT_NE(c.fingerprint(), d.fingerprint());
}

TEST(ChatTemplate, PythonStripMatchesStrIsspace) {
  EXPECT_EQ(python_strip("  a b \n\t"), "a b");
  EXPECT_EQ(python_strip("\u3000\u00a0x\u2028\u2029"), "x");
  EXPECT_EQ(python_strip("\x1c\x1f\x0b\x0c" "y" "\xC2\x85"), "y");  // U+0085 NEL
  EXPECT_EQ(python_strip("\u200bz\u200b"), "\u200bz\u200b");  // zero width space is not space
  EXPECT_EQ(python_strip("   "), "");
  EXPECT_EQ(python_strip(""), "");
  EXPECT_EQ(python_strip(" 日本 "), "日本");
}

}  // namespace
}  // namespace ftune
