// Jinja lexer (see lexer.h). Mirrors the rules of jinja2/lexer.py that chat templates rely on.
#include "data/jinja/lexer.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include "core/error.h"
#include "data/jinja/pystr.h"

namespace ftune::jinja {

[[noreturn]] void syntax_error(int line, int column, const std::string& what) {
  fail("template syntax error at line {}, column {}: {}", line, column, what);
}

namespace {

bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

class Lexer {
 public:
  Lexer(std::string_view source, const LexOptions& opts) : opts_(opts) {
    // Newlines normalized to \n; one trailing newline dropped (keep_trailing_newline=False).
    src_.reserve(source.size());
    for (size_t i = 0; i < source.size(); ++i) {
      if (source[i] == '\r') {
        src_ += '\n';
        if (i + 1 < source.size() && source[i + 1] == '\n') ++i;
      } else {
        src_ += source[i];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
    line_starts_.push_back(0);
    for (size_t i = 0; i < src_.size(); ++i) {
      if (src_[i] == '\n') line_starts_.push_back(i + 1);
    }
  }

  std::vector<Token> run() {
    size_t pos = 0;
    bool line_starting = true;
    while (pos < src_.size()) {
      const size_t tag = next_tag(pos);
      if (tag == std::string::npos) {
        emit(Token::Type::text, src_.substr(pos), pos);
        break;
      }
      const char kind = src_[tag + 1];
      const char sign = (tag + 2 < src_.size() && (src_[tag + 2] == '-' || src_[tag + 2] == '+'))
                            ? src_[tag + 2] : 0;
      std::string text = src_.substr(pos, tag - pos);
      if (sign == '-') {
        text = py_strip(text, std::nullopt, false, true);
      } else if (sign != '+' && opts_.lstrip_blocks && kind != '{') {
        const size_t l_pos = text.rfind('\n') + 1;  // npos + 1 == 0
        if ((l_pos > 0 || line_starting) && l_pos < text.size() &&
            std::all_of(text.begin() + static_cast<std::ptrdiff_t>(l_pos), text.end(), is_ws)) {
          text.resize(l_pos);
        }
      }
      if (!text.empty()) emit(Token::Type::text, std::move(text), pos);
      size_t p = tag + 2 + (sign ? 1 : 0);
      if (kind == '#') {
        const size_t e = src_.find("#}", p);
        if (e == std::string::npos) error_at(tag, "missing end of comment tag");
        const char esign = (e > p && (src_[e - 1] == '-' || src_[e - 1] == '+')) ? src_[e - 1] : 0;
        pos = after_close(e + 2, esign, true, line_starting);
        continue;
      }
      if (kind == '%' && try_raw(tag, p, pos, line_starting)) continue;
      emit(kind == '{' ? Token::Type::var_begin : Token::Type::block_begin, "", tag);
      pos = lex_tag(tag, p, kind, line_starting);
    }
    emit(Token::Type::eof, "", src_.size());
    return std::move(out_);
  }

 private:
  size_t next_tag(size_t pos) const {
    for (size_t i = src_.find('{', pos); i != std::string::npos; i = src_.find('{', i + 1)) {
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) {
        return i;
      }
    }
    return std::string::npos;
  }

  void locate(size_t off, int& line, int& col) const {
    const auto it = std::upper_bound(line_starts_.begin(), line_starts_.end(), off);
    const size_t idx = static_cast<size_t>(it - line_starts_.begin()) - 1;
    line = static_cast<int>(idx) + 1;
    col = static_cast<int>(off - line_starts_[idx]) + 1;
  }

  [[noreturn]] void error_at(size_t off, const std::string& what) const {
    int line = 0, col = 0;
    locate(std::min(off, src_.size()), line, col);
    syntax_error(line, col, what);
  }

  void emit(Token::Type t, std::string value, size_t off) {
    Token tok{t, std::move(value)};
    locate(std::min(off, src_.size()), tok.line, tok.column);
    out_.push_back(std::move(tok));
  }

  // Whitespace control after a closing '}}', '%}' or '#}' ending just before `p`.
  size_t after_close(size_t p, char sign, bool block_like, bool& line_starting) {
    if (sign == '-') {
      while (p < src_.size() && is_ws(src_[p])) ++p;
    } else if (sign != '+' && block_like && opts_.trim_blocks && p < src_.size() && src_[p] == '\n') {
      ++p;
    }
    line_starting = p > 0 && src_[p - 1] == '\n';
    return p;
  }

  // {% raw %} ... {% endraw %}: the body is text, tags inside it are not interpreted.
  bool try_raw(size_t tag, size_t p, size_t& pos, bool& line_starting) {
    size_t q = p;
    while (q < src_.size() && is_ws(src_[q])) ++q;
    if (src_.compare(q, 3, "raw") != 0) return false;
    q += 3;
    while (q < src_.size() && is_ws(src_[q])) ++q;
    char sign = 0;
    if (q < src_.size() && (src_[q] == '-' || src_[q] == '+')) sign = src_[q++];
    if (src_.compare(q, 2, "%}") != 0) return false;
    size_t body = after_close(q + 2, sign, true, line_starting);
    for (size_t e = src_.find("{%", body); e != std::string::npos; e = src_.find("{%", e + 2)) {
      size_t r = e + 2;
      const bool strip = r < src_.size() && src_[r] == '-';
      if (r < src_.size() && (src_[r] == '-' || src_[r] == '+')) ++r;
      while (r < src_.size() && is_ws(src_[r])) ++r;
      if (src_.compare(r, 6, "endraw") != 0) continue;
      r += 6;
      while (r < src_.size() && is_ws(src_[r])) ++r;
      char esign = 0;
      if (r < src_.size() && (src_[r] == '-' || src_[r] == '+')) esign = src_[r++];
      if (src_.compare(r, 2, "%}") != 0) continue;
      std::string text = src_.substr(body, e - body);
      if (strip) text = py_strip(text, std::nullopt, false, true);
      if (!text.empty()) emit(Token::Type::text, std::move(text), body);
      pos = after_close(r + 2, esign, true, line_starting);
      return true;
    }
    error_at(tag, "missing end of raw directive");
  }

  size_t lex_tag(size_t tag, size_t p, char kind, bool& line_starting) {
    const char close = kind == '{' ? '}' : '%';
    int depth = 0;  // open brackets: a '}' inside {{ {'a': 1} }} is not the end
    while (true) {
      while (p < src_.size() && is_ws(src_[p])) ++p;
      if (p >= src_.size()) error_at(tag, kind == '{' ? "unexpected end of template, expected '}}'"
                                                      : "unexpected end of template, expected '%}'");
      // Closing delimiter, with optional whitespace control sign before it.
      for (char sign : {'-', '+', '\0'}) {
        if (sign == '+' && kind == '{') continue;
        const size_t s = p + (sign ? 1 : 0);
        if (sign && src_[p] != sign) continue;
        if (depth == 0 && s + 1 < src_.size() && src_[s] == close && src_[s + 1] == '}') {
          emit(kind == '{' ? Token::Type::var_end : Token::Type::block_end, "", p);
          return after_close(s + 2, sign, kind == '%', line_starting);
        }
      }
      const char c = src_[p];
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t e = p;
        while (e < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[e])) || src_[e] == '_')) ++e;
        emit(Token::Type::name, src_.substr(p, e - p), p);
        p = e;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        p = lex_number(p);
      } else if (c == '\'' || c == '"') {
        p = lex_string(p);
      } else {
        static const char* kTwo[] = {"//", "**", "==", "!=", "<=", ">="};
        std::string op;
        for (const char* t : kTwo) {
          if (src_.compare(p, 2, t) == 0) op = t;
        }
        if (op.empty()) {
          if (std::string_view("+-/*%~<>=()[]{},.:|;").find(c) == std::string_view::npos) {
            error_at(p, fmt::format("unexpected char '{}'", c));
          }
          op = std::string(1, c);
        }
        if (op == "(" || op == "[" || op == "{") ++depth;
        if ((op == ")" || op == "]" || op == "}") && depth > 0) --depth;
        emit(Token::Type::op, op, p);
        p += op.size();
      }
    }
  }

  size_t lex_number(size_t p) {
    const size_t start = p;
    auto digits = [&] {
      while (p < src_.size() && (std::isdigit(static_cast<unsigned char>(src_[p])) ||
                                 (src_[p] == '_' && p + 1 < src_.size() &&
                                  std::isdigit(static_cast<unsigned char>(src_[p + 1]))))) {
        ++p;
      }
    };
    digits();
    bool is_float = false;
    if (p + 1 < src_.size() && src_[p] == '.' && std::isdigit(static_cast<unsigned char>(src_[p + 1]))) {
      is_float = true;
      ++p;
      digits();
    }
    if (p < src_.size() && (src_[p] == 'e' || src_[p] == 'E')) {
      size_t q = p + 1;
      if (q < src_.size() && (src_[q] == '+' || src_[q] == '-')) ++q;
      if (q < src_.size() && std::isdigit(static_cast<unsigned char>(src_[q]))) {
        is_float = true;
        p = q;
        digits();
      }
    }
    std::string text;
    for (size_t i = start; i < p; ++i) {
      if (src_[i] != '_') text += src_[i];
    }
    emit(is_float ? Token::Type::floating : Token::Type::integer, text, start);
    return p;
  }

  // Python's unicode-escape decoding of the literal's body.
  size_t lex_string(size_t p) {
    const char q = src_[p];
    std::string out;
    size_t i = p + 1;
    while (true) {
      if (i >= src_.size()) error_at(p, "unexpected end of string");
      const char c = src_[i];
      if (c == q) break;
      if (c != '\\' || i + 1 >= src_.size()) {
        out += c;
        ++i;
        continue;
      }
      const char e = src_[i + 1];
      i += 2;
      switch (e) {
        case '\n': break;
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'v': out += '\v'; break;
        case 'x': case 'u': case 'U': {
          const size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          if (i + n > src_.size() || !std::all_of(src_.begin() + static_cast<std::ptrdiff_t>(i),
                                                  src_.begin() + static_cast<std::ptrdiff_t>(i + n),
                                                  [](char h) { return std::isxdigit(static_cast<unsigned char>(h)); })) {
            error_at(i - 2, fmt::format("truncated \\{} escape in string", e));
          }
          const unsigned long cp = std::stoul(src_.substr(i, n), nullptr, 16);
          if (cp > 0x10FFFF) error_at(i - 2, "illegal Unicode character in string");
          utf8_append(out, static_cast<char32_t>(cp));
          i += n;
          break;
        }
        default:
          if (e >= '0' && e <= '7') {
            unsigned cp = static_cast<unsigned>(e - '0');
            for (int k = 0; k < 2 && i < src_.size() && src_[i] >= '0' && src_[i] <= '7'; ++k) {
              cp = cp * 8 + static_cast<unsigned>(src_[i++] - '0');
            }
            utf8_append(out, cp);
          } else {
            out += '\\';
            out += e;
          }
      }
    }
    emit(Token::Type::string, std::move(out), p);
    return i + 1;
  }

  LexOptions opts_;
  std::string src_;
  std::vector<size_t> line_starts_;
  std::vector<Token> out_;
};

}  // namespace

std::vector<Token> tokenize(std::string_view source, const LexOptions& opts) {
  return Lexer(source, opts).run();
}

}  // namespace ftune::jinja
