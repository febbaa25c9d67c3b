// Unicode-version catch-up of PCRE2 character classes (see tokenizer_regex_classes.h).
#define PCRE2_CODE_UNIT_WIDTH 8
#include "io/tokenizer_regex_classes.h"

#include <pcre2.h>

#include <array>
#include <initializer_list>
#include <cctype>
#include <map>
#include <mutex>
#include <optional>
#include <string_view>
#include <vector>

#include "io/tokenizer_category_table.h"
#include "io/tokenizer_unicode.h"

namespace ftune::tok {

namespace {

constexpr std::array<const char*, 30> kCategories = {
    "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe",
    "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn"};

// Bit of a two-letter category in the masks below; 0 for an unknown one.
uint32_t category_bit(std::string_view gc) {
  for (size_t i = 0; i < kCategories.size(); ++i)
    if (gc == kCategories[i]) return 1u << i;
  return 0;
}

uint32_t group_mask(char major) {
  uint32_t m = 0;
  for (size_t i = 0; i < kCategories.size(); ++i)
    if (kCategories[i][0] == major) m |= 1u << i;
  return m;
}

// Oniguruma's loose matching of property names: case, spaces, '_' and '-' do not count.
std::string loose(std::string_view name) {
  std::string out;
  for (char c : name)
    if (c != '_' && c != ' ' && c != '-') out += static_cast<char>(std::tolower(c));
  return out;
}

// A general-category property: its categories and the name PCRE2 knows it by.
struct Category {
  uint32_t mask;
  std::string pcre2_name;
};

std::optional<Category> general_category(std::string_view name) {
  static const std::map<std::string, std::string> kLongNames = {
      {"letter", "L"}, {"casedletter", "L&"}, {"uppercaseletter", "Lu"},
      {"lowercaseletter", "Ll"}, {"titlecaseletter", "Lt"}, {"modifierletter", "Lm"},
      {"otherletter", "Lo"}, {"mark", "M"}, {"combiningmark", "M"}, {"nonspacingmark", "Mn"},
      {"spacingmark", "Mc"}, {"enclosingmark", "Me"}, {"number", "N"},
      {"decimalnumber", "Nd"}, {"letternumber", "Nl"}, {"othernumber", "No"},
      {"punctuation", "P"}, {"connectorpunctuation", "Pc"}, {"dashpunctuation", "Pd"},
      {"openpunctuation", "Ps"}, {"closepunctuation", "Pe"}, {"initialpunctuation", "Pi"},
      {"finalpunctuation", "Pf"}, {"otherpunctuation", "Po"}, {"symbol", "S"},
      {"mathsymbol", "Sm"}, {"currencysymbol", "Sc"}, {"modifiersymbol", "Sk"},
      {"othersymbol", "So"}, {"separator", "Z"}, {"spaceseparator", "Zs"},
      {"lineseparator", "Zl"}, {"paragraphseparator", "Zp"}, {"other", "C"},
      {"control", "Cc"}, {"format", "Cf"}, {"surrogate", "Cs"}, {"privateuse", "Co"},
      {"unassigned", "Cn"}, {"lc", "L&"}, {"l&", "L&"}};
  std::string key = loose(name);
  if (const auto it = kLongNames.find(key); it != kLongNames.end()) key = loose(it->second);
  if (key == "l&") return Category{group_mask('L') & ~category_bit("Lm") & ~category_bit("Lo"),
                                   "L&"};
  if (key.size() == 1) {
    const char major = static_cast<char>(std::toupper(key[0]));
    if (const uint32_t m = group_mask(major)) return Category{m, std::string(1, major)};
  }
  if (key.size() == 2) {
    const std::string gc{static_cast<char>(std::toupper(key[0])), key[1]};
    if (const uint32_t b = category_bit(gc)) return Category{b, gc};
  }
  return std::nullopt;
}

// A class item whose meaning depends on the Unicode version: a general category, or its
// complement. `text` spells it for PCRE2.
struct CategoryItem {
  uint32_t mask;
  bool negated;
  std::string text;
  bool contains(uint32_t gc_bit) const { return ((mask & gc_bit) != 0) != negated; }
};

// Length of the escape sequence at p[i] == '\\' (\Q...\E handled by the callers).
size_t escape_length(const std::string& p, size_t i) {
  if (i + 1 >= p.size()) return 1;
  const char e = p[i + 1];
  if (std::string_view("xopPNgk").find(e) != std::string_view::npos && i + 2 < p.size() &&
      p[i + 2] == '{') {
    const size_t close = p.find('}', i + 2);
    return close == std::string::npos ? p.size() - i : close + 1 - i;
  }
  if (e == 'x') {  // \xHH: up to two hex digits
    size_t n = 2;
    while (n < 4 && i + n < p.size() && std::isxdigit(static_cast<unsigned char>(p[i + n]))) ++n;
    return n;
  }
  if (e == 'c') return std::min<size_t>(3, p.size() - i);
  return 1 + utf8_seq_len(static_cast<unsigned char>(e));
}

// The escape `esc` as a version-dependent item, or nullopt for any other escape.
std::optional<CategoryItem> category_item(std::string_view esc) {
  if (esc == "\\d" || esc == "\\D") {
    return CategoryItem{category_bit("Nd"), esc[1] == 'D', esc[1] == 'D' ? "\\P{Nd}" : "\\p{Nd}"};
  }
  if (esc.size() < 4 || (esc[1] != 'p' && esc[1] != 'P') || esc[2] != '{' || esc.back() != '}')
    return std::nullopt;
  bool negated = esc[1] == 'P';
  std::string_view name = esc.substr(3, esc.size() - 4);
  if (!name.empty() && name[0] == '^') {
    negated = !negated;
    name.remove_prefix(1);
  }
  const auto cat = general_category(name);
  if (!cat) return std::nullopt;
  return CategoryItem{cat->mask, negated,
                      std::string(negated ? "\\P{" : "\\p{") + cat->pcre2_name + "}"};
}

struct ParsedClass {
  bool negated = false;
  std::string items;        // every item, categories spelled for PCRE2
  std::string other_items;  // the items that are not categories
  std::vector<CategoryItem> categories;
};

// Parses the class starting at p[start] == '['; sets `end` past its ']'. nullopt when the class
// is not closed (PCRE2 reports that error when the pattern is compiled).
std::optional<ParsedClass> parse_class(const std::string& p, size_t start, size_t& end) {
  ParsedClass c;
  size_t i = start + 1;
  if (i < p.size() && p[i] == '^') {
    c.negated = true;
    ++i;
  }
  const size_t body = i;
  auto both = [&](std::string_view s) {
    c.items += s;
    c.other_items += s;
  };
  while (i < p.size()) {
    const char ch = p[i];
    if (ch == ']' && i != body) {
      end = i + 1;
      return c;
    }
    if (ch == '\\' && i + 1 < p.size() && p[i + 1] == 'Q') {
      const size_t e = p.find("\\E", i + 2);
      const size_t stop = e == std::string::npos ? p.size() : e + 2;
      both(std::string_view(p).substr(i, stop - i));
      i = stop;
      continue;
    }
    if (ch == '\\') {
      const size_t n = escape_length(p, i);
      const std::string_view esc = std::string_view(p).substr(i, n);
      if (auto item = category_item(esc)) {
        c.items += item->text;
        c.categories.push_back(std::move(*item));
      } else {
        both(esc);
      }
      i += n;
      continue;
    }
    if (ch == '[' && i + 1 < p.size() && p[i + 1] == ':') {  // POSIX [:name:]
      const size_t e = p.find(":]", i + 2);
      if (e != std::string::npos) {
        both(std::string_view(p).substr(i, e + 2 - i));
        i = e + 2;
        continue;
      }
    }
    both(std::string_view(p).substr(i, 1));
    ++i;
  }
  return std::nullopt;
}

// A leading '^' of a class body must stay a literal when the body is put in a new class.
std::string literal_caret(const std::string& items) {
  return !items.empty() && items[0] == '^' ? "\\" + items : items;
}

// One class compiled alone, to ask PCRE2 whether a single code point is in it.
class ClassMatcher {
 public:
  explicit ClassMatcher(const std::string& pattern) {
    int err = 0;
    PCRE2_SIZE off = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                          PCRE2_UTF | PCRE2_UCP, &err, &off, nullptr);
    if (code_) md_ = pcre2_match_data_create_from_pattern(code_, nullptr);
  }
  ClassMatcher(const ClassMatcher&) = delete;
  ClassMatcher& operator=(const ClassMatcher&) = delete;
  ~ClassMatcher() {
    if (md_) pcre2_match_data_free(md_);
    if (code_) pcre2_code_free(code_);
  }
  bool ok() const { return code_ != nullptr && md_ != nullptr; }
  bool matches(const std::string& ch) const {
    return pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(ch.data()), ch.size(), 0,
                       PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK, md_, nullptr) >= 0;
  }

