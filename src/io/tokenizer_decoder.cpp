// Decoders (see tokenizer_decoder.h); each follows its HF decode_chain.
#include "io/tokenizer_decoder.h"

#include "core/error.h"
#include "io/tokenizer_regex.h"
#include "io/tokenizer_unicode.h"

namespace ftune::tok {

namespace {

class SequenceDecoder final : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts)
      : parts_(std::move(parts)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (const auto& p : parts_) p->decode_chain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

// decoders/byte_level.rs: a token whose characters are all in the byte alphabet becomes those
// bytes, any other token its own UTF-8; the whole is then decoded lossily into one string.
class ByteLevelDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    const auto& alpha = byte_level_alphabet();
    std::string bytes;
    for (const auto& t : tokens) {
      std::string mapped;
      bool all = true;
      for (size_t i = 0; i < t.size();) {
        const int b = alpha.cp_byte(next_code_point(t, i));
        if (b < 0) {
          all = false;
          break;
        }
        mapped.push_back(static_cast<char>(b));
      }
      bytes += all ? mapped : t;
    }
    tokens.assign(1, utf8_lossy(bytes));
  }
};

// decoders/byte_fallback.rs: runs of <0xNN> tokens become their bytes when those form valid
// UTF-8, else one U+FFFD per byte token.
class ByteFallbackDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::vector<std::string> out;
    std::string pending;
    size_t pending_count = 0;
    auto flush = [&] {
      if (pending_count == 0) return;
      if (!first_invalid_utf8(pending)) {
        out.push_back(pending);
      } else {
        for (size_t k = 0; k < pending_count; ++k) out.emplace_back("\xEF\xBF\xBD");
      }
      pending.clear();
      pending_count = 0;
    };
    for (auto& t : tokens) {
      int byte = -1;
      if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>') {
        byte = hex_byte(t[3], t[4]);
      }
      if (byte >= 0) {
        pending.push_back(static_cast<char>(byte));
        ++pending_count;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    tokens = std::move(out);
  }

 private:
  static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  }
  static int hex_byte(char hi, char lo) {
    const int h = hex_digit(hi), l = hex_digit(lo);
    return (h < 0 || l < 0) ? -1 : h * 16 + l;
  }
};

class FuseDecoder final : public Decoder {
 public:
  void decode_chain(std::vector<std::string>& tokens) const override {
    std::string all;
    for (const auto& t : tokens) all += t;
    tokens.assign(1, std::move(all));
  }
};

class ReplaceDecoder final : public Decoder {
 public:
  ReplaceDecoder(TextPattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) t = pattern_.replace_all(t, content_);
  }

 private:
  TextPattern pattern_;
  std::string content_;
};

// decoders/strip.rs: removes up to `start` leading and `stop` trailing `content` characters of
// every token.
class StripDecoder final : public Decoder {
 public:
  StripDecoder(uint32_t content, size_t start, size_t stop)
      : content_(content), start_(start), stop_(stop) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (auto& t : tokens) {
      std::vector<size_t> offs;  // byte offset of every character, plus the end
      std::vector<uint32_t> cps;
      for (size_t i = 0; i < t.size();) {
        offs.push_back(i);
        cps.push_back(next_code_point(t, i));
      }
      offs.push_back(t.size());
      size_t start_cut = 0;
      for (size_t i = 0; i < start_ && i < cps.size() && cps[i] == content_; ++i) start_cut = i + 1;
      size_t stop_cut = cps.size();
      for (size_t i = 0; i < stop_ && i < cps.size(); ++i) {
        const size_t idx = cps.size() - i - 1;
        if (cps[idx] != content_) break;
        stop_cut = idx;
      }
      if (stop_cut < start_cut) stop_cut = start_cut;
      t = t.substr(offs[start_cut], offs[stop_cut] - offs[start_cut]);
    }
  }

 private:
  uint32_t content_;
  size_t start_, stop_;
};

// decoders/metaspace.rs (decoder half): the replacement character becomes a space, except in
// the first token, where it is dropped unless prepend_scheme is "never".
class MetaspaceDecoder final : public Decoder {
 public:
  MetaspaceDecoder(uint32_t replacement, bool strip_first)
      : replacement_(replacement), strip_first_(strip_first) {}
  void decode_chain(std::vector<std::string>& tokens) const override {
    for (size_t k = 0; k < tokens.size(); ++k) {
      const std::string& t = tokens[k];
      std::string out;
      out.reserve(t.size());
      for (size_t i = 0; i < t.size();) {
        const size_t b = i;
        const uint32_t cp = next_code_point(t, i);
        if (cp == replacement_) {
          if (!(k == 0 && strip_first_)) out.push_back(' ');
        } else {
          out.append(t, b, i - b);
        }
      }
      tokens[k] = std::move(out);
    }
  }

 private:
  uint32_t replacement_;
  bool strip_first_;
};

uint32_t single_char(const std::string& s, const std::string& what, const std::string& where) {
  size_t i = 0;
  const uint32_t cp = s.empty() ? 0 : next_code_point(s, i);
  FTUNE_CHECK(!s.empty() && i == s.size(), "{}: {} must be one character, got '{}'", where, what,
              s);
  return cp;
}

size_t non_negative(const json& j, const char* key, const std::string& where) {
  const int64_t v = json_int(j, key, where);
  FTUNE_CHECK(v >= 0, "{}: '{}' must be >= 0", where, key);
  return static_cast<size_t>(v);
}

}  // namespace

std::unique_ptr<Decoder> parse_decoder(const json& j, const std::string& where) {
  if (j.is_null()) return nullptr;
  const std::string type = json_type(j, where);
  if (type == "Sequence") {
    const json& list = json_at(j, "decoders", where);
    FTUNE_CHECK(list.is_array(), "{}: 'decoders' must be an array", where);
    std::vector<std::unique_ptr<Decoder>> parts;
    for (size_t i = 0; i < list.size(); ++i) {
      auto p = parse_decoder(list[i], where + ".decoders[" + std::to_string(i) + "]");
      if (p) parts.push_back(std::move(p));
    }
    return std::make_unique<SequenceDecoder>(std::move(parts));
  }
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Replace") {
    return std::make_unique<ReplaceDecoder>(
        TextPattern::from_json(json_at(j, "pattern", where), where + ".pattern"),
        json_string(j, "content", where));
  }
  if (type == "Strip") {
    return std::make_unique<StripDecoder>(
        single_char(json_string(j, "content", where), "Strip content", where),
        non_negative(j, "start", where), non_negative(j, "stop", where));
  }
  if (type == "Metaspace") {
    const uint32_t rep =
        single_char(json_string(j, "replacement", where), "Metaspace replacement", where);
    bool strip_first;
    const auto it = j.find("prepend_scheme");
    if (it != j.end() && !it->is_null()) {
      strip_first = json_string(j, "prepend_scheme", where) != "never";
    } else {
      strip_first = json_bool(j, "add_prefix_space", true, where);
    }
    return std::make_unique<MetaspaceDecoder>(rep, strip_first);
  }
  unsupported_component("decoder", type, where);
}

}  // namespace ftune::tok
