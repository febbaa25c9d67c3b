// Dataset files (JSON array, JSONL), format detection, record conversion and the one-line
// errors for bad input.
#include <gtest/gtest.h>

#include <fstream>

#include "core/error.h"
#include "data/dataset_format.h"
#include "support/test_support.h"

namespace ftune {
namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

SourceExample first_example(const std::string& text, const char* format = nullptr) {
  const auto recs = parse_dataset_text(text, "d.jsonl");
  const DatasetFormat f = format ? *parse_format_name(format) : detect_format(recs[0]);
  return convert_record(recs[0], f);
}

TEST(DatasetFormat, NamesRoundTripAndUnknownNameIsAnError) {
  for (auto f : {DatasetFormat::alpaca, DatasetFormat::sharegpt, DatasetFormat::messages,
                 DatasetFormat::text, DatasetFormat::prompt_completion}) {
    EXPECT_EQ(parse_format_name(format_name(f)), f);
  }
  EXPECT_FALSE(parse_format_name("auto").has_value());
  EXPECT_EQ(error_of([] { parse_format_name("csv"); }),
            "unknown dataset format 'csv' (expected auto, alpaca, sharegpt, messages, text, "
            "prompt_completion)");
}

TEST(DatasetFormat, AlpacaWithAndWithoutInput) {
  const auto recs = parse_dataset_text(
      R"({"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}
{"instruction": "Say hi.", "input": "", "output": "hi"}
{"instruction": "Say bye.", "output": "bye"}
)",
      "a.jsonl");
  ASSERT_EQ(recs.size(), 3u);
  ASSERT_EQ(detect_format(recs[0]), DatasetFormat::alpaca);
  const auto with = convert_record(recs[0], DatasetFormat::alpaca);
  EXPECT_FALSE(with.is_conversation);
  EXPECT_EQ(with.prompt,
            "Below is an instruction that describes a task, paired with an input that provides "
            "further context. Write a response that appropriately completes the request.\n\n"
            "### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3\n\n### Response:\n");
  EXPECT_EQ(with.response, "5");
  const std::string no_input =
      "Below is an instruction that describes a task. Write a response that appropriately "
      "completes the request.\n\n### Instruction:\nSay hi.\n\n### Response:\n";
  EXPECT_EQ(convert_record(recs[1], DatasetFormat::alpaca).prompt, no_input);
  EXPECT_EQ(convert_record(recs[2], DatasetFormat::alpaca).response, "bye");
  EXPECT_EQ(recs[2].origin, "a.jsonl:3");
}

TEST(DatasetFormat, SharegptMapsRoles) {
  const auto ex = first_example(
      R"({"conversations": [{"from": "system", "value": "S"}, {"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]})");
  ASSERT_TRUE(ex.is_conversation);
  ASSERT_EQ(ex.conversation.size(), 3u);
  EXPECT_EQ(ex.conversation[0].role, "system");
  EXPECT_EQ(ex.conversation[1].role, "user");
  EXPECT_EQ(ex.conversation[1].content, "Q");
  EXPECT_EQ(ex.conversation[2].role, "assistant");
  EXPECT_EQ(ex.conversation[2].content, "A");
}

