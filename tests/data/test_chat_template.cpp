// Chat template table, detection from tokenizer_config.json, rendering with trainable spans and
// template errors. (Byte parity with the Jinja sources: tests/py/test_chat_templates.py.)
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/chat_template.h"
#include "support/test_support.h"

namespace ftune {
namespace {

// Official chat_template strings (JSON-decoded), as in tokenizer_config.json.
const std::string kLlama3 =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | "
    "trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% "
    "endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ "
    "'<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";
const std::string kLlama31Fragment =
    "{{- \"Cutting Knowledge Date: December 2023\\n\" }}{{- '<|start_header_id|>' + "
    "message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}";
const std::string kLlama2 =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
    "system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set "
    "system_message = false %}{% endif %}{% for message in loop_messages %}... '<<SYS>>\\n' + "
    "system_message + '\\n<</SYS>>\\n\\n' ... bos_token + '[INST] ' + content.strip() + ' [/INST]'";
const std::string kMistral =
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + "
    "message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ "
    "message['content'] + eos_token + ' ' }}{% endif %}{% endfor %}";
const std::string kMixtral =
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + "
    "message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ "
    "message['content'] + eos_token}}{% endif %}{% endfor %}";
const std::string kQwen2 =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ "
    "'<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' "
    "+ message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}";
const std::string kChatmlPlain =
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n'}}{% endfor %}";

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

TEST(ChatTemplate, TableNamesResolveAndUnknownNameIsAnError) {
  const auto names = chat_template_names();
  ASSERT_EQ(names, (std::vector<std::string>{"llama-3", "llama-2", "mistral", "chatml", "alpaca"}));
  for (const auto& n : names) EXPECT_EQ(chat_template_by_name(n).name, n);
  EXPECT_EQ(chat_template_by_name("llama3").name, "llama-3");
  EXPECT_EQ(chat_template_by_name("Llama_2").name, "llama-2");
  const std::string err = error_of([] { chat_template_by_name("vicuna"); });
  EXPECT_NE(err.find("unknown chat template 'vicuna'"), std::string::npos) << err;
  EXPECT_NE(err.find("llama-3, llama-2, mistral, chatml, alpaca"), std::string::npos) << err;
}

TEST(ChatTemplate, EveryTableEntryRendersAndMarksOnlyAssistantRepliesTrainable) {
  const Conversation conv = {{"user", "Q1"}, {"assistant", "A1"}, {"user", "Q2"},
                             {"assistant", "A2"}};
  for (const auto& name : chat_template_names()) {
    const ChatTemplate t = chat_template_by_name(name);
    const auto segs = render_chat(t, conv);
    std::vector<std::string> trained;
    for (const auto& s : segs) {
      if (s.trainable) trained.push_back(s.text);
    }
    ASSERT_EQ(trained.size(), 2u) << name;
    for (size_t i = 0; i < 2; ++i) {
      const std::string a = i == 0 ? "A1" : "A2";
      EXPECT_NE(trained[i].find(a), std::string::npos) << name;
      EXPECT_EQ(trained[i].substr(trained[i].size() - t.end_of_turn().size()), t.end_of_turn())
          << name;
      EXPECT_EQ(trained[i].find("Q"), std::string::npos) << name;
    }
    // Neighbouring segments always differ in their flag.
    for (size_t i = 1; i < segs.size(); ++i) EXPECT_NE(segs[i].trainable, segs[i - 1].trainable);
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

TEST(ChatTemplate, RoleErrorsNameTemplateAndMessage) {
  const std::string e1 = error_of([] {
    render_chat(chat_template_by_name("llama-2"), {{"user", "a"}, {"user", "b"}});
  });
  EXPECT_NE(e1.find("llama-2: conversation roles must alternate"), std::string::npos) << e1;
  EXPECT_NE(e1.find("message 1 has role 'user'"), std::string::npos) << e1;
  const std::string e2 = error_of([] {
    render_chat(chat_template_by_name("mistral"), {{"user", "a"}, {"system", "b"}});
  });
  EXPECT_NE(e2.find("mistral: only user and assistant roles"), std::string::npos) << e2;
  const std::string e3 = error_of([] { render_chat(chat_template_by_name("chatml"), {}); });
  EXPECT_NE(e3.find("conversation is empty"), std::string::npos) << e3;
}

TEST(ChatTemplate, DetectsEachFamilyByMarkers) {
  EXPECT_EQ(detect_chat_template(kLlama3)->name, "llama-3");
  EXPECT_EQ(detect_chat_template(kLlama2)->name, "llama-2");
  EXPECT_EQ(detect_chat_template(kMistral)->name, "mistral");
  const auto qwen = detect_chat_template(kQwen2);
  EXPECT_EQ(qwen->name, "chatml");
  EXPECT_EQ(qwen->default_system, "You are a helpful assistant.");
  const auto plain = detect_chat_template(kChatmlPlain);
  EXPECT_EQ(plain->name, "chatml");
  EXPECT_FALSE(plain->default_system.has_value());
  EXPECT_EQ(detect_chat_template("{{ '### Instruction:\\n' }}{{ '### Response:\\n' }}")->name,
            "alpaca");
  EXPECT_FALSE(detect_chat_template("{{ messages }}").has_value());
  // Families we would render wrongly are refused, with the key to set.
  EXPECT_NE(error_of([] { detect_chat_template(kLlama31Fragment); }).find("Llama-3.1"),
            std::string::npos);
  EXPECT_NE(error_of([] { detect_chat_template(kMixtral); }).find("set model.chat_template"),
            std::string::npos);
}

TEST(ChatTemplate, ResolveAutoReadsTokenizerConfig) {
  const std::string dir = test::temp_dir("chat_auto");
  const std::string cfg = write_config(
      dir, {{"chat_template", kLlama3},
            {"bos_token", "<|begin_of_text|>"},
            {"eos_token", {{"__type", "AddedToken"}, {"content", "<|eot_id|>"}}}});
  const ChatTemplate t = resolve_chat_template("auto", cfg);
  EXPECT_EQ(t.name, "llama-3");
  EXPECT_EQ(t.bos_token, "<|begin_of_text|>");
  EXPECT_EQ(t.eos_token, "<|eot_id|>");

  // By name, bos/eos still come from the config; a null bos renders as "".
  const std::string cfg2 = write_config(dir, {{"bos_token", nullptr}, {"eos_token", "<|im_end|>"}});
  const ChatTemplate a = resolve_chat_template("alpaca", cfg2);
  EXPECT_EQ(a.bos_token, "");
  EXPECT_EQ(a.eos_token, "<|im_end|>");

  // A list of named templates: the "default" one.
  write_config(dir, {{"chat_template", {{{"name", "tool_use"}, {"template", kChatmlPlain}},
                                        {{"name", "default"}, {"template", kMistral}}}}});
  EXPECT_EQ(resolve_chat_template("auto", cfg).name, "mistral");

  // No chat_template in the config: chat_template.jinja next to it.
  write_config(dir, {{"eos_token", "</s>"}});
  std::ofstream(dir + "/chat_template.jinja") << kLlama2;
  EXPECT_EQ(resolve_chat_template("auto", cfg).name, "llama-2");
  std::filesystem::remove(dir + "/chat_template.jinja");

  const std::string e1 = error_of([&] { resolve_chat_template("auto", cfg); });
  EXPECT_NE(e1.find("tokenizer_config.json: no chat_template"), std::string::npos) << e1;
  write_config(dir, {{"chat_template", "{{ messages }}"}});
  const std::string e2 = error_of([&] { resolve_chat_template("auto", cfg); });
  EXPECT_NE(e2.find("cannot recognise its chat_template"), std::string::npos) << e2;
  const std::string e3 = error_of([] { resolve_chat_template("auto", ""); });
  EXPECT_NE(e3.find("no tokenizer_config.json was given"), std::string::npos) << e3;
}

TEST(ChatTemplate, SpecialTokensPerFamily) {
  EXPECT_EQ(chat_template_by_name("llama-3").special_tokens(),
            (std::vector<std::string>{"<|begin_of_text|>", "<|start_header_id|>",
                                      "<|end_header_id|>", "<|eot_id|>"}));
  EXPECT_EQ(chat_template_by_name("chatml").special_tokens(),
            (std::vector<std::string>{"<|im_start|>", "<|im_end|>"}));
  EXPECT_EQ(chat_template_by_name("mistral").special_tokens(),
            (std::vector<std::string>{"<s>", "</s>"}));
}

TEST(ChatTemplate, PythonStripMatchesStrIsspace) {
  EXPECT_EQ(python_strip("  a b \n\t"), "a b");
  EXPECT_EQ(python_strip("\u3000\u00a0x\u2028\u2029"), "x");
  EXPECT_EQ(python_strip("\x1c\x1f\x0b\x0c" "y" "\xC2\x85"), "y");  // U+0085 NEL
  EXPECT_EQ(python_strip("y\x85"), "y\x85");  // a stray byte is not a code point: kept
  EXPECT_EQ(python_strip("\u200bz\u200b"), "\u200bz\u200b");  // zero width space is not space
  EXPECT_EQ(python_strip("   "), "");
  EXPECT_EQ(python_strip(""), "");
  EXPECT_EQ(python_strip(" 日本 "), "日本");
}

}  // namespace
}  // namespace ftune
