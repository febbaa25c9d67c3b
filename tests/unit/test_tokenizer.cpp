// Unit tests for ftune::Tokenizer (src/io/tokenizer*.cpp) on hand-made tokenizer.json files whose
// expected ids follow from the BPE rules by hand (checked against HF `tokenizers` 0.23 when
// written); the large-scale comparison with HF is tests/py/test_tokenizer_parity.py.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "core/error.h"
#include "io/tokenizer.h"
#include "io/tokenizer_nfc.h"
#include "io/tokenizer_category_table.h"
#include "io/tokenizer_regex.h"
#include "io/tokenizer_regex_classes.h"
#include "io/tokenizer_unicode.h"
#include "support/test_support.h"

namespace ftune {
namespace {

using json = nlohmann::json;
using Ids = std::vector<int32_t>;

const char* kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// Byte-level BPE like Llama-3, over a handful of tokens. Merge ranks: "b c" (0) before
// "a b" (1), so "abc" becomes a + bc; "Ġ a" (2) and "Ġa b" (3) build "Ġab". "ca" (8) is in
// the vocab without a merge reaching it.
json byte_level_json(bool merges_as_pairs, bool ignore_merges) {
  json merges = merges_as_pairs
                    ? json::parse(R"([["b","c"],["a","b"],["Ġ","a"],["Ġa","b"]])")
                    : json::parse(R"(["b c","a b","Ġ a","Ġa b"])");
  json j = {
      {"version", "1.0"},
      {"added_tokens",
       json::parse(R"([
         {"id":10,"content":"<|begin_of_text|>","single_word":false,"lstrip":false,
          "rstrip":false,"normalized":false,"special":true},
         {"id":11,"content":"<|eot_id|>","single_word":false,"lstrip":false,"rstrip":false,
          "normalized":false,"special":true}])")},
      {"normalizer", nullptr},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern", {{"Regex", kLlama3Pattern}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          {{"type", "ByteLevel"},
           {"add_prefix_space", false},
           {"trim_offsets", true},
           {"use_regex", false}}}}}},
      {"post_processor",
       json::parse(R"({"type":"Sequence","processors":[
         {"type":"ByteLevel","add_prefix_space":true,"trim_offsets":false,"use_regex":true},
         {"type":"TemplateProcessing",
          "single":[{"SpecialToken":{"id":"<|begin_of_text|>","type_id":0}},
                    {"Sequence":{"id":"A","type_id":0}}],
          "pair":[{"Sequence":{"id":"A","type_id":0}},{"Sequence":{"id":"B","type_id":1}}],
          "special_tokens":{"<|begin_of_text|>":{"id":"<|begin_of_text|>","ids":[10],
                                                 "tokens":["<|begin_of_text|>"]}}}]})")},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true},
                   {"use_regex", true}}},
      {"model",
       {{"type", "BPE"},
        {"dropout", nullptr},
        {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr},
        {"end_of_word_suffix", nullptr},
        {"fuse_unk", false},
        {"byte_fallback", false},
        {"ignore_merges", ignore_merges},
        {"vocab",
         {{"a", 0}, {"b", 1}, {"c", 2}, {"Ġ", 3}, {"bc", 4}, {"ab", 5}, {"Ġa", 6}, {"Ġab", 7},
          {"ca", 8}, {"Ċ", 9}}},
        {"merges", merges}}}};
  return j;
}