TEST(DatasetFormat, SharegptFunctionCallsAndObservationsBecomeToolTurns) {
  // LLaMA-Factory's sharegpt: `tools` a JSON string, function_call / observation turns.
  const auto ex = first_example(
      R"({"conversations": [{"from": "human", "value": "Weather in Paris?"},)"
      R"( {"from": "function_call", "value": "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}"},)"
      R"( {"from": "observation", "value": "sunny"}, {"from": "gpt", "value": "Sunny."}],)"
      R"( "tools": "[{\"name\": \"get_weather\", \"parameters\": {}}]"})");
  ASSERT_EQ(ex.conversation.size(), 4u);
  EXPECT_EQ(ex.conversation[1].role, "assistant");
  EXPECT_EQ(ex.conversation[1].content_kind, ContentKind::absent);
  EXPECT_EQ(ex.conversation[1].extra["tool_calls"].dump(),
            R"([{"type":"function","function":{"name":"get_weather","arguments":{"city":"Paris"}}}])");
  EXPECT_EQ(ex.conversation[2].role, "tool");
  EXPECT_EQ(ex.conversation[2].content, "sunny");
  EXPECT_EQ(ex.chat_args.tools.dump(), R"([{"name":"get_weather","parameters":{}}])");
  // A list of calls in one turn.
  const auto two = first_example(
      R"({"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value":)"
      R"( "[{\"name\": \"a\", \"arguments\": {}}, {\"name\": \"b\", \"arguments\": \"{}\"}]"}]})");
  EXPECT_EQ(two.conversation[1].extra["tool_calls"].size(), 2u);
  // Bad input: one line naming file, line and turn.
  EXPECT_EQ(error_of([] {
              first_example(R"j({"conversations": [{"from": "function_call", "value": "get_weather(Paris)"}]})j");
            }),
            "d.jsonl:1: conversations[0] ('function_call') 'value' is not JSON: {\"name\": ..., "
            "\"arguments\": {...}} expected");
  EXPECT_EQ(error_of([] {
              first_example(R"({"conversations": [{"from": "function_call", "value": "{\"name\": 3}"}]})");
            }),
            "d.jsonl:1: 'conversations[0].value[0].function.name' is not a string (it is number)");
  EXPECT_EQ(error_of([] {
              first_example(R"({"conversations": [{"from": "human", "value": "q"}], "tools": "{}"})");
            }),
            "d.jsonl:1: 'tools' holds JSON that is not a list (it is object)");
}

TEST(DatasetFormat, MessagesTextAndPromptCompletion) {
  const auto m = first_example(
      R"({"messages": [{"role": "user", "content": "héllo"}, {"role": "assistant", "content": "wörld"}]})");
  ASSERT_TRUE(m.is_conversation);
  EXPECT_EQ(m.conversation[0].content, "héllo");
  EXPECT_EQ(m.conversation[1].role, "assistant");

  const auto t = first_example(R"({"text": "Once upon a time"})");
  EXPECT_FALSE(t.is_conversation);
  EXPECT_EQ(t.prompt, "");
  EXPECT_EQ(t.response, "Once upon a time");

  const auto pc = first_example(R"({"prompt": "2+2=", "completion": "4"})");
  EXPECT_EQ(pc.prompt, "2+2=");
  EXPECT_EQ(pc.response, "4");
}

TEST(DatasetFormat, ContentPartsJoinTheirTextAndRefuseOtherKinds) {
  const auto m = first_example(
      R"({"messages": [{"role": "user", "content": [{"type": "text", "text": "Describe "},)"
      R"( {"type": "text", "text": "this."}]}, {"role": "assistant", "content": "A cat."}]})");
  EXPECT_EQ(m.conversation[0].content, "Describe this.");
  EXPECT_EQ(m.conversation[1].content, "A cat.");
  EXPECT_EQ(m.conversation[0].extra.size(), 0u);  // the parts do not reach the template again
  EXPECT_EQ(error_of([] {
              first_example(R"({"messages": [{"role": "user", "content": [{"type": "image_url",)"
                            R"( "image_url": {"url": "x.png"}}]}]})");
            }),
            "d.jsonl:1: messages[0].content[0] is a 'image_url' part; ftune trains text models, "
            "only 'text' parts can be used");
  EXPECT_EQ(error_of([] {
              first_example(R"({"messages": [{"role": "user", "content": ["hi"]}]})");
            }),
            "d.jsonl:1: messages[0].content[0] is not an object (it is string); content parts "
            "look like {\"type\": \"text\", \"text\": \"...\"}");
  EXPECT_EQ(error_of([] {
              first_example(R"({"messages": [{"role": "user", "content": [{"type": "text"}]}]})");
            }),
            "d.jsonl:1: messages[0].content[0] has no string 'text'");
}

