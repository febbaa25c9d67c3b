// Incremental detokenization for streaming generated text: tokens arrive one at a time and the
// text they add is printed as soon as it is final. A byte-level token may end inside a UTF-8
// character (and a byte-fallback token is a single byte), which decodes to U+FFFD until the
// rest arrives, so text is held back while the decoded tail ends in U+FFFD. The new text is
// the difference between decoding the ids from a recent offset with and without the new ones
// (decoding from an earlier token keeps SentencePiece's leading-space handling consistent).
// The concatenation of everything put() and finish() return equals
// tokenizer.decode(all ids, skip_special_tokens) (tests/unit/test_tokenizer.cpp).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "io/tokenizer.h"

namespace ftune {

class TextStreamer {
 public:
  explicit TextStreamer(const Tokenizer& tok, bool skip_special_tokens = true)
      : tok_(tok), skip_special_(skip_special_tokens) {}
  // Adds a token; returns the text that became final ("" while a character is incomplete).
  std::string put(int32_t id);
  // The text not returned yet (an incomplete character at the end decodes as U+FFFD).
  std::string finish();
  // Starts over (a new reply).
  void reset();

 private:
  const Tokenizer& tok_;
  bool skip_special_;
  std::vector<int32_t> ids_;
  size_t prefix_ = 0;  // decoding starts here
  size_t read_ = 0;    // text of ids_[prefix_, read_) was returned already
};

}  // namespace ftune
