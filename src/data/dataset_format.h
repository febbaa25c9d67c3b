// Dataset files and record formats (FORMATS.md §9): JSON arrays and JSONL files of alpaca,
// sharegpt, messages, text and prompt/completion records, with the format detected from the
// keys of the first record unless given. Records become SourceExamples: a conversation
// (sharegpt, messages) to render through a chat template, or a prompt and a response text.
//
// Every error is one line naming the file and the line the record starts on:
//   "<file>:<line>: invalid JSON: <what>", "<file>:<line>: record has no 'output'",
//   "<file>: dataset is empty", "unknown dataset format 'x' (expected ...)".
#pragma once
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "data/chat_template.h"

namespace ftune {

enum class DatasetFormat { alpaca, sharegpt, messages, text, prompt_completion };

// "alpaca", "sharegpt", "messages", "text", "prompt_completion".
std::string_view format_name(DatasetFormat f);
// nullopt for "auto" (or ""); throws for an unknown name, listing the known ones.
std::optional<DatasetFormat> parse_format_name(std::string_view name);
// Conversation formats render through a chat template; the others do not.
bool is_conversation_format(DatasetFormat f);

// One record as read, with where it came from ("<file>:<line>") for error messages. Keys keep
// their file order: templates write tool arguments and schemas with tojson, which must give
// the text Python's json.dumps gives for the same record.
struct DatasetRecord {
  nlohmann::ordered_json value;
  std::string origin;
};

// Parses dataset bytes. A text whose first non-blank character is '[' is a JSON array of
// records (each record's origin is the line its value starts on); anything else is JSONL, one
// record per non-blank line. `name` is the file name used in messages. Throws on malformed
// JSON and on an empty dataset.
std::vector<DatasetRecord> parse_dataset_text(std::string_view bytes, const std::string& name);
std::vector<DatasetRecord> read_dataset_file(const std::string& path);

// Format from the first record's keys: "conversations" -> sharegpt, "messages" -> messages,
// "instruction" -> alpaca, "prompt" -> prompt_completion, "text" -> text. Throws naming the
// record and its keys when none matches.
DatasetFormat detect_format(const DatasetRecord& first);

// A record in model terms.
struct SourceExample {
  bool is_conversation = false;
  Conversation conversation;  // sharegpt, messages (sharegpt's human/gpt mapped to user/assistant)
  ChatArgs chat_args;         // the record's "tools" and "documents", for the template
  std::string prompt;         // alpaca (FORMATS.md §9 prompt), prompt_completion; "" for text
  std::string response;       // alpaca output, completion, or the whole text
  std::string origin;
};

// Converts one record; throws "<origin>: record has no '<key>'", "<origin>: '<key>' is not a
// string (...)", unknown sharegpt roles, an empty conversation.
//
// Conversation messages (HF / OpenAI style): "role" any non-empty string (sharegpt "from":
// system, human/user, gpt/assistant, tool, ipython, and LLaMA-Factory's function_call and
// observation); "content" a string, text parts joined, or null / left out when the message has
// a non-empty "tool_calls"; every other key (tool_calls, tool_call_id,
// name, reasoning_content, thinking, ...) goes to the template unchanged. Types the templates
// rely on are checked, the error naming the key: tool_calls a list of objects (function an
// object, function.name a string, function.arguments an object or a string), tool_call_id /
// name / reasoning_content / thinking strings (or null). Record keys "tools" and "documents"
// (lists of objects, or null) become the template's tools / documents.
SourceExample convert_record(const DatasetRecord& record, DatasetFormat format);

// The alpaca prompt of FORMATS.md §9 up to and including "### Response:\n" (the with-input
// form when `input` is non-empty).
std::string alpaca_prompt(std::string_view instruction, std::string_view input);

}  // namespace ftune