 private:
  pcre2_code* code_ = nullptr;
  pcre2_match_data* md_ = nullptr;
};

std::string hex_cp(uint32_t cp) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "\\x{%X}", cp);
  return buf;
}

// Sorted code points as class ranges.
std::string as_ranges(const std::vector<uint32_t>& cps) {
  std::string out;
  for (size_t i = 0; i < cps.size();) {
    size_t j = i;
    while (j + 1 < cps.size() && cps[j + 1] == cps[j] + 1) ++j;
    out += hex_cp(cps[i]);
    if (j > i) {
      out += '-';
      out += hex_cp(cps[j]);
    }
    i = j + 1;
  }
  return out;
}

// Concatenation by appends (operator+ chains on temporaries trip GCC 12's -Wrestrict).
std::string cat(std::initializer_list<std::string_view> parts) {
  std::string out;
  for (const auto part : parts) out += part;
  return out;
}

// The class `c` (written as `original`) matching under Unicode 16.0 on the changed code points.
std::string upgrade_class(const ParsedClass& c, const std::string& original) {
  if (c.categories.empty()) return original;
  const std::string items = literal_caret(c.items);
  const ClassMatcher as_written(cat({"[", items, "]"}));
  std::optional<ClassMatcher> others;
  if (!c.other_items.empty()) others.emplace(cat({"[", literal_caret(c.other_items), "]"}));
  if (!as_written.ok() || (others && !others->ok())) return original;  // PCRE2 will report it

  // Code points the items (before negation) must gain or lose.
  std::vector<uint32_t> gain, lose;
  std::string ch;
  for (const auto& r : category_data::kChangedCategories) {
    const uint32_t bit = category_bit(r.gc);
    bool by_category = false;
    for (const auto& item : c.categories) by_category = by_category || item.contains(bit);
    for (uint32_t cp = r.first; cp <= r.last; ++cp) {
      ch.clear();
      append_utf8(ch, cp);
      const bool now = as_written.matches(ch);
      const bool want = by_category || (others && others->matches(ch));
      if (want && !now) gain.push_back(cp);
      if (!want && now) lose.push_back(cp);
    }
  }
  if (gain.empty() && lose.empty()) return original;
  const std::string upgraded = cat({items, as_ranges(gain)});
  if (lose.empty()) return cat({c.negated ? "[^" : "[", upgraded, "]"});
  const std::string lost = cat({"[", as_ranges(lose), "]"});
  if (c.negated) return cat({"(?:", lost, "|[^", upgraded, "])"});
  return cat({"(?:(?!", lost, ")[", upgraded, "])"});
}

