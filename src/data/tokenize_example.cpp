// Rendering examples to flagged text and tokenizing them with labels (see tokenize_example.h
// for the segment-boundary rule).
#include "data/tokenize_example.h"

#include <algorithm>

#include "core/batch.h"
#include "core/error.h"

namespace ftune {

namespace {

// Drops empty segments and merges neighbours with the same flag, so every boundary left is a
// change between trained and not trained.
std::vector<TextSegment> normalized(std::vector<TextSegment> in) {
  std::vector<TextSegment> out;
  for (auto& s : in) {
    if (s.text.empty()) continue;
    if (!out.empty() && out.back().trainable == s.trainable) {
      out.back().text += s.text;
    } else {
      out.push_back(std::move(s));
    }
  }
  return out;
}

size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

}  // namespace

int64_t TokenizedExample::trained_tokens() const {
  int64_t n = 0;
  for (size_t i = 1; i < labels.size(); ++i) n += (labels[i] != kIgnoreIndex);
  return n;
}

RenderedExample render_example(const SourceExample& ex, const ChatTemplate* tmpl,
                               bool train_on_responses_only) {
  RenderedExample out;
  out.origin = ex.origin;
  if (ex.is_conversation) {
    FTUNE_CHECK(tmpl != nullptr, "{}: a conversation needs a chat template", ex.origin);
    try {
      out.segments = render_chat(*tmpl, ex.conversation, train_on_responses_only, ex.chat_args);
    } catch (const Error& e) {
      fail("{}: {}", ex.origin, e.what());
    }
  } else {
    out.segments = {TextSegment{ex.prompt, false}, TextSegment{ex.response, true}};
    out.add_bos = true;
    out.add_eos = true;
  }
  if (!train_on_responses_only) {
    for (auto& s : out.segments) s.trainable = true;
  }
  out.segments = normalized(std::move(out.segments));
  return out;
}

std::vector<size_t> segment_token_starts(const TextEncoder& enc,
                                         const std::vector<TextSegment>& segments,
                                         const std::vector<int32_t>& ids) {
  std::vector<size_t> starts(segments.size() + 1, 0);
  starts.back() = ids.size();
  if (segments.empty()) return starts;

  // Fast path: per-segment encodings concatenate to the whole-text encoding.
  std::vector<int32_t> concat;
  std::vector<size_t> fast(segments.size() + 1, 0);
  for (size_t i = 0; i < segments.size(); ++i) {
    const auto part = enc.encode(segments[i].text);
    concat.insert(concat.end(), part.begin(), part.end());
    fast[i + 1] = concat.size();
  }
  if (concat == ids) return fast;

  // Slow path: place each boundary at a "clean" text position, one whose prefix encodes to a
  // prefix of `ids` (then ids[0:k] cover exactly that text). A boundary that is not clean lies
  // inside a token (or where truncating the text re-merges its tail); the tokens between the
  // nearest clean positions around it go to the trainable side: towards the start of the
  // trained text for an untrained->trained boundary, towards the end for trained->untrained.
  const std::string text = join_segments(segments);
  auto clean_index = [&](size_t pos) -> std::optional<size_t> {
    const auto pre = enc.encode(std::string_view(text).substr(0, pos));
    if (pre.size() > ids.size() || !std::equal(pre.begin(), pre.end(), ids.begin())) {
      return std::nullopt;
    }
    return pre.size();
  };
  auto is_char_start = [&](size_t pos) {
    return pos >= text.size() || (static_cast<unsigned char>(text[pos]) & 0xC0) != 0x80;
  };
  constexpr size_t kMaxScan = 64;  // bytes searched either way before giving up
  std::vector<size_t> seg_begin(segments.size() + 1, 0);
  for (size_t i = 0; i < segments.size(); ++i) seg_begin[i + 1] = seg_begin[i] + segments[i].text.size();

  for (size_t i = 0; i + 1 < segments.size(); ++i) {
    const size_t b = seg_begin[i + 1];
    std::optional<size_t> at;
    if (!segments[i].trainable) {  // untrained -> trained: largest clean position <= b
      for (size_t pos = b; pos + kMaxScan >= b && pos >= seg_begin[i] && !at; --pos) {
        if (is_char_start(pos)) at = clean_index(pos);
        if (pos == 0) break;
      }
    } else {  // trained -> untrained: smallest clean position >= b
      for (size_t pos = b; pos <= b + kMaxScan && pos <= seg_begin[i + 2] && !at; ++pos) {
        if (is_char_start(pos)) at = clean_index(pos);
      }
    }
    if (!at) {  // nothing clean nearby: fall back to where the prefix encoding diverges
      const auto pre = enc.encode(std::string_view(text).substr(0, b));
      const size_t common = common_prefix(pre, ids);
      at = (pre.size() != common && segments[i].trainable) ? common + 1 : common;
    }
    starts[i + 1] = std::clamp(*at, starts[i], ids.size());
  }
  return starts;
}

TokenizedExample tokenize_rendered(const TextEncoder& enc, const RenderedExample& ex,
                                   std::optional<int32_t> bos, std::optional<int32_t> eos) {
  TokenizedExample out;
  const std::string text = join_segments(ex.segments);
  std::vector<int32_t> ids = enc.encode(text);
  const std::vector<size_t> starts = segment_token_starts(enc, ex.segments, ids);

  if (ex.add_bos && bos) {
    out.ids.push_back(*bos);
    out.labels.push_back(kIgnoreIndex);
  }
  for (size_t s = 0; s < ex.segments.size(); ++s) {
    for (size_t t = starts[s]; t < starts[s + 1]; ++t) {
      out.ids.push_back(ids[t]);
      out.labels.push_back(ex.segments[s].trainable ? ids[t] : kIgnoreIndex);
    }
  }
  if (ex.add_eos && eos) {
    const bool trained = !ex.segments.empty() && ex.segments.back().trainable;
    out.ids.push_back(*eos);
    out.labels.push_back(trained ? *eos : kIgnoreIndex);
  }
  return out;
}

}  // namespace ftune
