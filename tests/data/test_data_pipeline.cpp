// Rendering + tokenization with labels, and prepare_data end to end, with small hand-written
// tokenizers (so the expected ids can be written out by hand):
//   ByteEncoder: special tokens -> ids 1000+, every other byte -> its value (segment-wise and
//                whole-text tokenization agree: the fast path);
//   WordEncoder: SentencePiece-like, prepends a space to every piece it encodes and makes one
//                token per " word" (per-segment encodings differ from the whole text: the slow
//                path, including a token straddling a boundary).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "core/batch.h"
#include "core/error.h"
#include "data/prepare_data.h"
#include "data/token_cache.h"
#include "support/test_support.h"

namespace ftune {
namespace {

constexpr int32_t M = kIgnoreIndex;

const std::vector<std::string> kSpecials = {
    "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
    "<|end_of_text|>",   "<s>",                 "</s>",              "<|im_start|>",
    "<|im_end|>",        "<pad>"};

int32_t special_id(const std::string& s) {
  for (size_t i = 0; i < kSpecials.size(); ++i) {
    if (kSpecials[i] == s) return 1000 + static_cast<int32_t>(i);
  }
  ADD_FAILURE() << "no special " << s;
  return -1;
}

// Splits text into special tokens and the plain pieces between them.
std::vector<std::pair<bool, std::string>> split_specials(std::string_view text) {
  std::vector<std::pair<bool, std::string>> out;
  std::string plain;
  size_t i = 0;
  while (i < text.size()) {
    bool matched = false;
    for (const auto& s : kSpecials) {
      if (text.substr(i, s.size()) == s) {
        if (!plain.empty()) out.push_back({false, plain});
        plain.clear();
        out.push_back({true, s});
        i += s.size();
        matched = true;
        break;
      }
    }
    if (!matched) plain += text[i++];
  }
  if (!plain.empty()) out.push_back({false, plain});
  return out;
}

class ByteEncoder : public TextEncoder {
 public:
  explicit ByteEncoder(std::optional<int32_t> bos = std::nullopt) : bos_(bos) {}
  std::vector<int32_t> encode(std::string_view text) const override {
    ++calls;
    std::vector<int32_t> ids;
    for (const auto& [special, s] : split_specials(text)) {
      if (special) {
        ids.push_back(special_id(s));
      } else {
        for (unsigned char c : s) ids.push_back(c);
      }
    }
    return ids;
  }
  std::optional<int32_t> token_to_id(std::string_view t) const override {
    for (size_t i = 0; i < kSpecials.size(); ++i) {
      if (kSpecials[i] == t) return 1000 + static_cast<int32_t>(i);
    }
    return std::nullopt;
  }
  std::optional<int32_t> bos_id() const override { return bos_; }
  std::optional<int32_t> eos_id() const override { return std::nullopt; }
  std::string fingerprint() const override { return "byte-encoder-v1"; }
  mutable int calls = 0;

 private:
  std::optional<int32_t> bos_;
};

class WordEncoder : public TextEncoder {
 public:
  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    for (const auto& [special, s] : split_specials(text)) {
      if (special) {
        ids.push_back(special_id(s));
        continue;
      }
      const std::string p = " " + s;  // like SentencePiece's Prepend("▁") on every piece
      size_t i = 0;
      while (i < p.size()) {
        size_t j = i + 1;  // a token: one space and the non-space run after it
        while (j < p.size() && p[j] != ' ') ++j;
        ids.push_back(id_of(p.substr(i, j - i)));
        i = j;
      }
    }
    return ids;
  }
  std::optional<int32_t> token_to_id(std::string_view t) const override {
    for (size_t i = 0; i < kSpecials.size(); ++i) {
      if (kSpecials[i] == t) return 1000 + static_cast<int32_t>(i);
    }
    return std::nullopt;
  }
  std::optional<int32_t> bos_id() const override { return std::nullopt; }
  std::optional<int32_t> eos_id() const override { return std::nullopt; }
  std::string fingerprint() const override { return "word-encoder-v1"; }
  int32_t id_of(const std::string& w) const {
    auto it = vocab_.find(w);
    if (it != vocab_.end()) return it->second;
    const auto id = static_cast<int32_t>(vocab_.size());
    vocab_[w] = id;
    return id;
  }