// Classes repeat across patterns (every ByteLevel pre-tokenizer compiles the GPT-2 pattern):
// each is evaluated once per process.
std::string upgrade_class_cached(const ParsedClass& c, const std::string& original) {
  static std::mutex mu;
  static std::map<std::string, std::string> cache;
  std::lock_guard<std::mutex> lock(mu);
  const auto it = cache.find(original);
  if (it != cache.end()) return it->second;
  return cache.emplace(original, upgrade_class(c, original)).first->second;
}

}  // namespace

std::string upgrade_unicode_classes(const std::string& p) {
  std::string out;
  out.reserve(p.size());
  for (size_t i = 0; i < p.size();) {
    const char ch = p[i];
    if (ch == '\\' && i + 1 < p.size() && p[i + 1] == 'Q') {
      const size_t e = p.find("\\E", i + 2);
      const size_t stop = e == std::string::npos ? p.size() : e + 2;
      out.append(p, i, stop - i);
      i = stop;
      continue;
    }
    if (ch == '\\') {
      const size_t n = escape_length(p, i);
      const std::string esc = p.substr(i, n);
      i += n;
      if (auto item = category_item(esc)) {  // a lone \p{L}: a class of one item
        ParsedClass c;
        c.items = item->text;
        c.categories.push_back(std::move(*item));
        out += upgrade_class_cached(c, esc);
      } else {
        out += esc;
      }
      continue;
    }
    if (ch == '[') {
      size_t end = 0;
      if (const auto c = parse_class(p, i, end)) {
        out += upgrade_class_cached(*c, p.substr(i, end - i));
        i = end;
        continue;
      }
      out.append(p, i, std::string::npos);  // unclosed: left for PCRE2 to report
      break;
    }
    out += ch;
    ++i;
  }
  return out;
}

std::string pcre2_unicode_version() {
  PCRE2_UCHAR buf[64] = {};
  if (pcre2_config(PCRE2_CONFIG_UNICODE_VERSION, buf) < 0) return "";
  return reinterpret_cast<const char*>(buf);
}

}  // namespace ftune::tok
