// Limits on untrusted JSON before it is parsed: nlohmann's parser is iterative, but copying,
// comparing and dumping a value recurse once per nesting level, so a header or dataset line of
// a million '[' would overflow the stack long after parsing succeeded. Every JSON text ftune
// reads (safetensors headers, config.json, tokenizer.json, adapter_config.json,
// trainer_state.json, tokenizer_config.json, dataset records) goes through this check first.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

namespace ftune {

// Deeper than any real file (tokenizer.json nests about 6 levels), far below what overflows.
inline constexpr int kMaxJsonDepth = 128;

// Byte offset of the bracket that opens nesting level max_depth + 1, or npos when the text
// stays within max_depth. Brackets inside strings (with escapes) are not counted; the text need
// not be valid JSON.
size_t json_nesting_overflow(std::string_view text, int max_depth = kMaxJsonDepth);

// Throws ftune::Error "<origin>: line L, column C: JSON nested deeper than N levels" when the
// text nests deeper than max_depth.
void check_json_nesting(std::string_view text, const std::string& origin,
                        int max_depth = kMaxJsonDepth);

}  // namespace ftune
