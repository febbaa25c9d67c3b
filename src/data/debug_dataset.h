// The built-in debug dataset used when data.train is empty: 256 Llama-3-Instruct-style
// conversations in messages format (JSONL), generated deterministically from a fixed seed.
// The tasks are ones a tiny model can pick up quickly so the loss falls clearly: small
// additions and subtractions, capitals from a fixed table, repeating and reversing words,
// spelling words backwards, upper-casing, continuing arithmetic sequences. About a quarter
// have a system message; a fifth have two user/assistant rounds.
// assets/debug_dataset/conversations.jsonl is an exported copy (tests/data/test_debug_dataset
// checks they agree; FTUNE_REGENERATE_ASSETS=1 rewrites it).
#pragma once
#include <string>

namespace ftune {

// Name used as the file name in messages and stats for the built-in dataset.
constexpr const char* kBuiltinDebugDatasetName = "<builtin debug dataset>";

std::string builtin_debug_dataset_jsonl();

}  // namespace ftune