// SentencePiece-style BPE like Llama-2: <unk>=0 <s>=1 </s>=2, <0x00>..<0xFF>=3..258, then
// ▁=259 h=260 i=261 ▁h=262 ▁hi=263.
json sentencepiece_json(bool byte_fallback, bool metaspace) {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) vocab[fmt::format("<0x{:02X}>", b)] = 3 + b;
  vocab["▁"] = 259;
  vocab["h"] = 260;
  vocab["i"] = 261;
  vocab["▁h"] = 262;
  vocab["▁hi"] = 263;
  json added = json::array();
  for (int i = 0; i < 3; ++i) {
    added.push_back({{"id", i},
                     {"content", i == 0 ? "<unk>" : (i == 1 ? "<s>" : "</s>")},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  }
  json j = {
      {"added_tokens", added},
      {"post_processor",
       json::parse(R"({"type":"TemplateProcessing",
          "single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],
          "pair":[],
          "special_tokens":{"<s>":{"id":"<s>","ids":[1],"tokens":["<s>"]}}})")},
      {"model",
       {{"type", "BPE"},
        {"unk_token", "<unk>"},
        {"fuse_unk", true},
        {"byte_fallback", byte_fallback},
        {"vocab", vocab},
        {"merges", json::parse(R"(["▁ h", "▁h i"])")}}}};
  if (metaspace) {
    j["normalizer"] = nullptr;
    j["pre_tokenizer"] = json::parse(
        R"({"type":"Metaspace","replacement":"▁","prepend_scheme":"first","split":false})");
    j["decoder"] = json::parse(
        R"({"type":"Metaspace","replacement":"▁","prepend_scheme":"first","split":false})");
  } else {
    j["normalizer"] = json::parse(R"({"type":"Sequence","normalizers":[
        {"type":"Prepend","prepend":"▁"},
        {"type":"Replace","pattern":{"String":" "},"content":"▁"}]})");
    j["pre_tokenizer"] = nullptr;
    j["decoder"] = json::parse(R"({"type":"Sequence","decoders":[
        {"type":"Replace","pattern":{"String":"▁"},"content":" "},
        {"type":"ByteFallback"},{"type":"Fuse"},
        {"type":"Strip","content":" ","start":1,"stop":0}]})");
  }
  return j;
}

Tokenizer load(const json& j) { return Tokenizer::from_json(j.dump(), "test.json"); }

// The message of the ftune::Error `f` throws ("" when it does not throw).
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(TokenizerByteLevel, MergesByRankAndBothMergeForms) {
  for (bool pairs : {true, false}) {
    const Tokenizer t = load(byte_level_json(pairs, /*ignore_merges=*/true));
    // "abc": "b c" has the lower rank, so a + bc; " ab" → Ġ a → Ġa b → Ġab.
    EXPECT_EQ(t.encode("abc ab"), (Ids{0, 4, 7})) << "pairs=" << pairs;
    EXPECT_EQ(t.encode("ab"), (Ids{5}));
    EXPECT_EQ(t.encode("cab"), (Ids{2, 5}));  // no merge of c with a or ab
    EXPECT_EQ(t.encode(""), Ids{});
    EXPECT_EQ(t.encode("", true), (Ids{10}));
    EXPECT_EQ(t.encode("a\n"), (Ids{0, 9}));  // "\n" is its own piece, byte-mapped to Ċ
  }
}

TEST(TokenizerByteLevel, IgnoreMergesEmitsWholeVocabWords) {
  EXPECT_EQ(load(byte_level_json(true, true)).encode("ca"), (Ids{8}));
  EXPECT_EQ(load(byte_level_json(true, false)).encode("ca"), (Ids{2, 0}));
}

TEST(TokenizerByteLevel, UnknownBytesAreDroppedWithoutUnk) {
  // 'x' has no token and there is no unk token: HF drops it, and a, b then merge.
  EXPECT_EQ(load(byte_level_json(true, true)).encode("axb"), (Ids{5}));
}

TEST(TokenizerByteLevel, SpecialTokensInsideTextAndTemplate) {
  const Tokenizer t = load(byte_level_json(true, true));
  EXPECT_EQ(t.encode("ab<|eot_id|>c"), (Ids{5, 11, 2}));
  EXPECT_EQ(t.encode("<|eot_id|><|eot_id|>", true), (Ids{10, 11, 11}));
  EXPECT_EQ(t.encode("<|eot_id"), Ids{});  // not the special token; its bytes are unknown
  EXPECT_EQ(t.encode("ab", true), (Ids{10, 5}));
  EXPECT_EQ(t.bos_id(), std::optional<int32_t>(10));
  EXPECT_EQ(t.eos_id(), std::nullopt);
  EXPECT_TRUE(t.is_special(11));
  EXPECT_FALSE(t.is_special(5));
  EXPECT_EQ(t.vocab_size(), 12);
  EXPECT_EQ(t.token_to_id("<|eot_id|>"), std::optional<int32_t>(11));
  EXPECT_EQ(t.token_to_id("Ġab"), std::optional<int32_t>(7));
  EXPECT_EQ(t.token_to_id("zzz"), std::nullopt);
  EXPECT_EQ(t.id_to_token(7), "Ġab");
  EXPECT_EQ(t.id_to_token(10), "<|begin_of_text|>");
  EXPECT_NE(error_of([&] { t.id_to_token(12); }), "");
}

