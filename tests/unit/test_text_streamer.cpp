// Streaming detokenization (io/text_streamer.h) with the repository's byte-level tokenizer:
// characters split over several byte tokens are held back until complete (no U+FFFD is ever
// printed), and the pieces join to exactly what decoding all ids at once gives.
#include <gtest/gtest.h>

#include "io/text_streamer.h"
#include "io/tokenizer.h"
#include "support/test_support.h"

using namespace ftune;

namespace {

const std::string kReplacement = "\xEF\xBF\xBD";

TEST(TextStreamer, PiecesJoinToTheFullDecodeAndNeverSplitACharacter) {
  const Tokenizer t = Tokenizer::from_file(test::data_path("../assets/tokenizer/tokenizer.json"));
  for (const std::string& text :
       {std::string("Hello there, naïve café! 東京 emoji🙂 ok"), std::string("ß→∑ 🙂🙂 x"),
        std::string("plain ascii text")}) {
    const std::vector<int32_t> ids = t.encode(text);
    TextStreamer s(t);
    std::string joined;
    int held = 0;
    for (int32_t id : ids) {
      const std::string piece = s.put(id);
      EXPECT_EQ(piece.find(kReplacement), std::string::npos) << text;
      held += piece.empty();
      joined += piece;
    }
    joined += s.finish();
    EXPECT_EQ(joined, t.decode(ids, true)) << text;
    EXPECT_EQ(joined, text);
    // The small vocabulary spells the CJK characters and the emoji byte by byte.
    if (text.find("🙂") != std::string::npos) {
      EXPECT_GT(held, 0) << text;
    }
  }
}

TEST(TextStreamer, SpecialTokensAreSkippedAndATruncatedCharacterIsFlushed) {
  const Tokenizer t = Tokenizer::from_file(test::data_path("../assets/tokenizer/tokenizer.json"));
  const int32_t eot = *t.token_to_id("<|eot_id|>");
  TextStreamer s(t);
  std::string out;
  for (int32_t id : t.encode("ok")) out += s.put(id);
  out += s.put(eot);
  EXPECT_EQ(out, "ok");
  // Generation that stops inside a character: finish() returns what is left, as decode does.
  std::vector<int32_t> ids = t.encode("🙂");
  ASSERT_GT(ids.size(), 1u);
  ids.pop_back();
  s.reset();
  std::string partial;
  for (int32_t id : ids) partial += s.put(id);
  EXPECT_EQ(partial, "");
  EXPECT_EQ(s.finish(), t.decode(ids, true));
}

}  // namespace