TEST(DatasetFormat, MessagesCarryToolCallsReasoningAndTools) {
  const auto ex = first_example(
      R"({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],)"
      R"( "documents": null, "messages": [)"
      R"({"role": "user", "content": "q", "weight": 0},)"
      R"({"role": "assistant", "content": null, "reasoning_content": "why",)"
      R"( "tool_calls": [{"type": "function", "id": "c1", "function": {"name": "f", "arguments": {"z": 1, "a": 2}}}]},)"
      R"({"role": "tool", "content": "42", "tool_call_id": "c1", "name": "f"},)"
      R"({"role": "assistant", "tool_calls": [{"name": "f", "arguments": "{\"a\": 1}"}]},)"
      R"({"role": "ipython", "content": "43"}, {"role": "observer", "content": "any role"},)"
      R"({"role": "assistant", "content": "done", "tool_calls": null, "thinking": null}]})");
  ASSERT_TRUE(ex.is_conversation);
  const Conversation& c = ex.conversation;
  ASSERT_EQ(c.size(), 7u);
  EXPECT_EQ(c[0].extra.dump(), R"({"weight":0})");  // unknown keys pass through
  EXPECT_EQ(c[1].content_kind, ContentKind::null);
  EXPECT_EQ(c[1].extra["reasoning_content"], "why");
  // Keys keep the file's order: "z" before "a", as json.loads + tojson would write them.
  EXPECT_EQ(c[1].extra["tool_calls"][0]["function"]["arguments"].dump(), R"({"z":1,"a":2})");
  EXPECT_EQ(c[2].role, "tool");
  EXPECT_EQ(c[2].content, "42");
  EXPECT_EQ(c[2].extra.dump(), R"({"tool_call_id":"c1","name":"f"})");
  EXPECT_EQ(c[3].content_kind, ContentKind::absent);
  EXPECT_EQ(c[4].role, "ipython");
  EXPECT_EQ(c[5].role, "observer");
  EXPECT_EQ(c[6].content, "done");
  EXPECT_TRUE(c[6].extra["tool_calls"].is_null());
  EXPECT_EQ(ex.chat_args.tools[0]["function"]["name"], "f");
  EXPECT_TRUE(ex.chat_args.documents.is_null());

  // sharegpt: tool results by name; other keys pass too.
  const auto sg = first_example(
      R"({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"},)"
      R"( {"from": "tool", "value": "r", "name": "f"}], "tools": []})");
  EXPECT_EQ(sg.conversation[2].role, "tool");
  EXPECT_EQ(sg.conversation[2].extra["name"], "f");
  EXPECT_TRUE(sg.chat_args.tools.is_array());
}

