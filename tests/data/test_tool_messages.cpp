// Dataset records with tool calls, tool results, reasoning and a tools list, through the data
// path (read_dataset_file -> convert_record -> render_example -> tokenize_rendered) and real
// tool-capable templates (Qwen3, Llama-3.2, Mistral v0.3 fixtures). The expected texts and
// {% generation %} spans in tests/fixtures/tool_messages/expected.json are jinja2's, written by
// `tests/py/test_tool_messages.py --write-fixture` (transformers' apply_chat_template
// conventions); the official Qwen3 and Llama-3.2 templates must train exactly what their
// {% generation %}-marked twins mark.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/batch.h"
#include "core/error.h"
#include "data/chat_template.h"
#include "data/data_files.h"
#include "data/dataset_format.h"
#include "data/tokenize_example.h"
#include "data/tokenizer_encoder.h"
#include "io/tokenizer.h"
#include "support/test_support.h"

namespace ftune {
namespace {

const std::string kFixtures = std::string(FTUNE_TEST_DATA) + "/fixtures/";

const nlohmann::json& expected() {
  static const nlohmann::json e =
      nlohmann::json::parse(read_file_bytes(kFixtures + "tool_messages/expected.json"));
  return e;
}

const std::vector<SourceExample>& examples() {
  static const std::vector<SourceExample> out = [] {
    std::vector<SourceExample> v;
    const auto recs = read_dataset_file(kFixtures + "tool_messages/records.jsonl");
    for (const auto& r : recs) v.push_back(convert_record(r, detect_format(r)));
    return v;
  }();
  return out;
}

const nlohmann::json& entry(const std::string& fixture) {
  for (const auto& t : expected()["templates"]) {
    if (t["template"] == fixture) return t;
  }
  throw std::runtime_error("no expected renderings for " + fixture);
}

ChatTemplate load(const std::string& fixture) {
  const nlohmann::json& e = entry(fixture);
  ChatTemplate t = make_chat_template(
      fixture, read_file_bytes(kFixtures + "chat_templates/" + fixture));
  t.bos_token = e["bos_token"].is_null() ? "" : e["bos_token"].get<std::string>();
  t.eos_token = e["eos_token"].get<std::string>();
  t.date = expected()["date"].get<std::string>();
  return t;
}

std::vector<std::string> trained(const RenderedExample& r) {
  std::vector<std::string> out;
  for (const auto& s : r.segments) {
    if (s.trainable) out.push_back(s.text);
  }
  return out;
}

// Renders every record with `fixture` and compares with jinja2's text; the trained spans with
// the marks of `marked_by` (the template itself or its {% generation %} twin).
void check_template(const std::string& fixture, const std::string& marked_by) {
  const ChatTemplate t = load(fixture);
  const nlohmann::json& want = entry(fixture)["renderings"];
  const nlohmann::json& marks = entry(marked_by)["renderings"];
  ASSERT_EQ(want.size(), examples().size());
  int rendered = 0;
  for (size_t k = 0; k < examples().size(); ++k) {
    const SourceExample& src = examples()[k];
    if (want[k].contains("error")) {
      EXPECT_THROW(render_example(src, &t, true), Error) << fixture << " " << src.origin;
      continue;
    }
    ++rendered;
    const RenderedExample r = render_example(src, &t, true);
    EXPECT_EQ(join_segments(r.segments), want[k]["text"].get<std::string>())
        << fixture << " " << src.origin;
    EXPECT_EQ(trained(r), marks[k]["marked"].get<std::vector<std::string>>())
        << fixture << " " << src.origin;
    // Without response-only masking the whole text is one trained segment.
    const RenderedExample all = render_example(src, &t, false);
    ASSERT_EQ(all.segments.size(), 1u);
    EXPECT_TRUE(all.segments[0].trainable);
  }
  EXPECT_GE(rendered, 6) << fixture;
}

TEST(ToolMessages, RecordsKeepTheirToolKeys) {
  const auto& ex = examples();
  ASSERT_EQ(ex.size(), 9u);
  // Record 2 (line 2): the calling turn has "content": null; record 3: no content key.
  EXPECT_EQ(ex[1].origin, kFixtures + "tool_messages/records.jsonl:2");
  EXPECT_EQ(ex[1].conversation[1].content_kind, ContentKind::null);
  EXPECT_EQ(ex[2].conversation[1].content_kind, ContentKind::absent);
  EXPECT_EQ(ex[0].conversation[1].content_kind, ContentKind::text);
  const auto& call = ex[0].conversation[1].extra["tool_calls"][0];
  EXPECT_EQ(call["function"]["name"], "get_weather");
  // Keys keep the record's order (tojson writes them so).
  EXPECT_EQ(call["function"]["arguments"].dump(), R"({"unit":"celsius","city":"Paris"})");
  EXPECT_EQ(ex[0].conversation[2].role, "tool");
  EXPECT_EQ(ex[0].conversation[2].extra["tool_call_id"], "call00001");
  EXPECT_EQ(ex[3].conversation[4].extra["reasoning_content"], "The tool said sunny.");
  EXPECT_EQ(ex[6].conversation[2].role, "ipython");
  ASSERT_TRUE(ex[1].chat_args.tools.is_array());
  EXPECT_EQ(ex[1].chat_args.tools.size(), 2u);
  EXPECT_TRUE(ex[7].chat_args.tools.is_null());
  EXPECT_EQ(ex[7].chat_args.documents[0]["title"], "Paris");
}

TEST(ToolMessages, Qwen3MatchesJinja2AndTrainsWhatItsMarkedTwinMarks) {
  check_template("qwen3-generation.jinja", "qwen3-generation.jinja");
  check_template("qwen3.jinja", "qwen3-generation.jinja");
}

TEST(ToolMessages, Llama32MatchesJinja2AndTrainsWhatItsMarkedTwinMarks) {
  check_template("llama-3.2-generation.jinja", "llama-3.2-generation.jinja");
  check_template("llama-3.2.jinja", "llama-3.2-generation.jinja");
}

TEST(ToolMessages, MistralV03TrainsCallsNotResults) {
  const ChatTemplate t = load("mistral-v0.3.jinja");
  const nlohmann::json& want = entry("mistral-v0.3.jinja")["renderings"];
  for (size_t k = 0; k < examples().size(); ++k) {
    const SourceExample& src = examples()[k];
    if (want[k].contains("error")) continue;
    const RenderedExample r = render_example(src, &t, true);
    ASSERT_EQ(join_segments(r.segments), want[k]["text"].get<std::string>()) << src.origin;
    const auto spans = trained(r);
    size_t assistants = 0;
    for (const auto& m : src.conversation) assistants += m.role == "assistant";
    EXPECT_EQ(spans.size(), assistants) << src.origin;
    for (const auto& s : spans) {
      EXPECT_EQ(s.find("[TOOL_RESULTS]"), std::string::npos) << s;
      EXPECT_EQ(s.find("[INST]"), std::string::npos) << s;
      EXPECT_EQ(s.substr(s.size() - 4), "</s>") << s;
    }
    // Each calling turn trains "[TOOL_CALLS] [...]</s>" whole.
    if (src.conversation[1].extra.contains("tool_calls")) {
      EXPECT_EQ(spans[0].rfind("[TOOL_CALLS] [{\"name\": \"", 0), 0u) << spans[0];
    }
  }
}

TEST(ToolMessages, Llama32LabelsTrainCallsAndAnswersOnly) {
  const Tokenizer tok =
      Tokenizer::from_file(std::string(FTUNE_TEST_DATA) + "/../assets/tokenizer/tokenizer.json");
  const TokenizerEncoder enc(tok, "");
  const ChatTemplate t = load("llama-3.2.jinja");
  const nlohmann::json& marks = entry("llama-3.2-generation.jinja")["renderings"];
  const SourceExample& src = examples()[3];  // system, tool round with reasoning, answer
  const TokenizedExample ex = tokenize_rendered(enc, render_example(src, &t, true), std::nullopt,
                                                std::nullopt);
  std::vector<std::string> runs;
  std::vector<int32_t> run;
  for (size_t i = 0; i <= ex.ids.size(); ++i) {
    if (i < ex.ids.size() && ex.labels[i] != kIgnoreIndex) {
      run.push_back(ex.ids[i]);
    } else if (!run.empty()) {
      runs.push_back(tok.decode(run));
      run.clear();
    }
  }
  EXPECT_EQ(runs, marks[3]["marked"].get<std::vector<std::string>>());
  EXPECT_EQ(runs.size(), 2u);
}

TEST(ToolMessages, PresetsRefuseWhatTheyCannotRenderNamingFileLineAndRole) {
  const auto recs = parse_dataset_text(
      R"({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
{"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "r"}]}
{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": null, "tool_calls": [{"function": {"name": "f", "arguments": {}}}]}]}
{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "reasoning_content": "r"}]}
{"tools": [{"type": "function"}], "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
)",
      "p.jsonl");
  auto error_with = [&](const char* preset, size_t k) -> std::string {
    const ChatTemplate t = chat_template_by_name(preset);
    try {
      render_example(convert_record(recs[k], DatasetFormat::messages), &t, true);
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  };
  const std::string tail =
      ": it writes only system, user and assistant text; use a template that supports it "
      "(model.chat_template: auto with a model whose tokenizer_config.json has one)";
  for (const char* preset : {"llama-3", "llama-2", "mistral", "chatml", "alpaca"}) {
    EXPECT_EQ(error_with(preset, 0), "") << preset;  // plain conversations render
    EXPECT_EQ(error_with(preset, 2), fmt::format("p.jsonl:3: chat template {} (a built-in preset) "
                                                 "cannot render a message without string "
                                                 "'content' (messages[1]){}", preset, tail));
    EXPECT_EQ(error_with(preset, 3), fmt::format("p.jsonl:4: chat template {} (a built-in preset) "
                                                 "cannot render 'reasoning_content' (messages[1]){}",
                                                 preset, tail));
    EXPECT_EQ(error_with(preset, 4), fmt::format("p.jsonl:5: chat template {} (a built-in preset) "
                                                 "cannot render 'tools'{}", preset, tail));
  }
  // Role "tool": llama-3 and chatml write any role into their header (as the official
  // templates do); the others cannot render it.
  EXPECT_EQ(error_with("llama-3", 1), "");
  EXPECT_EQ(error_with("chatml", 1), "");
  for (const char* preset : {"llama-2", "mistral", "alpaca"}) {
    EXPECT_EQ(error_with(preset, 1), fmt::format("p.jsonl:2: chat template {} (a built-in preset) "
                                                 "cannot render role 'tool' (messages[1]){}",
                                                 preset, tail));
  }
  // The same source found by "auto" is the preset, with the same limits; any other source
  // is not checked.
  EXPECT_TRUE(make_chat_template("x", chat_template_by_name("chatml").source).is_preset);
  EXPECT_FALSE(load("qwen3.jinja").is_preset);
}

}  // namespace
}  // namespace ftune
