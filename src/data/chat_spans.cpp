// render_chat: the rendered conversation split into trainable assistant spans and the rest,
// found from renderings of the conversation's prefixes (see chat_template.h for the rule).
#include <algorithm>
#include <optional>

#include "core/error.h"
#include "data/chat_template.h"
#include "data/jinja/pystr.h"

namespace ftune {

namespace {

struct Span {
  size_t begin = 0;
  size_t end = 0;
};

size_t common_prefix(std::string_view a, std::string_view b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

size_t rstrip_size(std::string_view s) {
  return jinja::py_strip(s, std::nullopt, false, true).size();
}

// Private-use code points: not whitespace (survive |trim), not in any template's vocabulary.
constexpr std::string_view kMarkA = "\xEE\x80\x80";  // U+E000
constexpr std::string_view kMarkB = "\xEF\x80\x80";  // U+F000 (first byte differs from kMarkA)

class SpanFinder {
 public:
  SpanFinder(const ChatTemplate& t, const Conversation& conv, std::string full)
      : t_(t), conv_(conv), full_(std::move(full)) {}

  const std::string& full() const { return full_; }

  // The span of assistant message i in the full rendering, or nullopt when none can be found.
  std::optional<Span> find(size_t i, size_t done) {
    const Conversation upto(conv_.begin(), conv_.begin() + static_cast<std::ptrdiff_t>(i) + 1);
    const std::optional<std::string> q = render(upto, false);
    const std::optional<std::string> p = generation_prompt_rendering(i);
    if (q) {
      const size_t end = rstrip_size(*q);
      if (full_.compare(0, end, *q, 0, end) == 0 && p) {
        // After the generation prompt when that prompt is a prefix of the turn, but never
        // inside the content (DeepSeek-R1's prompt opens "<think>\n", which a reply can
        // start with too). When it is not a prefix (R1's turn has no <think>; a conversation
        // that starts with the assistant renders no BOS before the prompt), or when the
        // template has no generation prompt at all, at the content.
        const size_t lcp = common_prefix(*p, *q);
        const auto c = content_begin(i + 1, i, *q);
        size_t begin = lcp;
        if (c) begin = lcp == p->size() && prompts_differ(i) ? std::min(lcp, *c) : *c;
        begin = std::min(begin, end);
        if (begin >= done) return Span{begin, end};
      }
    }
    return by_perturbation(i, q, p, done);
  }

 private:
  std::optional<std::string> render(const Conversation& conv, bool add_generation_prompt) const {
    try {
      return render_chat_text(t_, conv, add_generation_prompt);
    } catch (const Error&) {
      return std::nullopt;
    }
  }

  // Whether add_generation_prompt adds anything after messages[:i]; a template without a
  // generation prompt (Llama-2, Mistral v0.1) has the assistant's span start at its content.
  bool prompts_differ(size_t i) const {
    const Conversation before(conv_.begin(), conv_.begin() + static_cast<std::ptrdiff_t>(i));
    return render(before, true) != render(before, false);
  }

  std::optional<std::string> generation_prompt_rendering(size_t i) const {
    const Conversation before(conv_.begin(), conv_.begin() + static_cast<std::ptrdiff_t>(i));
    return render(before, true);
  }

  // conv_[:count] with message i's content changed by `edit`.
  std::optional<std::string> render_edited(size_t count, size_t i, std::string_view prefix,
                                           std::string_view suffix) const {
    Conversation c(conv_.begin(), conv_.begin() + static_cast<std::ptrdiff_t>(count));
    c[i].content = std::string(prefix) + c[i].content + std::string(suffix);
    return render(c, false);
  }

  // Where message i's content ends / starts in the rendering of conv_[:count] (which is `text`).
  std::optional<size_t> content_end(size_t count, size_t i, const std::string& text) const {
    const auto a = render_edited(count, i, "", kMarkA);
    const auto b = render_edited(count, i, "", kMarkB);
    if (!a || !b) return std::nullopt;
    const size_t at = common_prefix(*a, *b);
    if (at > text.size() || text.compare(0, at, *a, 0, at) != 0) return std::nullopt;
    return at;
  }
  std::optional<size_t> content_begin(size_t count, size_t i, const std::string& text) const {
    const auto a = render_edited(count, i, kMarkA, "");
    if (!a) return std::nullopt;
    const size_t at = common_prefix(*a, text);
    if (a->compare(at, kMarkA.size(), kMarkA) != 0) return std::nullopt;
    return at;
  }

  // The turn renders differently once later messages follow: find the content in the full
  // rendering and extend it by the last-message form's lead-in and closing where they match.
  std::optional<Span> by_perturbation(size_t i, const std::optional<std::string>& q,
                                      const std::optional<std::string>& p, size_t done) const {
    const size_t n = conv_.size();
    const auto end_in_full = content_end(n, i, full_);
    if (!end_in_full) return std::nullopt;
    std::optional<size_t> begin_in_full = content_begin(n, i, full_);
    if (!begin_in_full && p) {
      // The start of the content is not rendered (Qwen3 drops an earlier turn's <think> part,
      // where a mark at the start lands): the turn starts where the generation prompt ends.
      begin_in_full = common_prefix(*p, full_);
    }
    if (!begin_in_full || *begin_in_full > *end_in_full || *begin_in_full < done) return std::nullopt;
    Span span{*begin_in_full, *end_in_full};
    if (!q) return span;
    const auto end_in_q = content_end(i + 1, i, *q);
    const auto begin_in_q = content_begin(i + 1, i, *q);
    if (end_in_q) {
      const std::string closing = q->substr(*end_in_q, rstrip_size(*q) - std::min(*end_in_q, rstrip_size(*q)));
      const size_t match = common_prefix(std::string_view(full_).substr(span.end), closing);
      span.end += rstrip_size(closing.substr(0, match));
    }
    if (begin_in_q && p) {
      const size_t lead_begin = std::min(common_prefix(*p, *q), *begin_in_q);
      const std::string lead = q->substr(lead_begin, *begin_in_q - lead_begin);
      if (span.begin >= done + lead.size() &&
          full_.compare(span.begin - lead.size(), lead.size(), lead) == 0) {
        span.begin -= lead.size();
      }
    }
    return span;
  }

  const ChatTemplate& t_;
  const Conversation& conv_;
  std::string full_;
};

void add_segment(std::vector<TextSegment>& out, std::string_view text, bool trainable) {
  if (text.empty()) return;
  if (!out.empty() && out.back().trainable == trainable) {
    out.back().text += text;
  } else {
    out.push_back(TextSegment{std::string(text), trainable});
  }
}

}  // namespace

std::vector<TextSegment> render_chat(const ChatTemplate& tmpl, const Conversation& conv,
                                     bool find_spans) {
  FTUNE_CHECK(!conv.empty(), "chat template {}: conversation is empty", tmpl.name);
  SpanFinder finder(tmpl, conv, render_chat_text(tmpl, conv, false));
  const std::string& full = finder.full();
  std::vector<TextSegment> out;
  if (!find_spans) {
    add_segment(out, full, false);
    return out;
  }
  size_t done = 0;  // end of the previous span
  for (size_t i = 0; i < conv.size(); ++i) {
    if (conv[i].role != "assistant") continue;
    const std::optional<Span> span = finder.find(i, done);
    if (!span || span->begin < done || span->end > full.size()) {
      fail("chat template {}: cannot tell which part of the rendered text is assistant message {} "
           "(the template renders it in a way ftune cannot locate); set "
           "data.train_on_responses_only: false to train on the whole text",
           tmpl.name, i);
    }
    add_segment(out, std::string_view(full).substr(done, span->begin - done), false);
    add_segment(out, std::string_view(full).substr(span->begin, span->end - span->begin), true);
    done = span->end;
  }
  add_segment(out, std::string_view(full).substr(done), false);
  return out;
}

}  // namespace ftune