TEST(DatasetFormat, ToolKeysWithWrongTypesNameFileLineAndKey) {
  auto convert = [](const std::string& line) {
    const auto recs = parse_dataset_text("{\"text\": \"first\"}\n" + line, "t.jsonl");
    convert_record(recs[1], DatasetFormat::messages);
  };
  const std::string user = R"({"role": "user", "content": "q"}, )";
  EXPECT_EQ(error_of([&] {
              convert(R"({"messages": [)" + user + R"({"role": "assistant", "tool_calls": {"name": "f"}}]})");
            }),
            "t.jsonl:2: 'messages[1].tool_calls' is not a list (it is object)");
  EXPECT_EQ(error_of([&] {
              convert(R"({"messages": [)" + user + R"({"role": "assistant", "tool_calls": ["f"]}]})");
            }),
            "t.jsonl:2: 'messages[1].tool_calls[0]' is not an object (it is string)");
  EXPECT_EQ(error_of([&] {
              convert(R"({"messages": [)" + user +
                      R"({"role": "assistant", "tool_calls": [{"function": {"name": 7}}]}]})");
            }),
            "t.jsonl:2: 'messages[1].tool_calls[0].function.name' is not a string (it is number)");
  EXPECT_EQ(error_of([&] {
              convert(R"({"messages": [)" + user +
                      R"({"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": [1]}}]}]})");
            }),
            "t.jsonl:2: 'messages[1].tool_calls[0].function.arguments' is not an object or a "
            "string (it is array)");
  EXPECT_EQ(error_of([&] {
              convert(R"({"messages": [)" + user + R"({"role": "tool", "content": "r", "tool_call_id": 3}]})");
            }),
            "t.jsonl:2: 'messages[1].tool_call_id' is not a string (it is number)");
  EXPECT_EQ(error_of([&] {
              convert(R"({"messages": [)" + user +
                      R"({"role": "assistant", "content": "a", "reasoning_content": ["x"]}]})");
            }),
            "t.jsonl:2: 'messages[1].reasoning_content' is not a string (it is array)");
  // Content may be missing or null only beside tool calls.
  EXPECT_EQ(error_of([&] { convert(R"({"messages": [{"role": "assistant", "content": null}]})"); }),
            "t.jsonl:2: messages[0] 'content' is not a string (it is null); only a message with "
            "tool_calls may have null");
  EXPECT_EQ(error_of([&] {
              convert(R"({"messages": [{"role": "assistant", "tool_calls": []}]})");
            }),
            "t.jsonl:2: messages[0] has no 'content' (only a message with tool_calls may leave "
            "it out)");
  EXPECT_EQ(error_of([&] {
              convert(R"({"messages": [{"role": "user", "content": [{"type": "text"}]}]})");
            }),
            "t.jsonl:2: messages[0].content[0] has no string 'text'");
  // Record-level tools and documents.
  EXPECT_EQ(error_of([&] { convert(R"({"tools": "[{}]", "messages": [)" + user + R"({"role": "assistant", "content": "a"}]})"); }),
            "t.jsonl:2: 'tools' is not a list (it is string); write it as a JSON list of objects");
  EXPECT_EQ(error_of([&] { convert(R"({"tools": [1], "messages": [)" + user + R"({"role": "assistant", "content": "a"}]})"); }),
            "t.jsonl:2: 'tools[0]' is not an object (it is number)");
  EXPECT_EQ(error_of([&] { convert(R"({"documents": {}, "messages": [)" + user + R"({"role": "assistant", "content": "a"}]})"); }),
            "t.jsonl:2: 'documents' is not a list (it is object); write it as a JSON list of "
            "objects");
}

TEST(DatasetFormat, DetectionFollowsFirstRecordKeys) {
  auto detect = [](const std::string& line) {
    return detect_format(parse_dataset_text(line, "x.jsonl")[0]);
  };
  EXPECT_EQ(detect(R"({"conversations": []})"), DatasetFormat::sharegpt);
  EXPECT_EQ(detect(R"({"messages": [], "text": "x"})"), DatasetFormat::messages);
  EXPECT_EQ(detect(R"({"instruction": "i", "output": "o"})"), DatasetFormat::alpaca);
  EXPECT_EQ(detect(R"({"prompt": "p", "completion": "c"})"), DatasetFormat::prompt_completion);
  EXPECT_EQ(detect(R"({"text": "t"})"), DatasetFormat::text);
  EXPECT_EQ(error_of([&] { detect("\n{\"question\": 1, \"answer\": 2}"); }),
            "x.jsonl:2: cannot detect the dataset format from the record's keys (answer, "
            "question); set data.format to one of alpaca, sharegpt, messages, text, "
            "prompt_completion");
}

TEST(DatasetFormat, JsonArrayRecordsKnowTheirLines) {
  const std::string text =
      "[\n  {\"text\": \"a\"},\n  {\"text\": \"[b], {c}\"},\n\n  {\"instruction\": \"x\",\n"
      "   \"text\": \"\\\"q\\\"\"}\n]\n";
  const auto recs = parse_dataset_text(text, "arr.json");
  ASSERT_EQ(recs.size(), 3u);
  EXPECT_EQ(recs[0].origin, "arr.json:2");
  EXPECT_EQ(recs[1].origin, "arr.json:3");
  EXPECT_EQ(recs[2].origin, "arr.json:5");
  EXPECT_EQ(error_of([&] { convert_record(recs[2], DatasetFormat::alpaca); }),
            "arr.json:5: record has no 'output'");
}

