// BPE model (see tokenizer_bpe.h). merge_word and the merge loop follow HF
// tokenizers/src/models/bpe/{model.rs,word.rs}: characters (or <0xNN> byte tokens, or unk) as
// initial symbols, then repeatedly the lowest-rank merge, leftmost first, via a priority queue
// whose stale entries are skipped.
#include "io/tokenizer_bpe.h"

#include <fmt/format.h>

#include <queue>

#include "core/error.h"
#include "io/tokenizer_unicode.h"

namespace ftune::tok {

namespace {

std::optional<std::string> optional_string(const json& j, const char* key,
                                           const std::string& where) {
  const auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  FTUNE_CHECK(it->is_string(), "{}: key '{}' must be a string or null", where, key);
  return it->get<std::string>();
}

}  // namespace

std::unique_ptr<BpeModel> BpeModel::from_json(const json& j, const std::string& where) {
  std::unique_ptr<BpeModel> m(new BpeModel());
  m->where_ = where;
  if (const auto it = j.find("dropout"); it != j.end() && !it->is_null()) {
    FTUNE_CHECK(it->is_number(), "{}: 'dropout' must be a number or null", where);
    FTUNE_CHECK(it->get<double>() == 0.0,
                "{}: BPE dropout {} is not supported (encoding would be random)", where,
                it->get<double>());
  }
  m->unk_token_ = optional_string(j, "unk_token", where);
  m->continuing_subword_prefix_ = optional_string(j, "continuing_subword_prefix", where);
  m->end_of_word_suffix_ = optional_string(j, "end_of_word_suffix", where);
  m->fuse_unk_ = json_bool(j, "fuse_unk", false, where);
  m->byte_fallback_ = json_bool(j, "byte_fallback", false, where);
  m->ignore_merges_ = json_bool(j, "ignore_merges", false, where);

  const json& vocab = json_at(j, "vocab", where);
  FTUNE_CHECK(vocab.is_object(), "{}: 'vocab' must be an object of token → id", where);
  int64_t bound = 0;
  m->vocab_.reserve(vocab.size());
  for (const auto& [token, id] : vocab.items()) {
    FTUNE_CHECK(id.is_number_integer() && id.get<int64_t>() >= 0 &&
                    id.get<int64_t>() < (int64_t{1} << 31),
                "{}: vocab id of '{}' must be a non-negative 32-bit integer", where, token);
    m->vocab_.emplace(token, static_cast<int32_t>(id.get<int64_t>()));
    bound = std::max(bound, id.get<int64_t>() + 1);
  }
  // Ids index a table of bound entries: a vocabulary's ids are (nearly) 0..size-1, so an id far
  // past its size is a broken file, not a reason to allocate gigabytes.
  const int64_t most = static_cast<int64_t>(vocab.size()) + (int64_t{1} << 20);
  FTUNE_CHECK(bound <= most, "{}: vocab id {} is far past the vocabulary's {} entries (ids must "
              "stay below {})", where, bound - 1, vocab.size(), most);
  m->vocab_r_.assign(static_cast<size_t>(bound), std::string());
  m->has_id_.assign(static_cast<size_t>(bound), false);
  for (const auto& [token, id] : m->vocab_) {
    m->vocab_r_[id] = token;
    m->has_id_[id] = true;
  }
  m->byte_ids_.assign(256, -1);
  for (int b = 0; b < 256; ++b) {
    if (auto id = m->token_to_id(fmt::format("<0x{:02X}>", b))) m->byte_ids_[b] = *id;
  }

  const json& merges = json_at(j, "merges", where);
  FTUNE_CHECK(merges.is_array(), "{}: 'merges' must be an array", where);
  const size_t prefix_len =
      m->continuing_subword_prefix_ ? m->continuing_subword_prefix_->size() : 0;
  m->merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const json& mj = merges[rank];
    std::string a, b;
    if (mj.is_string()) {  // "a b" (tokenizers < 0.20)
      const std::string s = mj.get<std::string>();
      const size_t sp = s.find(' ');
      FTUNE_CHECK(sp != std::string::npos, "{}: merges[{}] '{}' is not of the form \"a b\"",
                  where, rank, s);
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (mj.is_array() && mj.size() == 2 && mj[0].is_string() && mj[1].is_string()) {
      a = mj[0].get<std::string>();  // ["a", "b"] (tokenizers >= 0.20)
      b = mj[1].get<std::string>();
    } else {
      fail("{}: merges[{}] must be \"a b\" or [\"a\", \"b\"], got {}", where, rank, mj.dump());
    }
    const auto a_id = m->token_to_id(a);
    const auto b_id = m->token_to_id(b);
    FTUNE_CHECK(a_id && b_id, "{}: merges[{}] uses '{}' which is not in the vocab", where, rank,
                a_id ? b : a);
    const std::string merged = a + (b.size() >= prefix_len ? b.substr(prefix_len) : b);
    const auto new_id = m->token_to_id(merged);
    FTUNE_CHECK(new_id.has_value(), "{}: merges[{}] result '{}' is not in the vocab", where, rank,
                merged);
    // Later duplicates win, as HF's collect into a HashMap.
    m->merges_[(static_cast<uint64_t>(*a_id) << 32) | static_cast<uint32_t>(*b_id)] = {
        static_cast<int32_t>(rank), *new_id};
  }
  return m;
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= vocab_r_.size() || !has_id_[id]) return nullptr;
  return &vocab_r_[id];
}