TEST(TokenizerByteLevel, Decode) {
  const Tokenizer t = load(byte_level_json(true, true));
  EXPECT_EQ(t.decode({10, 0, 4, 7, 11, 9}), "<|begin_of_text|>abc ab<|eot_id|>\n");
  EXPECT_EQ(t.decode({10, 0, 4, 7, 11, 9}, /*skip_special_tokens=*/true), "abc ab\n");
  EXPECT_EQ(t.decode(t.encode("ab abc<|eot_id|>\n")), "ab abc<|eot_id|>\n");
  EXPECT_NE(error_of([&] { t.decode({12}); }).find("out of range"), std::string::npos);
}

TEST(TokenizerSentencePiece, NormalizerPrependReplaceAndByteFallback) {
  const Tokenizer t = load(sentencepiece_json(/*byte_fallback=*/true, /*metaspace=*/false));
  EXPECT_EQ(t.encode("hi"), (Ids{263}));
  EXPECT_EQ(t.encode("hi hi"), (Ids{263, 263}));
  EXPECT_EQ(t.encode("hi", true), (Ids{1, 263}));
  // é = C3 A9 is not in the vocab: <0xC3> = 3 + 0xC3, <0xA9> = 3 + 0xA9.
  EXPECT_EQ(t.encode("hé"), (Ids{262, 3 + 0xC3, 3 + 0xA9}));
  // Added tokens are cut out before normalization, so each remaining piece gets its own ▁.
  EXPECT_EQ(t.encode("<s>hi</s>"), (Ids{1, 263, 2}));
  EXPECT_EQ(t.encode("hi<s>hi"), (Ids{263, 1, 263}));
  EXPECT_EQ(t.bos_id(), std::optional<int32_t>(1));

  EXPECT_EQ(t.decode({1, 263, 263}), "<s> hi hi");
  EXPECT_EQ(t.decode({1, 263, 263}, true), "hi hi");
  EXPECT_EQ(t.decode({262, 3 + 0xC3, 3 + 0xA9}), "hé");
  // A lone continuation-less lead byte is invalid UTF-8: one U+FFFD per byte token.
  EXPECT_EQ(t.decode({262, 3 + 0xC3, 3 + 0xC3}), "h\xEF\xBF\xBD\xEF\xBF\xBD");
}

TEST(TokenizerSentencePiece, FusedUnknownWithoutByteFallback) {
  const Tokenizer t = load(sentencepiece_json(/*byte_fallback=*/false, false));
  EXPECT_EQ(t.encode("héé"), (Ids{262, 0}));  // ▁h + one fused <unk> for "éé"
  EXPECT_EQ(t.encode("héhé"), (Ids{262, 0, 260, 0}));
}

TEST(TokenizerSentencePiece, MetaspaceFirstOnlyAtTheStart) {
  const Tokenizer t = load(sentencepiece_json(true, /*metaspace=*/true));
  EXPECT_EQ(t.encode("hi hi"), (Ids{263, 263}));
  // After an added token the piece does not start the input: no ▁ is prepended ("first").
  EXPECT_EQ(t.encode("<s>hi"), (Ids{1, 260, 261}));
  EXPECT_EQ(t.decode({263, 263}), "hi hi");
  EXPECT_EQ(t.decode({1, 263}), "<s> hi");
}

