// Deterministic generator of the built-in debug dataset (see debug_dataset.h). Draws use raw
// std::mt19937_64 outputs (fixed by the C++ standard) so every platform makes the same bytes.
#include "data/debug_dataset.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <nlohmann/json.hpp>
#include <random>
#include <string_view>
#include <utility>
#include <vector>

namespace ftune {

namespace {

constexpr int kConversations = 256;
constexpr uint64_t kSeed = 20240917;

constexpr std::array<std::pair<std::string_view, std::string_view>, 20> kCapitals = {{
    {"France", "Paris"},       {"Germany", "Berlin"},    {"Italy", "Rome"},
    {"Spain", "Madrid"},       {"Japan", "Tokyo"},       {"Canada", "Ottawa"},
    {"Egypt", "Cairo"},        {"Kenya", "Nairobi"},     {"Peru", "Lima"},
    {"Norway", "Oslo"},        {"Greece", "Athens"},     {"Poland", "Warsaw"},
    {"Portugal", "Lisbon"},    {"Austria", "Vienna"},    {"Ireland", "Dublin"},
    {"Chile", "Santiago"},     {"Cuba", "Havana"},       {"Thailand", "Bangkok"},
    {"Sweden", "Stockholm"},   {"Argentina", "Buenos Aires"},
}};

constexpr std::array<std::string_view, 24> kWords = {
    "apple", "river", "stone", "cloud", "tiger", "lemon", "piano", "glass",
    "house", "green", "silver", "candle", "ocean", "pencil", "garden", "rocket",
    "window", "orange", "forest", "bridge", "yellow", "planet", "castle", "mirror"};

class Draw {
 public:
  explicit Draw(uint64_t seed) : rng_(seed) {}
  int below(int n) { return static_cast<int>(rng_() % static_cast<uint64_t>(n)); }

 private:
  std::mt19937_64 rng_;
};

std::vector<std::string> pick_words(Draw& d, int n) {
  std::vector<std::string> w;
  for (int i = 0; i < n; ++i) w.emplace_back(kWords[d.below(static_cast<int>(kWords.size()))]);
  return w;
}

std::string join(const std::vector<std::string>& w, std::string_view sep) {
  std::string s;
  for (size_t i = 0; i < w.size(); ++i) s += (i ? std::string(sep) : "") + w[i];
  return s;
}

// One question and its answer.
std::pair<std::string, std::string> make_task(Draw& d) {
  switch (d.below(8)) {
    case 0: {
      const int a = d.below(50), b = d.below(50);
      return {fmt::format("What is {} + {}?", a, b), fmt::format("{} + {} = {}.", a, b, a + b)};
    }
    case 1: {
      int a = d.below(90) + 10, b = d.below(a + 1);
      return {fmt::format("What is {} - {}?", a, b), fmt::format("{} - {} = {}.", a, b, a - b)};
    }
    case 2: {
      const auto& [country, capital] = kCapitals[d.below(static_cast<int>(kCapitals.size()))];
      return {fmt::format("What is the capital of {}?", country),
              fmt::format("The capital of {} is {}.", country, capital)};
    }
    case 3: {
      auto w = pick_words(d, 3 + d.below(3));
      const std::string q = "Reverse the order of these words: " + join(w, " ");
      std::reverse(w.begin(), w.end());
      return {q, join(w, " ")};
    }
    case 4: {
      const auto w = pick_words(d, 2 + d.below(4));
      return {"Repeat exactly: " + join(w, " "), join(w, " ")};
    }
    case 5: {
      const int start = d.below(20), step = 1 + d.below(9);
      std::vector<std::string> shown, next;
      for (int i = 0; i < 4; ++i) shown.push_back(std::to_string(start + i * step));
      for (int i = 4; i < 7; ++i) next.push_back(std::to_string(start + i * step));
      return {"Continue the sequence: " + join(shown, ", "), join(next, ", ")};
    }
    case 6: {
      const std::string w = pick_words(d, 1)[0];
      return {fmt::format("Spell '{}' backwards.", w), std::string(w.rbegin(), w.rend())};
    }
    default: {
      const std::string w = pick_words(d, 1)[0];
      std::string up = w;
      for (char& c : up) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      return {fmt::format("Write '{}' in capital letters.", w), up};
    }
  }
}

}  // namespace

std::string builtin_debug_dataset_jsonl() {
  using ordered = nlohmann::ordered_json;
  Draw d(kSeed);
  std::string out;
  for (int i = 0; i < kConversations; ++i) {
    ordered messages = ordered::array();
    auto add = [&](const char* role, const std::string& content) {
      ordered m;
      m["role"] = role;
      m["content"] = content;
      messages.push_back(std::move(m));
    };
    if (d.below(4) == 0) add("system", "You are a helpful assistant.");
    const int rounds = d.below(5) == 0 ? 2 : 1;
    for (int r = 0; r < rounds; ++r) {
      const auto [question, answer] = make_task(d);
      add("user", question);
      add("assistant", answer);
    }
    ordered record;
    record["messages"] = std::move(messages);
    out += record.dump() + "\n";
  }
  return out;
}

}  // namespace ftune