std::vector<int32_t> BpeModel::tokenize(const std::string& word) const {
  if (word.empty()) return {};
  if (ignore_merges_) {  // a whole pre-token in the vocab is emitted as is
    if (auto id = token_to_id(word)) return {*id};
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (const auto it = cache_.find(word); it != cache_.end()) return it->second;
  }
  std::vector<int32_t> ids = merge_word(word);
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mutex_);
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    cache_.emplace(word, ids);
  }
  return ids;
}

std::vector<int32_t> BpeModel::merge_word(const std::string& w) const {
  struct Symbol {
    int32_t id;
    int64_t prev, next;
    size_t len;  // bytes of the original word; 0 once merged into its left neighbour
  };
  std::vector<Symbol> symbols;
  symbols.reserve(w.size());
  auto add = [&](int32_t id, size_t len) {
    const auto n = static_cast<int64_t>(symbols.size());
    if (!symbols.empty()) symbols.back().next = n;
    symbols.push_back({id, n - 1, -1, len});
  };

  // Initial symbols: one per character (HF BPE::merge_word).
  // Pending (possibly fused) unknown character run.
  bool unk_pending = false;
  int32_t unk_pending_id = -1;
  size_t unk_pending_len = 0;
  for (size_t i = 0; i < w.size();) {
    const size_t start = i;
    next_code_point(w, i);
    const size_t byte_len = i - start;
    std::string s = w.substr(start, byte_len);
    if (start != 0 && continuing_subword_prefix_) s = *continuing_subword_prefix_ + s;
    if (i == w.size() && end_of_word_suffix_) s += *end_of_word_suffix_;

    if (auto id = token_to_id(s)) {
      if (unk_pending) {
        add(unk_pending_id, unk_pending_len);
        unk_pending = false;
      }
      add(*id, byte_len);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (unsigned char b : s) all = all && byte_ids_[b] >= 0;
      if (all) {
        // As HF: a pending unk is not flushed here, so it lands after these bytes.
        for (unsigned char b : s) add(byte_ids_[b], 1);
        continue;
      }
    }
    if (unk_token_) {
      const auto unk_id = token_to_id(*unk_token_);
      FTUNE_CHECK(unk_id.has_value(), "{}: unk_token '{}' is not in the vocab", where_,
                  *unk_token_);
      if (unk_pending && fuse_unk_) {
        unk_pending_len += byte_len;
      } else {
        if (unk_pending) add(unk_pending_id, unk_pending_len);
        unk_pending = true;
        unk_pending_id = *unk_id;
        unk_pending_len = byte_len;
      }
    }
    // Without an unk token an unknown character is dropped, as HF does.
  }
  if (unk_pending) add(unk_pending_id, unk_pending_len);

  // Merge loop (HF Word::merge_all): lowest rank first, then lowest position.
  struct Merge {
    int32_t rank;
    int64_t pos;
    int32_t new_id;
    bool operator>(const Merge& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  auto find_merge = [&](int32_t a, int32_t b) -> const MergeInfo* {
    const auto it = merges_.find((static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b));
    return it == merges_.end() ? nullptr : &it->second;
  };
  std::priority_queue<Merge, std::vector<Merge>, std::greater<>> queue;
  for (size_t k = 0; k + 1 < symbols.size(); ++k) {
    if (const MergeInfo* m = find_merge(symbols[k].id, symbols[k + 1].id))
      queue.push({m->rank, static_cast<int64_t>(k), m->new_id});
  }
  while (!queue.empty()) {
    const Merge top = queue.top();
    queue.pop();
    Symbol& cur = symbols[top.pos];
    if (cur.len == 0 || cur.next == -1) continue;
    const int64_t next_pos = cur.next;
    const Symbol right = symbols[next_pos];
    const MergeInfo* still = find_merge(cur.id, right.id);
    if (!still || still->new_id != top.new_id) continue;  // stale entry

    cur.id = top.new_id;
    cur.len += right.len;
    cur.next = right.next;
    symbols[next_pos].len = 0;
    if (right.next > -1 && static_cast<size_t>(right.next) < symbols.size())
      symbols[right.next].prev = top.pos;

    if (cur.prev >= 0) {
      if (const MergeInfo* m = find_merge(symbols[cur.prev].id, cur.id))
        queue.push({m->rank, cur.prev, m->new_id});
    }
    if (cur.next > -1 && static_cast<size_t>(cur.next) < symbols.size()) {
      if (const MergeInfo* m = find_merge(cur.id, symbols[cur.next].id))
        queue.push({m->rank, top.pos, m->new_id});
    }
  }
  std::vector<int32_t> ids;
  ids.reserve(symbols.size());
  for (const auto& s : symbols)
    if (s.len != 0) ids.push_back(s.id);
  return ids;
}

}  // namespace ftune::tok