 private:
  mutable std::map<std::string, int32_t> vocab_;
};

std::vector<int32_t> bytes(std::string_view s) {
  std::vector<int32_t> out;
  for (unsigned char c : s) out.push_back(c);
  return out;
}

// Appends ids with labels (trained = labels equal ids).
void add(std::vector<int32_t>& ids, std::vector<int32_t>& labels, const std::vector<int32_t>& x,
         bool trained) {
  for (int32_t v : x) {
    ids.push_back(v);
    labels.push_back(trained ? v : M);
  }
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Tokenize, Llama3ConversationMaskedTokenByToken) {
  const ByteEncoder enc(/*bos=*/special_id("<|begin_of_text|>"));
  SourceExample src;
  src.is_conversation = true;
  src.conversation = {{"system", "S"}, {"user", "Hi"}, {"assistant", "Yo!"}, {"user", "Q"},
                      {"assistant", " ok "}};
  const ChatTemplate t = chat_template_by_name("llama-3");
  const TokenizedExample ex =
      tokenize_rendered(enc, render_example(src, &t, true), enc.bos_id(), std::nullopt);
  std::vector<int32_t> ids, labels;
  const int32_t bot = special_id("<|begin_of_text|>"), sh = special_id("<|start_header_id|>"),
                eh = special_id("<|end_header_id|>"), eot = special_id("<|eot_id|>");
  add(ids, labels, {bot, sh}, false);  // one BOS: the template's, none added
  add(ids, labels, bytes("system"), false);
  add(ids, labels, {eh}, false);
  add(ids, labels, bytes("\n\nS"), false);
  add(ids, labels, {eot, sh}, false);
  add(ids, labels, bytes("user"), false);
  add(ids, labels, {eh}, false);
  add(ids, labels, bytes("\n\nHi"), false);
  add(ids, labels, {eot, sh}, false);
  add(ids, labels, bytes("assistant"), false);
  add(ids, labels, {eh}, false);
  add(ids, labels, bytes("\n\n"), false);
  add(ids, labels, bytes("Yo!"), true);
  add(ids, labels, {eot}, true);  // the end-of-turn token is trained
  add(ids, labels, {sh}, false);
  add(ids, labels, bytes("user"), false);
  add(ids, labels, {eh}, false);
  add(ids, labels, bytes("\n\nQ"), false);
  add(ids, labels, {eot, sh}, false);
  add(ids, labels, bytes("assistant"), false);
  add(ids, labels, {eh}, false);
  add(ids, labels, bytes("\n\n"), false);
  add(ids, labels, bytes("ok"), true);  // llama-3 trims content
  add(ids, labels, {eot}, true);
  EXPECT_EQ(ex.ids, ids);
  EXPECT_EQ(ex.labels, labels);
  EXPECT_EQ(ex.trained_tokens(), 7);

  // train_on_responses_only = false: everything is a label.
  const TokenizedExample all =
      tokenize_rendered(enc, render_example(src, &t, false), enc.bos_id(), std::nullopt);
  EXPECT_EQ(all.ids, ids);
  EXPECT_EQ(all.labels, ids);
}

TEST(Tokenize, ChatmlAndMistralEndOfTurnTokens) {
  const ByteEncoder enc;
  SourceExample src;
  src.is_conversation = true;
  src.conversation = {{"user", "a"}, {"assistant", "b"}};
  const ChatTemplate chatml = chat_template_by_name("chatml");
  const auto c = tokenize_rendered(enc, render_example(src, &chatml, true), std::nullopt, std::nullopt);
  // ...<|im_start|>assistant\n | b <|im_end|> | \n
  const int32_t im_end = special_id("<|im_end|>");
  ASSERT_GE(c.ids.size(), 3u);
  EXPECT_EQ(c.ids[c.ids.size() - 3], 'b');
  EXPECT_EQ(c.ids[c.ids.size() - 2], im_end);
  EXPECT_EQ(c.ids.back(), '\n');
  std::vector<int32_t> trained;
  for (size_t i = 0; i < c.ids.size(); ++i) {
    if (c.labels[i] != M) trained.push_back(c.ids[i]);
  }
  EXPECT_EQ(trained, (std::vector<int32_t>{'b', im_end}));

  const ChatTemplate mistral = chat_template_by_name("mistral");
  const auto m = tokenize_rendered(enc, render_example(src, &mistral, true), std::nullopt, std::nullopt);
  std::vector<int32_t> ids, labels;
  add(ids, labels, {special_id("<s>")}, false);
  add(ids, labels, bytes("[INST] a [/INST]"), false);
  add(ids, labels, {'b', special_id("</s>")}, true);
  add(ids, labels, bytes(" "), false);
  EXPECT_EQ(m.ids, ids);
  EXPECT_EQ(m.labels, labels);
}

TEST(Tokenize, NonConversationFormatsAddBosAndEos) {
  const int32_t bos = special_id("<s>"), eos = special_id("</s>");
  const ByteEncoder enc(bos);
  SourceExample alpaca;
  alpaca.prompt = "P:";
  alpaca.response = "R";
  const auto a = tokenize_rendered(enc, render_example(alpaca, nullptr, true), bos, eos);
  EXPECT_EQ(a.ids, (std::vector<int32_t>{bos, 'P', ':', 'R', eos}));
  EXPECT_EQ(a.labels, (std::vector<int32_t>{M, M, M, 'R', eos}));
  const auto all = tokenize_rendered(enc, render_example(alpaca, nullptr, false), bos, eos);
  EXPECT_EQ(all.labels, (std::vector<int32_t>{M, 'P', ':', 'R', eos}));

  SourceExample text;
  text.response = "xy";
  const auto t = tokenize_rendered(enc, render_example(text, nullptr, true), bos, eos);
  EXPECT_EQ(t.ids, (std::vector<int32_t>{bos, 'x', 'y', eos}));
  EXPECT_EQ(t.labels, (std::vector<int32_t>{M, 'x', 'y', eos}));
}

TEST(Tokenize, SegmentBoundariesFollowTheWholeTextEncoding) {
  const WordEncoder enc;
  // Llama-2 style: per-segment encoding would add a space token before " answer".
  const std::vector<TextSegment> segs = {{"[INST] hi [/INST]", false}, {" answer </s>", true}};
  const std::string text = join_segments(segs);
  const auto ids = enc.encode(text);
  // whole: " [INST]", " hi", " [/INST]", " answer", " ", </s>
  ASSERT_EQ(ids.size(), 6u);
  EXPECT_EQ(ids[3], enc.id_of(" answer"));
  EXPECT_EQ(segment_token_starts(enc, segs, ids), (std::vector<size_t>{0, 3, 6}));

  // Mistral style "[/INST]answer": the token " [/INST]answer" straddles the boundary and goes to
  // the trainable side; the end of the reply is the special token.
  const std::vector<TextSegment> m = {{"[INST] hi [/INST]", false},
                                      {"answer</s>", true},
                                      {" [INST] more [/INST]", false}};
  const auto mids = enc.encode(join_segments(m));
  // " [INST]", " hi", " [/INST]answer", </s>, " ", " [INST]", " more", " [/INST]"
  ASSERT_EQ(mids.size(), 8u);
  EXPECT_EQ(mids[2], enc.id_of(" [/INST]answer"));
  EXPECT_EQ(segment_token_starts(enc, m, mids), (std::vector<size_t>{0, 2, 4, 8}));

  // A straddle at the end of a trained segment stays with it.
  const std::vector<TextSegment> e = {{"q", false}, {" reply", true}, {"tail more", false}};
  const auto eids = enc.encode(join_segments(e));  // " q", " replytail", " more"
  ASSERT_EQ(eids.size(), 3u);
  EXPECT_EQ(segment_token_starts(enc, e, eids), (std::vector<size_t>{0, 1, 2, 3}));
}

// ---- prepare_data -------------------------------------------------------------------------

struct Workspace {
  std::string dir = test::temp_dir("prepare");
  std::string tok_dir = dir + "/tok";
  Workspace() { std::filesystem::create_directories(tok_dir); }
  std::string write(const std::string& name, const std::string& text) const {
    const std::string p = dir + "/" + name;
    std::ofstream(p) << text;
    return p;
  }
  void config(const nlohmann::json& cfg) const {
    std::ofstream(tok_dir + "/tokenizer_config.json") << cfg.dump();
  }
};

const char* kLlama3Template =
    "{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 "
    "%}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}";

std::string messages_line(const std::string& user, const std::string& assistant) {
  nlohmann::json j = {{"messages",
                       {{{"role", "user"}, {"content", user}},
                        {{"role", "assistant"}, {"content", assistant}}}}};
  return j.dump() + "\n";
}

DataOptions options_for(const Workspace& w, const std::string& train) {
  DataOptions o;
  o.train = train;
  o.tokenizer_dir = w.tok_dir;
  o.max_seq_length = 128;
  return o;
}

TEST(PrepareData, MessagesWithAutoTemplateFromTokenizerConfig) {
  Workspace w;
  w.config({{"chat_template", kLlama3Template},
            {"bos_token", "<|begin_of_text|>"},
            {"eos_token", "<|eot_id|>"}});
  std::string lines;
  for (int i = 0; i < 5; ++i) lines += messages_line("q" + std::to_string(i), "a" + std::to_string(i));
  DataOptions o = options_for(w, w.write("d.jsonl", lines));
  const ByteEncoder enc(special_id("<|begin_of_text|>"));
  const PreparedData d = prepare_data(o, enc);
  EXPECT_EQ(d.chat_template, w.tok_dir + "/tokenizer_config.json");  // not a preset's source
  EXPECT_EQ(d.train_format, DatasetFormat::messages);
  ASSERT_EQ(d.train.size(), 5u);
  EXPECT_EQ(d.train[0].ids[0], special_id("<|begin_of_text|>"));
  EXPECT_NE(d.train[0].ids[1], special_id("<|begin_of_text|>"));
  EXPECT_EQ(d.pad_id, special_id("<|eot_id|>"));  // no pad_token: EOS
  // each example: a<digit> + <|eot_id|> trained
  EXPECT_EQ(d.train_stats.trained_tokens, 5 * 3);
  EXPECT_EQ(d.train_stats.records, 5);
  EXPECT_EQ(d.train_stats.examples, 5);
  int64_t tokens = 0;
  for (const auto& e : d.train) tokens += e.size();
  EXPECT_EQ(d.train_stats.tokens, tokens);
  EXPECT_TRUE(d.validation.empty());
}

TEST(PrepareData, TruncateAndDropCounts) {
  Workspace w;
  w.config({{"eos_token", "</s>"}, {"pad_token", "<pad>"}});
  // text examples: BOS + text + EOS = len + 2 tokens
  std::string lines;
  for (int len : {3, 10, 20, 6, 30}) lines += nlohmann::json{{"text", std::string(len, 'x')}}.dump() + "\n";
  DataOptions o = options_for(w, w.write("t.jsonl", lines));
  o.max_seq_length = 12;
  const ByteEncoder enc(special_id("<s>"));

  const PreparedData cut = prepare_data(o, enc);
  EXPECT_EQ(cut.pad_id, special_id("<pad>"));
  EXPECT_EQ(cut.train_stats.examples, 5);
  EXPECT_EQ(cut.train_stats.truncated, 2);
  EXPECT_EQ(cut.train_stats.dropped, 0);
  EXPECT_EQ(cut.train_stats.tokens, 5 + 12 + 12 + 8 + 12);
  EXPECT_EQ(cut.train[2].size(), 12);
  EXPECT_TRUE(cut.train[2].truncated);
  EXPECT_NE(cut.train[2].ids.back(), special_id("</s>"));  // cut before the EOS
  EXPECT_EQ(cut.train[0].ids.back(), special_id("</s>"));
  // trained tokens: every token after the BOS
  EXPECT_EQ(cut.train_stats.trained_tokens, 4 + 11 + 11 + 7 + 11);

  o.truncation = Truncation::drop;
  const PreparedData drop = prepare_data(o, enc);
  EXPECT_EQ(drop.train_stats.examples, 3);
  EXPECT_EQ(drop.train_stats.dropped, 2);
  EXPECT_EQ(drop.train_stats.dropped_too_long, 2);
  EXPECT_EQ(drop.train_stats.truncated, 0);
  EXPECT_EQ(drop.train_stats.tokens, 5 + 12 + 8);

  o.max_seq_length = 4;
  EXPECT_EQ(error_of([&] { prepare_data(o, enc); }),
            o.train + ": every one of its 5 examples is longer than max_seq_length (4) and "
                      "data.truncation is drop");
}

TEST(PrepareData, ConversationsWithoutRepliesAreDroppedAndAllMaskedIsAnError) {
  Workspace w;
  w.config({{"chat_template", kLlama3Template}, {"bos_token", "<|begin_of_text|>"}});
  const ByteEncoder enc;
  const std::string no_reply =
      R"({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]})"
      "\n";
  DataOptions o = options_for(w, w.write("m.jsonl", messages_line("q", "a") + no_reply));
  const PreparedData d = prepare_data(o, enc);
  EXPECT_EQ(d.train_stats.examples, 1);
  EXPECT_EQ(d.train_stats.dropped_untrained, 1);

  o.train = w.write("none.jsonl", no_reply + no_reply);
  EXPECT_EQ(error_of([&] { prepare_data(o, enc); }),
            o.train + ": every label is masked after tokenization: none of its 2 examples has a "
                      "trained token (2 without one, 0 too long); check data.format, "
                      "model.chat_template and data.train_on_responses_only");
  // Truncation that cuts off every reply masks everything too.
  o.train = w.write("long.jsonl", messages_line(std::string(200, 'q'), "a"));
  EXPECT_NE(error_of([&] { prepare_data(o, enc); }).find("every label is masked"),
            std::string::npos);
}

TEST(PrepareData, BadInputErrorsComeBeforeTraining) {
  Workspace w;
  w.config({{"chat_template", kLlama3Template}, {"eos_token", "</s>"}});
  const ByteEncoder enc;
  DataOptions o = options_for(w, w.write("bad.jsonl", "{\"text\": \"a\"}\n{\"text\": \n"));
  EXPECT_EQ(error_of([&] { prepare_data(o, enc); }).rfind(o.train + ":2: invalid JSON: ", 0), 0u);
  o.train = w.write("missing.jsonl", "{\"instruction\": \"a\", \"output\": \"b\"}\n{\"instruction\": \"c\"}\n");
  EXPECT_EQ(error_of([&] { prepare_data(o, enc); }), o.train + ":2: record has no 'output'");
  o.train = w.write("empty.jsonl", "");
  EXPECT_EQ(error_of([&] { prepare_data(o, enc); }), o.train + ": dataset is empty");
  o.train = w.write("ok.jsonl", "{\"text\": \"a\"}\n");
  o.format = "parquet";
  EXPECT_EQ(error_of([&] { prepare_data(o, enc); }),
            "unknown dataset format 'parquet' (expected auto, alpaca, sharegpt, messages, text, "
            "prompt_completion)");
  o.format = "auto";
  o.validation = o.train;
  o.validation_split = 0.1;
  EXPECT_EQ(error_of([&] { prepare_data(o, enc); }),
            "set data.validation or data.validation_split, not both");

  // A conversation the template rejects: the record's file:line, then the template's reason.
  o.validation.clear();
  o.validation_split = 0;
  o.train = w.write("sys.jsonl", messages_line("q", "a") +
                                     R"({"messages": [{"role": "system", "content": "s"}, )"
                                     R"({"role": "user", "content": "u"}]})" "\n");
  o.chat_template = "mistral";
  EXPECT_EQ(error_of([&] { prepare_data(o, enc); }),
            o.train + ":2: chat template mistral: Conversation roles must alternate "
                      "user/assistant/user/assistant/... (template line 1)");

  // An eos_token the tokenizer does not have (which the alpaca template would write): refused
  // up front, naming tokenizer_config.json (issue 8: never silent).
  o.validation.clear();
  o.validation_split = 0;
  o.train = w.write("conv.jsonl", messages_line("q", "a"));
  const WordEncoder words;
  w.config({{"eos_token", "<|nope|>"}});
  o.chat_template = "alpaca";
  EXPECT_EQ(error_of([&] { prepare_data(o, words); }),
            o.tokenizer_dir + "/tokenizer_config.json: eos_token '<|nope|>' is not a token of the "
                              "tokenizer in " + o.tokenizer_dir);
}

TEST(PrepareData, ValidationSplitIsDeterministicAndSized) {
  Workspace w;
  w.config({{"eos_token", "</s>"}});
  std::string lines;
  for (int i = 0; i < 50; ++i) {
    lines += nlohmann::json{{"text", fmt::format("t{}", i)}}.dump();
    lines += '\n';
  }
  DataOptions o = options_for(w, w.write("v.jsonl", lines));
  o.validation_split = 0.1;
  const ByteEncoder enc;
  const PreparedData a = prepare_data(o, enc);
  EXPECT_EQ(a.train.size(), 45u);
  EXPECT_EQ(a.validation.size(), 5u);
  EXPECT_EQ(a.validation_stats.examples, 5);
  EXPECT_EQ(a.train_stats.examples, 45);
  EXPECT_EQ(a.train_stats.records, 50);
  const PreparedData b = prepare_data(o, enc);
  ASSERT_EQ(b.validation.size(), 5u);
  for (size_t i = 0; i < 5; ++i) EXPECT_EQ(a.validation[i].ids, b.validation[i].ids);
  o.seed = 7;
  const PreparedData c = prepare_data(o, enc);
  bool differs = false;
  for (size_t i = 0; i < 5; ++i) differs |= a.validation[i].ids != c.validation[i].ids;
  EXPECT_TRUE(differs);
  // The two parts partition the examples, each in file order.
  std::vector<std::vector<int32_t>> all;
  for (const auto& e : a.train) all.push_back(e.ids);
  for (const auto& e : a.validation) all.push_back(e.ids);
  std::sort(all.begin(), all.end());
  EXPECT_EQ(std::unique(all.begin(), all.end()), all.end());
  EXPECT_EQ(all.size(), 50u);

  // Small fractions still hold out one example; n - 1 at most.
  std::vector<TokenizedExample> tr(3), va;
  for (int i = 0; i < 3; ++i) tr[i].ids = {i};
  split_validation(tr, va, 0.01, 1);
  EXPECT_EQ(va.size(), 1u);
  EXPECT_EQ(tr.size(), 2u);
  std::vector<TokenizedExample> one(1), none;
  EXPECT_THROW(split_validation(one, none, 0.5, 1), Error);

  // A separate validation file.
  o.validation_split = 0;
  o.validation = w.write("val.jsonl", "{\"text\": \"v1\"}\n{\"text\": \"v2\"}\n");
  const PreparedData f = prepare_data(o, enc);
  EXPECT_EQ(f.train.size(), 50u);
  EXPECT_EQ(f.validation.size(), 2u);
  EXPECT_EQ(f.validation_stats.records, 2);
}

TEST(PrepareData, CacheHitMissAndCorruption) {
  Workspace w;
  w.config({{"chat_template", kLlama3Template}, {"bos_token", "<|begin_of_text|>"}});
  std::string lines;
  for (int i = 0; i < 20; ++i) lines += messages_line("question " + std::to_string(i), "answer");
  DataOptions o = options_for(w, w.write("c.jsonl", lines));
  o.cache_dir = w.dir + "/cache";
  const ByteEncoder enc;

  const PreparedData first = prepare_data(o, enc);
  EXPECT_FALSE(first.train_from_cache);
  const int calls_after_first = enc.calls;
  const PreparedData second = prepare_data(o, enc);
  EXPECT_TRUE(second.train_from_cache);
  EXPECT_EQ(enc.calls - calls_after_first, 0)
      << "a hit tokenizes nothing (a model's own template has no preset tokens to check)";
  ASSERT_EQ(second.train.size(), first.train.size());
  for (size_t i = 0; i < first.train.size(); ++i) {
    EXPECT_EQ(second.train[i].ids, first.train[i].ids);
    EXPECT_EQ(second.train[i].labels, first.train[i].labels);
  }
  EXPECT_EQ(second.train_stats, first.train_stats);

  // Anything in the key changes the file: a miss.
  for (auto change : std::vector<std::function<void(DataOptions&)>>{
           [](DataOptions& x) { x.max_seq_length = 64; },
           [](DataOptions& x) { x.train_on_responses_only = false; },
           [](DataOptions& x) { x.truncation = Truncation::drop; },
           [](DataOptions& x) { x.chat_template = "chatml"; }}) {
    DataOptions changed = o;
    change(changed);
    EXPECT_FALSE(prepare_data(changed, enc).train_from_cache);
  }
  std::ofstream(o.train, std::ios::app) << messages_line("one more", "x");
  EXPECT_FALSE(prepare_data(o, enc).train_from_cache);
  EXPECT_TRUE(prepare_data(o, enc).train_from_cache);

  // A corrupt file is detected, rebuilt, and the result is the same.
  std::vector<std::filesystem::path> files;
  for (const auto& f : std::filesystem::directory_iterator(o.cache_dir)) files.push_back(f.path());
  for (const auto& f : files) {
    std::fstream io(f, std::ios::in | std::ios::out | std::ios::binary);
    io.seekp(70);
    io.put('\x7f');
  }
  const PreparedData rebuilt = prepare_data(o, enc);
  EXPECT_FALSE(rebuilt.train_from_cache);
  EXPECT_EQ(rebuilt.train.size(), 21u);
  EXPECT_TRUE(prepare_data(o, enc).train_from_cache);
}

TEST(PrepareData, BuiltinDebugDatasetWithoutTemplateFallsBackToLlama3) {
  Workspace w;  // tokenizer folder without tokenizer_config.json
  DataOptions o;
  o.tokenizer_dir = w.tok_dir;
  o.max_seq_length = 512;
  o.validation_split = 0.05;
  const ByteEncoder enc;
  const PreparedData d = prepare_data(o, enc);
  EXPECT_EQ(d.chat_template, "llama-3");
  EXPECT_EQ(d.train_format, DatasetFormat::messages);
  EXPECT_EQ(d.train_stats.records, 256);
  EXPECT_EQ(d.train.size() + d.validation.size(), 256u);
  EXPECT_EQ(d.validation.size(), 13u);
  for (const auto& e : d.train) EXPECT_EQ(e.ids[0], special_id("<|begin_of_text|>"));

  // And batches of it pass the batch checks.
  const auto batches = make_batches(d.train, batch_options(o, d, 0, 0, 1));
  int64_t trained = 0;
  for (const auto& b : batches) {
    b.validate();
    trained += count_trained_tokens(b);
  }
  EXPECT_EQ(trained, d.train_stats.trained_tokens);
}

}  // namespace
}  // namespace ftune