TEST(TokenizerAddedTokens, StripAndSingleWord) {
  json j = byte_level_json(true, true);
  j["added_tokens"].push_back({{"id", 12}, {"content", "<t>"}, {"single_word", false},
                               {"lstrip", true}, {"rstrip", true}, {"normalized", false},
                               {"special", false}});
  j["added_tokens"].push_back({{"id", 13}, {"content", "cc"}, {"single_word", true},
                               {"lstrip", false}, {"rstrip", false}, {"normalized", false},
                               {"special", false}});
  const Tokenizer t = load(j);
  EXPECT_EQ(t.encode("a  <t>  b"), (Ids{0, 12, 1}));  // both space runs absorbed
  EXPECT_EQ(t.encode("a cc b"), (Ids{0, 3, 13, 3, 1}));  // "a", " " | cc | " b" → Ġ b
  EXPECT_EQ(t.encode("acc"), (Ids{0, 2, 2}));         // inside a word: not matched
  EXPECT_EQ(t.decode({12}), "<t>");
  EXPECT_FALSE(t.is_special(12));
}

TEST(TokenizerUnicode, ByteLevelAlphabet) {
  const auto& a = tok::byte_level_alphabet();
  EXPECT_EQ(a.byte_to_cp[' '], 0x120u);  // Ġ
  EXPECT_EQ(a.byte_to_cp['\n'], 0x10Au);  // Ċ
  EXPECT_EQ(a.byte_to_cp['A'], static_cast<uint32_t>('A'));
  EXPECT_EQ(a.byte_to_cp[0x7F], 0x121u);
  EXPECT_EQ(a.byte_to_cp[0xAD], 0x143u);  // the last of the 68 remapped bytes
  EXPECT_EQ(a.byte_to_cp[0xE9], 0xE9u);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(a.cp_byte(a.byte_to_cp[b]), b);
}

