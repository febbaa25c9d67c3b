// The data pipeline with the repo's real Llama-3-style tokenizer (assets/tokenizer): template
// detection from its tokenizer_config.json, one BOS, masking token by token, the fast path
// claim for llama-3, the built-in dataset end to end, and the tokenizer in the cache key.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/batch.h"
#include "data/data_files.h"
#include "data/debug_dataset.h"
#include "data/prepare_data.h"
#include "data/tokenizer_encoder.h"
#include "io/tokenizer.h"
#include "support/test_support.h"

namespace ftune {
namespace {

const std::string kTokDir = std::string(FTUNE_TEST_DATA) + "/../assets/tokenizer";

const Tokenizer& tokenizer() {
  static const Tokenizer tok = Tokenizer::from_file(kTokDir + "/tokenizer.json");
  return tok;
}

// Maximal runs of trained tokens, decoded.
std::vector<std::string> trained_spans(const TokenizedExample& ex) {
  std::vector<std::string> out;
  std::vector<int32_t> run;
  for (size_t i = 0; i <= ex.ids.size(); ++i) {
    if (i < ex.ids.size() && ex.labels[i] != kIgnoreIndex) {
      EXPECT_EQ(ex.labels[i], ex.ids[i]);
      run.push_back(ex.ids[i]);
    } else if (!run.empty()) {
      out.push_back(tokenizer().decode(run));
      run.clear();
    }
  }
  return out;
}

TEST(DataWithTokenizer, Llama3ConversationMaskedTokenByToken) {
  const ChatTemplate t = resolve_chat_template("auto", kTokDir + "/tokenizer_config.json");
  ASSERT_EQ(t.name, "llama-3");
  const TokenizerEncoder enc(tokenizer(), "");
  SourceExample src;
  src.is_conversation = true;
  src.conversation = {{"system", "You are terse."},
                      {"user", "What is 2 + 3?"},
                      {"assistant", " 2 + 3 = 5. "},
                      {"user", "And the capital of Peru?"},
                      {"assistant", "Lima."}};
  const RenderedExample r = render_example(src, &t, true);
  const TokenizedExample ex = tokenize_rendered(enc, r, tokenizer().bos_id(), std::nullopt);

  // ids = encode(rendered text) exactly, with the template's single BOS.
  const std::string text = join_segments(r.segments);
  EXPECT_EQ(ex.ids, tokenizer().encode(text, false));
  const int32_t bos = *tokenizer().token_to_id("<|begin_of_text|>");
  EXPECT_EQ(ex.ids[0], bos);
  EXPECT_EQ(std::count(ex.ids.begin(), ex.ids.end(), bos), 1);

  // Token by token: labels are the ids of the reply tokens and their <|eot_id|>, else -100.
  EXPECT_EQ(trained_spans(ex), (std::vector<std::string>{"2 + 3 = 5.<|eot_id|>", "Lima.<|eot_id|>"}));
  const std::vector<int32_t> reply1 = tokenizer().encode("2 + 3 = 5.<|eot_id|>", false);
  const std::vector<int32_t> head = tokenizer().encode(
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are terse.<|eot_id|>"
      "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2 + 3?<|eot_id|>"
      "<|start_header_id|>assistant<|end_header_id|>\n\n",
      false);
  ASSERT_GT(ex.ids.size(), head.size() + reply1.size());
  for (size_t i = 0; i < head.size(); ++i) EXPECT_EQ(ex.labels[i], kIgnoreIndex) << i;
  for (size_t i = 0; i < reply1.size(); ++i) {
    EXPECT_EQ(ex.labels[head.size() + i], reply1[i]) << i;
  }
  EXPECT_EQ(ex.labels[head.size() + reply1.size()], kIgnoreIndex);  // next header
}

TEST(DataWithTokenizer, BuiltinDatasetEndToEndAndFastPathHolds) {
  DataOptions o;
  o.tokenizer_dir = kTokDir;
  o.max_seq_length = 256;
  o.micro_batch_rows = 2;
  const PreparedData d = prepare_data(o, tokenizer());
  EXPECT_EQ(d.chat_template, "llama-3");
  EXPECT_EQ(d.train_stats.records, 256);
  EXPECT_EQ(d.train_stats.examples, 256);
  EXPECT_EQ(d.train_stats.dropped, 0);
  EXPECT_EQ(d.train_stats.truncated, 0);
  EXPECT_EQ(d.pad_id, *tokenizer().token_to_id("<|finetune_right_pad_id|>"));
  const int32_t eot = *tokenizer().token_to_id("<|eot_id|>");
  for (const auto& ex : d.train) {
    const auto spans = trained_spans(ex);
    ASSERT_FALSE(spans.empty());
    for (const auto& s : spans) {
      EXPECT_EQ(s.find("<|start_header_id|>"), std::string::npos) << s;
      EXPECT_EQ(s.substr(s.size() - 10), "<|eot_id|>") << s;
    }
    EXPECT_EQ(ex.labels.back(), eot);
  }

  // The documented fast-path claim: for llama-3 and a byte-level tokenizer, per-segment
  // encodings concatenate to the whole-text encoding.
  const ChatTemplate t = chat_template_by_name("llama-3");
  const TokenizerEncoder enc(tokenizer(), "");
  for (const auto& rec : parse_dataset_text(builtin_debug_dataset_jsonl(), "debug")) {
    const auto r = render_example(convert_record(rec, DatasetFormat::messages), &t, true);
    std::vector<int32_t> concat;
    for (const auto& s : r.segments) {
      const auto part = enc.encode(s.text);
      concat.insert(concat.end(), part.begin(), part.end());
    }
    ASSERT_EQ(concat, enc.encode(join_segments(r.segments))) << rec.origin;
  }

  // Two ranks: same number of micro-batches, all trained tokens seen once.
  int64_t trained = 0;
  size_t n0 = 0;
  for (int rank = 0; rank < 2; ++rank) {
    const auto batches = make_batches(d.train, batch_options(o, d, 0, rank, 2));
    if (rank == 0) n0 = batches.size();
    EXPECT_EQ(batches.size(), n0);
    for (const auto& b : batches) {
      b.validate();
      trained += count_trained_tokens(b);
    }
  }
  EXPECT_EQ(trained, d.train_stats.trained_tokens);
}

TEST(DataWithTokenizer, TokenizerBytesAreInTheCacheKey) {
  const std::string dir = test::temp_dir("tok_cache");
  const std::string tok_dir = dir + "/tok";
  std::filesystem::create_directories(tok_dir);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
    std::filesystem::copy_file(kTokDir + "/" + f, tok_dir + "/" + f);
  }
  DataOptions o;
  o.tokenizer_dir = tok_dir;
  o.max_seq_length = 256;
  o.cache_dir = dir + "/cache";
  EXPECT_FALSE(prepare_data(o, tokenizer()).train_from_cache);
  EXPECT_TRUE(prepare_data(o, tokenizer()).train_from_cache);
  std::ofstream(tok_dir + "/tokenizer.json", std::ios::app) << " ";  // same JSON, other bytes
  EXPECT_FALSE(prepare_data(o, tokenizer()).train_from_cache);
  EXPECT_TRUE(prepare_data(o, tokenizer()).train_from_cache);
}

}  // namespace
}  // namespace ftune
