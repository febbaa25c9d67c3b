// Added-token extraction (see tokenizer_added.h).
#include "io/tokenizer_added.h"

#include <algorithm>

#include "core/error.h"
#include "io/tokenizer_normalizer.h"
#include "io/tokenizer_unicode.h"

namespace ftune::tok {

void TokenTrie::add(std::string_view pattern, int32_t value) {
  if (pattern.empty()) return;  // an empty added token can never be matched
  int32_t node = 0;
  for (unsigned char b : pattern) {
    auto& ch = nodes_[node].children;
    auto it = std::lower_bound(ch.begin(), ch.end(), b,
                               [](const auto& p, unsigned char x) { return p.first < x; });
    if (it != ch.end() && it->first == b) {
      node = it->second;
    } else {
      const auto fresh = static_cast<int32_t>(nodes_.size());
      ch.insert(it, {b, fresh});
      nodes_.emplace_back();  // may reallocate: `ch` is not used after this
      node = fresh;
    }
  }
  if (nodes_[node].value < 0) nodes_[node].value = value;
  first_byte_[static_cast<unsigned char>(pattern[0])] = true;
}

std::optional<TokenTrie::Match> TokenTrie::find(std::string_view text, size_t from) const {
  for (size_t start = from; start < text.size(); ++start) {
    if (!first_byte_[static_cast<unsigned char>(text[start])]) continue;
    int32_t node = 0;
    std::optional<Match> best;
    for (size_t i = start; i < text.size(); ++i) {
      const auto& ch = nodes_[node].children;
      const auto b = static_cast<unsigned char>(text[i]);
      auto it = std::lower_bound(ch.begin(), ch.end(), b,
                                 [](const auto& p, unsigned char x) { return p.first < x; });
      if (it == ch.end() || it->first != b) break;
      node = it->second;
      if (nodes_[node].value >= 0) best = Match{start, i + 1, nodes_[node].value};
    }
    if (best) return best;
  }
  return std::nullopt;
}

std::vector<AddedToken> AddedVocabulary::parse(const json& list, const std::string& where) {
  std::vector<AddedToken> out;
  if (list.is_null()) return out;
  FTUNE_CHECK(list.is_array(), "{}: 'added_tokens' must be an array", where);
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string w = where + ".added_tokens[" + std::to_string(i) + "]";
    const json& t = list[i];
    AddedToken a;
    a.content = json_string(t, "content", w);
    const int64_t id = json_int(t, "id", w);
    FTUNE_CHECK(id >= 0 && id < (int64_t{1} << 31), "{}: id {} out of range", w, id);
    a.id = static_cast<int32_t>(id);
    a.special = json_bool(t, "special", false, w);
    a.lstrip = json_bool(t, "lstrip", false, w);
    a.rstrip = json_bool(t, "rstrip", false, w);
    a.single_word = json_bool(t, "single_word", false, w);
    a.normalized = json_bool(t, "normalized", !a.special, w);  // HF default: !special
    out.push_back(std::move(a));
  }
  return out;
}

AddedVocabulary::AddedVocabulary(std::vector<AddedToken> tokens, const Normalizer* normalizer)
    : tokens_(std::move(tokens)) {
  for (size_t i = 0; i < tokens_.size(); ++i) {
    AddedToken& t = tokens_[i];
    t.surface = t.content;
    if (t.normalized && normalizer) normalizer->normalize(t.surface);
    by_id_.emplace(t.id, i);
    by_content_.emplace(t.content, i);
  }
  // HF refresh_added_tokens: special tokens are registered before the others.
  for (int pass = 0; pass < 2; ++pass) {
    for (size_t i = 0; i < tokens_.size(); ++i) {
      const AddedToken& t = tokens_[i];
      if (t.special != (pass == 0)) continue;
      if (!t.normalized) {
        raw_trie_.add(t.content, static_cast<int32_t>(i));
      } else {
        normalized_trie_.add(t.surface, static_cast<int32_t>(i));
      }
    }
  }
}

const AddedToken* AddedVocabulary::by_id(int32_t id) const {
  const auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

const AddedToken* AddedVocabulary::by_content(std::string_view content) const {
  const auto it = by_content_.find(std::string(content));
  return it == by_content_.end() ? nullptr : &tokens_[it->second];
}

namespace {

// Code point ending at byte `end` (> 0) of valid UTF-8.
uint32_t code_point_before(std::string_view s, size_t end) {
  size_t start = end - 1;
  while (start > 0 && (static_cast<unsigned char>(s[start]) & 0xC0) == 0x80) --start;
  return next_code_point(s, start);
}

}  // namespace

std::vector<AddedVocabulary::Split> AddedVocabulary::find_matches(std::string_view text,
                                                                  const TokenTrie& trie) const {
  std::vector<Split> splits;
  if (text.empty()) return {{-1, 0, 0}};
  size_t start_offset = 0;
  size_t search_from = 0;
  while (auto m = trie.find(text, search_from)) {
    search_from = m->end;  // the matcher never revisits a consumed match
    size_t start = m->start, stop = m->end;
    const AddedToken& tok = tokens_[m->value];
    if (tok.single_word) {
      const bool start_space = start == 0 || !is_word_character(code_point_before(text, start));
      size_t k = stop;
      const bool stop_space =
          stop == text.size() || !is_word_character(next_code_point(text, k));
      if (!start_space || !stop_space) continue;
    }
    if (tok.lstrip) {
      size_t s = start;  // leftmost start of the whitespace run ending at `start`
      while (s > 0) {
        size_t p = s - 1;
        while (p > 0 && (static_cast<unsigned char>(text[p]) & 0xC0) == 0x80) --p;
        size_t q = p;
        if (!is_white_space(next_code_point(text, q))) break;
        s = p;
      }
      start = std::max(s, start_offset);  // spaces already taken by the previous match stay
    }
    if (tok.rstrip) {
      size_t e = stop;
      while (e < text.size()) {
        size_t q = e;
        if (!is_white_space(next_code_point(text, q))) break;
        e = q;
      }
      stop = e;
    }
    if (start_offset < start) splits.push_back({-1, start_offset, start});
    splits.push_back({m->value, start, stop});
    start_offset = stop;
  }
  if (start_offset != text.size()) splits.push_back({-1, start_offset, text.size()});
  return splits;
}

std::vector<Segment> AddedVocabulary::extract_and_normalize(std::string_view text,
                                                            const Normalizer* normalizer) const {
  std::vector<Segment> out;
  for (const Split& s : find_matches(text, raw_trie_)) {
    if (s.end <= s.start) continue;
    if (s.token >= 0) {
      out.push_back({tokens_[s.token].id, {}});
      continue;
    }
    std::string piece(text.substr(s.start, s.end - s.start));
    const bool at_origin = s.start == 0;
    if (normalizer) normalizer->normalize(piece);
    for (const Split& n : find_matches(piece, normalized_trie_)) {
      if (n.end <= n.start) continue;
      if (n.token >= 0) {
        out.push_back({tokens_[n.token].id, {}});
      } else {
        out.push_back({std::nullopt, {piece.substr(n.start, n.end - n.start),
                                      at_origin && n.start == 0}});
      }
    }
  }
  return out;
}

}  // namespace ftune::tok
