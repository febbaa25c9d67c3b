// render_chat: the rendered conversation split into trainable assistant spans and the rest,
// found from renderings of the conversation's prefixes (see chat_template.h for the rule).
#include <algorithm>
#include <nlohmann/json.hpp>
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

size_t common_suffix(std::string_view a, std::string_view b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[a.size() - 1 - i] == b[b.size() - 1 - i]) ++i;
  return i;
}

bool calls_tools(const ChatMessage& m) {
  auto it = m.extra.find("tool_calls");
  return it != m.extra.end() && it->is_array() && !it->empty();
}

// The object holding a tool call's name and arguments: {"function": {...}} or the bare call.
nlohmann::ordered_json* call_function(nlohmann::ordered_json& call) {
  if (!call.is_object()) return nullptr;
  if (auto it = call.find("function"); it != call.end() && it->is_object()) return &*it;
  return &call;
}

class SpanFinder {
 public:
  SpanFinder(const ChatTemplate& t, const Conversation& conv, const ChatArgs& args,
             std::string full)
      : t_(t), conv_(conv), args_(args), full_(std::move(full)) {}

  const std::string& full() const { return full_; }

  // The span of assistant message i in the full rendering, or nullopt when none can be found.
  std::optional<Span> find(size_t i, size_t done) {
    Conversation upto(conv_.begin(), conv_.begin() + static_cast<std::ptrdiff_t>(i) + 1);
    std::optional<std::string> q = render(upto, false);
    if (!q && upto[i].content_kind != ContentKind::text) {
      // A template may fail on a content-less turn that is last (Qwen3 strips its content
      // only then); its last-message form is then taken with empty content.
      upto[i].content_kind = ContentKind::text;
      upto[i].content.clear();
      q = render(upto, false);
    }
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
        const auto c = content_begin(upto, i, *q);
        size_t begin = lcp;
        if (c) begin = lcp == p->size() && prompts_differ(i) ? std::min(lcp, *c) : *c;
        begin = std::min(begin, end);
        if (begin >= done) return Span{begin, end};
      }
    }
    if (calls_tools(conv_[i])) return tool_turn_by_perturbation(i, upto, q, p, done);
    return by_perturbation(i, upto, q, p, done);
  }

 private:
  std::optional<std::string> render(const Conversation& conv, bool add_generation_prompt) const {
    try {
      return render_chat_text(t_, conv, add_generation_prompt, nullptr, args_);
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

  // `base` with message i's content changed by `edit`.
  std::optional<std::string> render_edited(const Conversation& base, size_t i,
                                           std::string_view prefix, std::string_view suffix) const {
    Conversation c = base;
    // A tool-call turn without content gets the marks as its content: templates that render
    // null content as "" (Qwen) then show where it sits; others (Llama-3.1 writes only the
    // call) show nothing and the span comes from the prefix renderings.
    if (c[i].content_kind != ContentKind::text) c[i].content.clear();
    c[i].content_kind = ContentKind::text;
    c[i].content = std::string(prefix) + c[i].content + std::string(suffix);
    return render(c, false);
  }

  // Where message i's content ends / starts in the rendering of `base` (which is `text`).
  std::optional<size_t> content_end(const Conversation& base, size_t i,
                                    const std::string& text) const {
    const auto a = render_edited(base, i, "", kMarkA);
    const auto b = render_edited(base, i, "", kMarkB);
    if (!a || !b) return std::nullopt;
    const size_t at = common_prefix(*a, *b);
    if (at > text.size() || text.compare(0, at, *a, 0, at) != 0) return std::nullopt;
    if (a->compare(at, kMarkA.size(), kMarkA) != 0) return std::nullopt;  // not rendered
    return at;
  }
  std::optional<size_t> content_begin(const Conversation& base, size_t i,
                                      const std::string& text) const {
    const auto a = render_edited(base, i, kMarkA, "");
    if (!a) return std::nullopt;
    const size_t at = common_prefix(*a, text);
    if (a->compare(at, kMarkA.size(), kMarkA) != 0) return std::nullopt;
    return at;
  }

  // `base` with message i's tool calls marked: `name_mark` before the first call's function
  // name, and `arg_mark` after the last call's arguments (a last key of an arguments object,
  // or appended to an arguments string).
  std::optional<std::string> render_calls_edited(const Conversation& base, size_t i,
                                                 std::string_view name_mark,
                                                 std::string_view arg_mark) const {
    Conversation c = base;
    nlohmann::ordered_json& calls = c[i].extra["tool_calls"];
    if (!name_mark.empty()) {
      auto* fn = call_function(calls.front());
      if (!fn || !fn->contains("name") || !(*fn)["name"].is_string()) return std::nullopt;
      (*fn)["name"] = std::string(name_mark) + (*fn)["name"].get<std::string>();
    }
    if (!arg_mark.empty()) {
      auto* fn = call_function(calls.back());
      if (!fn || !fn->contains("arguments")) return std::nullopt;
      nlohmann::ordered_json& args = (*fn)["arguments"];
      if (args.is_object()) {
        args[std::string(arg_mark)] = std::string(arg_mark);
      } else if (args.is_string()) {
        args = args.get<std::string>() + std::string(arg_mark);
      } else {
        return std::nullopt;
      }
    }
    return render(c, false);
  }

  bool has_text(const ChatMessage& m) const {
    return m.content_kind == ContentKind::text && !m.content.empty();
  }

  // Where the output of tool-calling message i starts in `text` (the rendering of `base`):
  // the first of its content (when it has any) and its first call's name.
  std::optional<size_t> turn_begin(const Conversation& base, size_t i,
                                   const std::string& text) const {
    std::optional<size_t> at;
    if (const auto a = render_calls_edited(base, i, kMarkA, "")) {
      const size_t k = common_prefix(*a, text);
      if (a->compare(k, kMarkA.size(), kMarkA) == 0) at = k;
    }
    if (has_text(base[i])) {
      if (const auto c = content_begin(base, i, text); c && (!at || *c < *at)) at = c;
    }
    return at;
  }

  // Where it ends: the last of its content's end and its last call's arguments, found from
  // the end of the text (the call's closing, e.g. "}\n</tool_call>", follows). Two marks whose
  // last bytes differ, so a mark that happens to end like the text before it is outvoted.
  std::optional<size_t> turn_end(const Conversation& base, size_t i, const std::string& text) const {
    constexpr std::string_view kMarkC = "\xEF\x80\x81";  // U+F001: last byte differs from kMarkA
    const auto a = render_calls_edited(base, i, "", kMarkA);
    const auto b = render_calls_edited(base, i, "", kMarkC);
    std::optional<size_t> at;
    if (a && b && *a != text && *b != text) {
      const size_t from_end = std::min(common_suffix(*a, text), common_suffix(*b, text));
      at = std::max(text.size() - from_end, common_prefix(*a, text));
    }
    if (has_text(base[i])) {
      if (const auto c = content_end(base, i, text); c && (!at || *c > *at)) at = c;
    }
    return at;
  }

  // A tool-calling turn that renders differently once later messages follow (Qwen3 drops the
  // empty <think> block of an earlier turn; Mistral v0.3 writes the tools before the last
  // user turn only). It starts where the generation prompt ends when that prompt is a prefix
  // of the full rendering, else where its content or first call starts (extended by the
  // last-message form's lead-in, as for plain turns); it ends after its last call, extended
  // by the last-message form's closing (e.g. "}\n</tool_call><|im_end|>").
  std::optional<Span> tool_turn_by_perturbation(size_t i, const Conversation& upto,
                                                const std::optional<std::string>& q,
                                                const std::optional<std::string>& p,
                                                size_t done) const {
    const auto end_in_full = turn_end(conv_, i, full_);
    if (!end_in_full) return std::nullopt;
    const bool after_prompt = p && common_prefix(*p, full_) == p->size();
    std::optional<size_t> begin_in_full = after_prompt ? p->size() : turn_begin(conv_, i, full_);
    if (!begin_in_full || *begin_in_full > *end_in_full || *begin_in_full < done) return std::nullopt;
    Span span{*begin_in_full, *end_in_full};
    if (!q) return span;
    if (const auto end_in_q = turn_end(upto, i, *q)) {
      extend_by_closing(span, *q, *end_in_q);
    }
    if (!after_prompt && p) {
      if (const auto begin_in_q = turn_begin(upto, i, *q)) {
        extend_by_lead_in(span, *q, *p, *begin_in_q, done);
      }
    }
    return span;
  }

  // The part of the last-message form's closing after the turn's own text that `full_` has
  // after span.end too (trailing whitespace excluded).
  void extend_by_closing(Span& span, const std::string& q, size_t end_in_q) const {
    const size_t q_end = rstrip_size(q);
    const std::string closing = q.substr(end_in_q, q_end - std::min(end_in_q, q_end));
    const size_t match = common_prefix(std::string_view(full_).substr(span.end), closing);
    span.end += rstrip_size(closing.substr(0, match));
  }

  // The last-message form's text between the generation prompt and the turn's own text, when
  // `full_` has it right before span.begin.
  void extend_by_lead_in(Span& span, const std::string& q, const std::string& p,
                         size_t begin_in_q, size_t done) const {
    const size_t lead_begin = std::min(common_prefix(p, q), begin_in_q);
    const std::string lead = q.substr(lead_begin, begin_in_q - lead_begin);
    if (span.begin >= done + lead.size() &&
        full_.compare(span.begin - lead.size(), lead.size(), lead) == 0) {
      span.begin -= lead.size();
    }
  }

  // The turn renders differently once later messages follow: find the content in the full
  // rendering and extend it by the last-message form's lead-in and closing where they match.
  std::optional<Span> by_perturbation(size_t i, const Conversation& upto,
                                      const std::optional<std::string>& q,
                                      const std::optional<std::string>& p, size_t done) const {
    const auto end_in_full = content_end(conv_, i, full_);
    if (!end_in_full) return std::nullopt;
    std::optional<size_t> begin_in_full = content_begin(conv_, i, full_);
    if (!begin_in_full && p) {
      // The start of the content is not rendered (Qwen3 drops an earlier turn's <think> part,
      // where a mark at the start lands): the turn starts where the generation prompt ends.
      begin_in_full = common_prefix(*p, full_);
    }
    if (!begin_in_full || *begin_in_full > *end_in_full || *begin_in_full < done) return std::nullopt;
    Span span{*begin_in_full, *end_in_full};
    if (!q) return span;
    if (const auto end_in_q = content_end(upto, i, *q)) extend_by_closing(span, *q, *end_in_q);
    const auto begin_in_q = content_begin(upto, i, *q);
    if (begin_in_q && p) extend_by_lead_in(span, *q, *p, *begin_in_q, done);
    return span;
  }

  const ChatTemplate& t_;
  const Conversation& conv_;
  const ChatArgs& args_;
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
                                     bool find_spans, const ChatArgs& args) {
  FTUNE_CHECK(!conv.empty(), "chat template {}: conversation is empty", tmpl.name);
  SpanFinder finder(tmpl, conv, args, render_chat_text(tmpl, conv, false, nullptr, args));
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
    // A turn that calls tools always renders something to train (the calls at least).
    const bool lost_calls = span && span->begin == span->end && calls_tools(conv[i]);
    if (!span || lost_calls || span->begin < done || span->end > full.size()) {
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
