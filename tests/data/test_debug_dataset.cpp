// The built-in debug dataset: deterministic, the committed export matches it, it is valid
// messages-format data, and its answers are right (checked by recomputing each task).
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include "data/data_files.h"
#include "data/dataset_format.h"
#include "data/debug_dataset.h"

namespace ftune {
namespace {

const std::string kAsset = std::string(FTUNE_TEST_DATA) + "/../assets/debug_dataset/conversations.jsonl";

bool starts_with(const std::string& s, const std::string& p) { return s.rfind(p, 0) == 0; }

std::vector<std::string> words(const std::string& s) {
  std::istringstream in(s);
  std::vector<std::string> w;
  for (std::string x; in >> x;) w.push_back(x);
  return w;
}

// Recomputes the answer of a question from its text; "" when the question is unknown.
std::string expected_answer(const std::string& q) {
  int a = 0, b = 0;
  char op = 0;
  if (std::sscanf(q.c_str(), "What is %d %c %d?", &a, &op, &b) == 3) {
    return std::to_string(a) + " " + op + " " + std::to_string(b) + " = " +
           std::to_string(op == '+' ? a + b : a - b) + ".";
  }
  if (starts_with(q, "What is the capital of ")) return "";  // checked separately
  if (starts_with(q, "Reverse the order of these words: ")) {
    auto w = words(q.substr(34));
    std::reverse(w.begin(), w.end());
    std::string s;
    for (size_t i = 0; i < w.size(); ++i) s += (i ? " " : "") + w[i];
    return s;
  }
  if (starts_with(q, "Repeat exactly: ")) return q.substr(16);
  if (starts_with(q, "Spell '")) {
    const std::string w = q.substr(7, q.find('\'', 7) - 7);
    return std::string(w.rbegin(), w.rend());
  }
  if (starts_with(q, "Write '")) {
    std::string w = q.substr(7, q.find('\'', 7) - 7);
    for (char& c : w) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    return w;
  }
  if (starts_with(q, "Continue the sequence: ")) {
    std::vector<int> v;
    std::istringstream in(q.substr(23));
    for (std::string x; std::getline(in, x, ',');) v.push_back(std::stoi(x));
    const int step = v[1] - v[0];
    std::string s;
    for (int i = 0; i < 3; ++i) s += (i ? ", " : "") + std::to_string(v.back() + (i + 1) * step);
    return s;
  }
  return "<unknown question>";
}

TEST(DebugDataset, DeterministicAndTheCommittedExportMatches) {
  const std::string a = builtin_debug_dataset_jsonl();
  EXPECT_EQ(a, builtin_debug_dataset_jsonl());
  if (const char* regen = std::getenv("FTUNE_REGENERATE_ASSETS"); regen && std::string(regen) == "1") {
    write_file_atomic(kAsset, a);
  }
  EXPECT_EQ(read_file_bytes(kAsset), a)
      << "assets/debug_dataset/conversations.jsonl is stale; rerun this test with "
         "FTUNE_REGENERATE_ASSETS=1 and commit the file";
}

TEST(DebugDataset, ValidMessagesWithCorrectAnswers) {
  const auto records = parse_dataset_text(builtin_debug_dataset_jsonl(), "debug");
  ASSERT_GE(records.size(), 200u);
  ASSERT_EQ(detect_format(records[0]), DatasetFormat::messages);
  std::set<std::string> kinds;
  std::set<std::string> distinct;
  int with_system = 0, multi_turn = 0;
  for (const auto& r : records) {
    const SourceExample ex = convert_record(r, DatasetFormat::messages);
    size_t i = 0;
    if (ex.conversation[0].role == "system") {
      ++with_system;
      i = 1;
    }
    ASSERT_EQ((ex.conversation.size() - i) % 2, 0u) << r.origin;
    multi_turn += (ex.conversation.size() - i) > 2;
    for (; i < ex.conversation.size(); i += 2) {
      ASSERT_EQ(ex.conversation[i].role, "user") << r.origin;
      ASSERT_EQ(ex.conversation[i + 1].role, "assistant") << r.origin;
      const std::string& q = ex.conversation[i].content;
      const std::string& ans = ex.conversation[i + 1].content;
      kinds.insert(q.substr(0, 10));
      distinct.insert(q);
      const std::string want = expected_answer(q);
      if (starts_with(q, "What is the capital of ")) {
        const std::string country = q.substr(23, q.size() - 24);
        EXPECT_TRUE(starts_with(ans, "The capital of " + country + " is ")) << ans;
      } else {
        EXPECT_EQ(ans, want) << r.origin << ": " << q;
      }
    }
  }
  EXPECT_GE(kinds.size(), 7u);  // all task kinds occur
  EXPECT_GT(distinct.size(), 150u);
  EXPECT_GT(with_system, 30);
  EXPECT_GT(multi_turn, 20);
}

}  // namespace
}  // namespace ftune
