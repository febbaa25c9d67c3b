// Unicode Normalization Form C (UAX #15) for the tokenizer's NFC normalizer (Qwen2), from the
// generated tables in tokenizer_nfc_table.h: full canonical decomposition (Hangul
// algorithmically), canonical ordering of combining marks, then canonical composition.
// Unicode 9.0 data, as HF `tokenizers` uses: a mark added in Unicode 10 or later counts as a
// starter (class 0) and is neither reordered nor composed with.
#pragma once
#include <string>
#include <string_view>

namespace ftune::tok {

// NFC of valid UTF-8 text. ASCII-only text is returned unchanged without table lookups.
std::string nfc_normalize(std::string_view text);

}  // namespace ftune::tok