TEST(DatasetFormat, FilesAreReadFromDisk) {
  const std::string dir = test::temp_dir("fmt_files");
  std::ofstream(dir + "/d.json") << "\xEF\xBB\xBF[{\"text\": \"bom\"}]";
  const auto recs = read_dataset_file(dir + "/d.json");
  ASSERT_EQ(recs.size(), 1u);
  EXPECT_EQ(recs[0].value["text"], "bom");
  EXPECT_EQ(recs[0].origin, dir + "/d.json:1");
  const std::string e = error_of([&] { read_dataset_file(dir + "/missing.jsonl"); });
  EXPECT_EQ(e, "cannot read " + dir + "/missing.jsonl: no such file");
}

TEST(DatasetFormat, BadInputErrorsAreOneLineWithFileAndLine) {
  // Malformed JSONL line: file:line and what is wrong.
  const std::string e1 = error_of([] {
    parse_dataset_text("{\"text\": \"ok\"}\n\n{\"text\": oops}\n", "bad.jsonl");
  });
  EXPECT_EQ(e1.rfind("bad.jsonl:3: invalid JSON: column ", 0), 0u) << e1;
  EXPECT_NE(e1.find("syntax error"), std::string::npos) << e1;
  EXPECT_EQ(e1.find('\n'), std::string::npos) << e1;

  // Malformed JSON array: the line of the error in the file.
  const std::string e2 = error_of([] {
    parse_dataset_text("[\n {\"text\": \"a\"},\n {\"text\": \"b\",}\n]", "bad.json");
  });
  EXPECT_EQ(e2.rfind("bad.json:3: invalid JSON: column ", 0), 0u) << e2;

  // Missing and mistyped fields.
  auto convert = [](const std::string& line, DatasetFormat f) {
    const auto recs = parse_dataset_text("{\"text\": \"first\"}\n" + line, "r.jsonl");
    convert_record(recs[1], f);
  };
  EXPECT_EQ(error_of([&] { convert(R"({"instruction": "i", "input": ""})", DatasetFormat::alpaca); }),
            "r.jsonl:2: record has no 'output'");
  EXPECT_EQ(error_of([&] { convert(R"({"instruction": "i", "output": 3})", DatasetFormat::alpaca); }),
            "r.jsonl:2: record 'output' is not a string (it is number)");
  EXPECT_EQ(error_of([&] { convert(R"({"prompt": "p"})", DatasetFormat::prompt_completion); }),
            "r.jsonl:2: record has no 'completion'");
  EXPECT_EQ(error_of([&] { convert(R"({"body": "p"})", DatasetFormat::text); }),
            "r.jsonl:2: record has no 'text'");
  EXPECT_EQ(error_of([&] { convert(R"({"messages": []})", DatasetFormat::messages); }),
            "r.jsonl:2: 'messages' is an empty list");
  EXPECT_EQ(error_of([&] {
              convert(R"({"messages": [{"role": "user"}]})", DatasetFormat::messages);
            }),
            "r.jsonl:2: messages[0] has no 'content' (only a message with tool_calls may leave "
            "it out)");
  EXPECT_EQ(error_of([&] {
              convert(R"({"messages": [{"role": "", "content": "x"}]})", DatasetFormat::messages);
            }),
            "r.jsonl:2: messages[0] has an empty role");
  EXPECT_EQ(error_of([&] {
              convert(R"({"conversations": [{"from": "bing", "value": "x"}]})",
                      DatasetFormat::sharegpt);
            }),
            "r.jsonl:2: conversations[0] has unknown from 'bing' (expected system, human, gpt, "
            "tool, ipython, function_call, observation)");
  EXPECT_EQ(error_of([&] { convert("[1, 2]", DatasetFormat::text); }),
            "r.jsonl:2: record is not a JSON object");

  // Empty dataset (nothing but blank lines).
  EXPECT_EQ(error_of([] { parse_dataset_text("\n  \n", "empty.jsonl"); }),
            "empty.jsonl: dataset is empty");
  EXPECT_EQ(error_of([] { parse_dataset_text(" [ ] ", "empty.json"); }),
            "empty.json: dataset is empty");
}

}  // namespace
}  // namespace ftune
