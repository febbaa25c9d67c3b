// Token cache files: round trip, FNV-1a reference values, miss / hit, and detection of
// corrupt, truncated, foreign and old-version files.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/batch.h"
#include "data/token_cache.h"
#include "support/test_support.h"

namespace ftune {
namespace {

TokenizedDataset sample() {
  TokenizedDataset d;
  TokenizedExample a;
  a.ids = {128000, 5, -3, 2147483647};
  a.labels = {kIgnoreIndex, 5, -3, kIgnoreIndex};
  TokenizedExample b;
  b.ids = {9};
  b.labels = {9};
  b.truncated = true;
  d.examples = {a, b};
  d.stats.records = 3;
  d.stats.examples = 2;
  d.stats.dropped = 1;
  d.stats.dropped_untrained = 1;
  d.stats.truncated = 1;
  d.stats.tokens = 5;
  d.stats.trained_tokens = 1;
  return d;
}

void expect_same(const TokenizedDataset& a, const TokenizedDataset& b) {
  EXPECT_EQ(a.stats, b.stats);
  ASSERT_EQ(a.examples.size(), b.examples.size());
  for (size_t i = 0; i < a.examples.size(); ++i) {
    EXPECT_EQ(a.examples[i].ids, b.examples[i].ids);
    EXPECT_EQ(a.examples[i].labels, b.examples[i].labels);
    EXPECT_EQ(a.examples[i].truncated, b.examples[i].truncated);
  }
}

std::string problem_of(std::string_view bytes, uint64_t key) {
  try {
    decode_token_cache(bytes, key);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(TokenCache, Fnv1aMatchesPublishedValues) {
  // Reference values of 64-bit FNV-1a (Fowler/Noll/Vo test vectors).
  EXPECT_EQ(Fnv1a64().value(), 0xcbf29ce484222325ull);
  EXPECT_EQ(Fnv1a64().bytes("a").value(), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(Fnv1a64().bytes("foobar").value(), 0x85944171f73967e8ull);
  // Length prefixes keep fields apart.
  EXPECT_NE(Fnv1a64().field("ab").field("c").value(), Fnv1a64().field("a").field("bc").value());
}

TEST(TokenCache, RoundTripAndLayout) {
  const TokenizedDataset d = sample();
  const std::string bytes = encode_token_cache(0x1234, d);
  EXPECT_EQ(bytes.substr(0, 8), "FTUNETOK");
  // header 48 + stats 64 + (4+1+16+4) + (4+1+4+1)
  EXPECT_EQ(bytes.size(), 48u + 64u + 25u + 10u);
  expect_same(decode_token_cache(bytes, 0x1234), d);
}

TEST(TokenCache, DamagedFilesAreRejectedWithAReason) {
  const std::string good = encode_token_cache(77, sample());
  EXPECT_NE(problem_of(good.substr(0, 20), 77).find("shorter than the 48-byte header"),
            std::string::npos);
  EXPECT_NE(problem_of(good.substr(0, good.size() - 3), 77).find("truncated"), std::string::npos);
  std::string flipped = good;
  flipped[60] ^= 0x10;
  EXPECT_EQ(problem_of(flipped, 77), "checksum mismatch");
  std::string magic = good;
  magic[0] = 'X';
  EXPECT_EQ(problem_of(magic, 77), "bad magic");
  std::string version = good;
  version[8] = static_cast<char>(kTokenCacheVersion + 1);
  EXPECT_NE(problem_of(version, 77).find("version"), std::string::npos);
  EXPECT_NE(problem_of(good, 78).find("key"), std::string::npos);
  EXPECT_EQ(problem_of(good, 77), "");
}

TEST(TokenCache, LabelsMustBeIdsOrIgnore) {
  TokenizedDataset d = sample();
  d.examples[0].labels[1] = 6;
  EXPECT_THROW(encode_token_cache(1, d), Error);
}

TEST(TokenCache, MissHitAndCorruptFileOnDisk) {
  const std::string dir = test::temp_dir("token_cache") + "/nested/cache";
  TokenCache cache(dir);
  CacheLoad miss = cache.load(42);
  EXPECT_FALSE(miss.data.has_value());
  EXPECT_EQ(miss.problem, "");

  cache.store(42, sample());
  EXPECT_TRUE(std::filesystem::is_regular_file(cache.path_for(42)));
  EXPECT_EQ(cache.path_for(42), dir + "/000000000000002a.tokens");
  // Nothing but the cache file is left (the temporary file was renamed).
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir),
                          std::filesystem::directory_iterator()),
            1);
  CacheLoad hit = cache.load(42);
  ASSERT_TRUE(hit.data.has_value());
  expect_same(*hit.data, sample());

  // Truncate the file: a miss that says why.
  std::filesystem::resize_file(cache.path_for(42), 100);
  CacheLoad bad = cache.load(42);
  EXPECT_FALSE(bad.data.has_value());
  EXPECT_NE(bad.problem.find(cache.path_for(42)), std::string::npos) << bad.problem;
  EXPECT_NE(bad.problem.find("truncated"), std::string::npos) << bad.problem;
  // Rebuilt by the next store.
  cache.store(42, sample());
  EXPECT_TRUE(cache.load(42).data.has_value());
}

}  // namespace
}  // namespace ftune