TEST(TokenizerUnicode, LossyDecodingAndValidation) {
  EXPECT_EQ(tok::utf8_lossy("a\xE2\x96" "b"), "a\xEF\xBF\xBD" "b");  // one U+FFFD, 2 bytes
  EXPECT_EQ(tok::utf8_lossy("\xFF\xFE"), "\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(tok::utf8_lossy("\xF0\x9F\x98"), "\xEF\xBF\xBD");
  EXPECT_EQ(tok::utf8_lossy("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(tok::utf8_lossy("h\xC3\xA9"), "h\xC3\xA9");
  EXPECT_EQ(tok::first_invalid_utf8("ok\xC3\xA9\xC3"), std::optional<size_t>(4));
  EXPECT_EQ(tok::first_invalid_utf8("\xC0\x80"), std::optional<size_t>(0));  // overlong
  EXPECT_EQ(tok::first_invalid_utf8("\xE2\x96\x81"), std::nullopt);
}

TEST(TokenizerUnicode, Nfc) {
  EXPECT_EQ(tok::nfc_normalize("plain ascii"), "plain ascii");
  EXPECT_EQ(tok::nfc_normalize("e\xCC\x81"), "\xC3\xA9");  // e + U+0301 → é
  // a + U+0302 + U+0323: marks reordered (dot below, class 220, first), then → U+1EAD ậ.
  EXPECT_EQ(tok::nfc_normalize("a\xCC\x82\xCC\xA3"), "\xE1\xBA\xAD");
  EXPECT_EQ(tok::nfc_normalize("\xE2\x84\xAB"), "\xC3\x85");  // U+212B Angstrom sign → Å
  // U+0344 is excluded from composition: stays decomposed as U+0308 U+0301.
  EXPECT_EQ(tok::nfc_normalize("\xCD\x84"), "\xCC\x88\xCC\x81");
  // Conjoining jamo U+1100 U+1161 U+11A8 → syllable U+AC01.
  EXPECT_EQ(tok::nfc_normalize("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"), "\xEA\xB0\x81");
  // A mark blocked by an equal-class mark in between does not compose: a + U+0301 + U+0301.
  EXPECT_EQ(tok::nfc_normalize("a\xCC\x81\xCC\x81"), "\xC3\xA1\xCC\x81");
}

// HF normalizes with Unicode 9.0 data: marks and composites added later are left alone
// (expected values from tokenizers 0.23's NFC normalizer).
TEST(TokenizerUnicode, NfcUsesUnicode9Data) {
  // U+1DF9 (Unicode 10.0, class 220) is a starter for Unicode 9.0: the U+0301 after it does
  // not reach the a (Unicode 14.0 data would give á U+1DF9).
  EXPECT_EQ(tok::nfc_normalize("a\xE1\xB7\xB9\xCC\x81"), "a\xE1\xB7\xB9\xCC\x81");
  EXPECT_EQ(tok::nfc_normalize("a\xCC\x81\xE1\xB7\xB9"), "\xC3\xA1\xE1\xB7\xB9");
  // U+0899 (Unicode 14.0, class 220) is not reordered before U+0301 (class 230).
  EXPECT_EQ(tok::nfc_normalize("q\xCC\x81\xE0\xA2\x99"), "q\xCC\x81\xE0\xA2\x99");
  // U+11935 U+11930 stays decomposed (composite U+11938 is from Unicode 13.0).
  EXPECT_EQ(tok::nfc_normalize("\xF0\x91\xA4\xB5\xF0\x91\xA4\xB0"),
            "\xF0\x91\xA4\xB5\xF0\x91\xA4\xB0");
}

TEST(TokenizerByteLevel, NfcNormalizerBeforeBpe) {
  json j = byte_level_json(true, true);
  j["normalizer"] = {{"type", "NFC"}};
  // é is bytes C3 A9; the byte alphabet maps them to Ã (U+00C3) and © (U+00A9).
  j["model"]["vocab"]["\xC3\x83\xC2\xA9"] = 12;
  const Tokenizer t = load(j);
  EXPECT_EQ(t.encode("\xC3\xA9"), (Ids{12}));
  EXPECT_EQ(t.encode("e\xCC\x81"), (Ids{12}));  // composed first
}

TEST(TokenizerRegex, WhiteSpaceClassMatchesOniguruma) {
  const tok::Regex ws(R"(\s)");
  EXPECT_EQ(ws.find_all("\xC2\x85").size(), 1u);      // U+0085 is White_Space
  EXPECT_EQ(ws.find_all("\xE1\xA0\x8E").size(), 0u);  // U+180E is not (PCRE2 says it is)
  EXPECT_EQ(ws.find_all("\xE3\x80\x80").size(), 1u);  // U+3000
  const tok::Regex not_ws(R"([^\s\p{L}]+)");
  EXPECT_EQ(not_ws.find_all("a\xE1\xA0\x8E" "b"),
            (std::vector<std::pair<size_t, size_t>>{{1, 4}}));
  // Empty matches advance by one character and never follow a match directly (onig).
  const tok::Regex star("x*");
  EXPECT_EQ(star.find_all("axx"),
            (std::vector<std::pair<size_t, size_t>>{{0, 0}, {1, 3}}));
}

// Oniguruma in HF knows the general categories of Unicode 16.0; the classes are upgraded where
// the system PCRE2 knows an older version (expected offsets from tokenizers 0.23).
TEST(TokenizerRegex, GeneralCategoriesFollowUnicode16) {
  using Matches = std::vector<std::pair<size_t, size_t>>;
  const std::string kawi_ka = "\xF0\x91\xBC\x84";        // U+11F04 Kawi letter, Unicode 15.0
  const std::string cjk_i = "\xF0\xAE\xAF\xB0";          // U+2EBF0 CJK Ext. I, Unicode 15.1
  const std::string ol_onal = "\xF0\x9E\x97\x90";        // U+1E5D0 Ol Onal letter, 16.0
  const std::string nag_zero = "\xF0\x9E\x93\xB0";       // U+1E4F0 Nag Mundari digit zero, 15.0
  const std::string unassigned = "\xF1\x90\x80\x80";     // U+50000
  const tok::Regex letters(R"(\p{L}+)");
  EXPECT_EQ(letters.find_all("a" + kawi_ka + cjk_i + ol_onal + "b"), (Matches{{0, 14}}));
  const tok::Regex digits(R"(\p{N}{1,3})");
  EXPECT_EQ(digits.find_all(nag_zero + nag_zero + nag_zero + nag_zero),
            (Matches{{0, 12}, {12, 16}}));
  EXPECT_EQ(tok::Regex(R"(\d)").find_all(nag_zero).size(), 1u);
  EXPECT_EQ(tok::Regex(R"([\d])").find_all(nag_zero).size(), 1u);
  const tok::Regex other(R"([^\s\p{L}\p{N}]+)");
  EXPECT_EQ(other.find_all("!" + kawi_ka + "?"), (Matches{{0, 1}, {5, 6}}));
  // Complements and Cn lose the new characters (a lookahead excludes them).
  EXPECT_EQ(tok::Regex(R"(\P{L})").find_all(kawi_ka).size(), 0u);
  EXPECT_EQ(tok::Regex(R"([\P{L}x])").find_all(kawi_ka + "x").size(), 1u);
  EXPECT_EQ(tok::Regex(R"(\p{Cn})").find_all(kawi_ka + unassigned), (Matches{{4, 8}}));
  // U+1171E changed from Mn (14.0) to Mc (16.0).
  EXPECT_EQ(tok::Regex(R"(\p{Mn})").find_all("\xF0\x91\x9C\x9E").size(), 0u);
  EXPECT_EQ(tok::Regex(R"(\p{Mc})").find_all("\xF0\x91\x9C\x9E").size(), 1u);
  // The Llama-3 split: "x" + 2 Nag Mundari letters, " ", 3 + 1 digits, "!" + Kawi letter.
  const std::string nag_o = "\xF0\x9E\x93\x90", nag_op = "\xF0\x9E\x93\x91";
  const std::string digit1 = "\xF0\x9E\x93\xB1", digit2 = "\xF0\x9E\x93\xB2";
  const std::string digit3 = "\xF0\x9E\x93\xB3";
  EXPECT_EQ(tok::Regex(kLlama3Pattern)
                .find_all("x" + nag_o + nag_op + " " + nag_zero + digit1 + digit2 + digit3 + "!" +
                          kawi_ka),
            (Matches{{0, 9}, {9, 10}, {10, 22}, {22, 26}, {26, 31}}));
  // single_word's word characters (regex-syntax, Unicode 16.0 too).
  EXPECT_TRUE(tok::is_word_character(0x11F04));   // Kawi letter
  EXPECT_TRUE(tok::is_word_character(0x1E5D0));   // Ol Onal letter
  EXPECT_TRUE(tok::is_word_character(0x1E4F0));   // Nag Mundari digit
  EXPECT_TRUE(tok::is_word_character(0x0897));    // Arabic pepet, a mark of Unicode 16.0
  EXPECT_FALSE(tok::is_word_character(0x1FAE9));  // emoji of Unicode 16.0
  EXPECT_FALSE(tok::is_word_character(0x50000));  // unassigned
  // Patterns without general categories are compiled as written.
  for (const std::string p : {R"([a-z]+\s?)", R"(\p{Han}+)", R"([[:alpha:]])", R"(\x{1F600})"})
    EXPECT_EQ(tok::upgrade_unicode_classes(p), p);
  // Malformed patterns pass through unchanged, for PCRE2 to report with the pattern.
  for (const std::string p : {R"([\p{L})", R"(\p{L)", R"([\p{Xy}])", "\\", R"([\x{11F04)"})
    EXPECT_EQ(tok::upgrade_unicode_classes(p), p);
  EXPECT_NE(error_of([] { tok::Regex bad(R"([\p{L})"); }).find(R"([\p{L})"), std::string::npos);
}

// The category table lists the changes since Unicode 14.0; a PCRE2 built on an older version
// would miss the changes before that.
TEST(TokenizerRegex, Pcre2KnowsTheTableBaseVersion) {
  const std::string have = tok::pcre2_unicode_version();
  ASSERT_FALSE(have.empty());
  // std::stod reads "14.0.0" as 14.0 (major.minor).
  EXPECT_GE(std::stod(have), std::stod(tok::category_data::kBaseVersion)) << have;
}

TEST(TokenizerErrors, MissingFileBadJsonUnsupportedTypes) {
  EXPECT_NE(error_of([] { Tokenizer::from_file("/nonexistent/tokenizer.json"); })
                .find("/nonexistent/tokenizer.json"),
            std::string::npos);
  EXPECT_NE(error_of([] { Tokenizer::from_json("{not json", "bad.json"); }).find("invalid JSON"),
            std::string::npos);

  json j = byte_level_json(true, true);
  j["model"]["type"] = "Unigram";
  std::string msg = error_of([&] { Tokenizer::from_json(j.dump(), "m.json"); });
  EXPECT_NE(msg.find("Unigram"), std::string::npos) << msg;
  EXPECT_NE(msg.find("m.json"), std::string::npos) << msg;

  j = byte_level_json(true, true);
  j["pre_tokenizer"]["pretokenizers"][0] = {{"type", "Whitespace"}};
  msg = error_of([&] { Tokenizer::from_json(j.dump(), "p.json"); });
  EXPECT_NE(msg.find("pre_tokenizer type 'Whitespace'"), std::string::npos) << msg;

  j = byte_level_json(true, true);
  j["normalizer"] = {{"type", "NFKC"}};
  msg = error_of([&] { Tokenizer::from_json(j.dump(), "n.json"); });
  EXPECT_NE(msg.find("normalizer type 'NFKC'"), std::string::npos) << msg;

  j = byte_level_json(true, true);
  j["decoder"] = {{"type", "WordPiece"}, {"prefix", "##"}, {"cleanup", true}};
  msg = error_of([&] { Tokenizer::from_json(j.dump(), "d.json"); });
  EXPECT_NE(msg.find("decoder type 'WordPiece'"), std::string::npos) << msg;

  // An id far past the vocabulary's size (found by fuzz_tokenizer: it made a 2^31-entry table)
  // is refused, not allocated.
  j = byte_level_json(true, true);
  j["model"]["vocab"]["far"] = 2000000000;
  msg = error_of([&] { Tokenizer::from_json(j.dump(), "v.json"); });
  EXPECT_NE(msg.find("vocab id 2000000000 is far past the vocabulary's"), std::string::npos) << msg;

  j = byte_level_json(false, true);
  j["model"]["merges"].push_back("a zz");
  msg = error_of([&] { Tokenizer::from_json(j.dump(), "g.json"); });
  EXPECT_NE(msg.find("'zz' which is not in the vocab"), std::string::npos) << msg;

  const Tokenizer t = load(byte_level_json(true, true));
  msg = error_of([&] { t.encode("ab\xFF"); });
  EXPECT_NE(msg.find("not valid UTF-8 at byte 2"), std::string::npos) << msg;
}

TEST(TokenizerFiles, RepoAssetLoadsWithLlama3Specials) {
  const Tokenizer t = Tokenizer::from_file(test::data_path("../assets/tokenizer/tokenizer.json"));
  EXPECT_EQ(t.vocab_size(), 1024);
  for (const char* s : {"<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                        "<|end_header_id|>", "<|eot_id|>", "<|finetune_right_pad_id|>"}) {
    const auto id = t.token_to_id(s);
    ASSERT_TRUE(id.has_value()) << s;
    EXPECT_TRUE(t.is_special(*id)) << s;
  }
  EXPECT_EQ(t.bos_id(), t.token_to_id("<|begin_of_text|>"));
  const std::string text =
      "<|start_header_id|>user<|end_header_id|>\n\nHello! How are you?<|eot_id|>";
  const auto ids = t.encode(text, true);
  EXPECT_EQ(ids.front(), *t.bos_id());
  EXPECT_EQ(ids[1], *t.token_to_id("<|start_header_id|>"));
  EXPECT_EQ(ids.back(), *t.token_to_id("<|eot_id|>"));
  EXPECT_EQ(t.decode(ids, true), "user\n\nHello! How are you?");
}

TEST(TokenizerThreads, ConcurrentEncodeMatchesSerial) {
  const Tokenizer t = load(sentencepiece_json(true, false));
  const std::string text = "hi hé hi <s> hih hhi ii";
  const Ids want = t.encode(text);
  std::vector<std::thread> threads;
  std::vector<int> ok(8, 0);
  for (int k = 0; k < 8; ++k) {
    threads.emplace_back([&, k] {
      int good = 0;
      for (int r = 0; r < 200; ++r) good += t.encode(text) == want;
      ok[k] = good;
    });
  }
  for (auto& th : threads) th.join();
  for (int k = 0; k < 8; ++k) EXPECT_EQ(ok[k], 200);
}

}  // namespace
}  // namespace ftune
