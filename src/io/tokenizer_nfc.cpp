// NFC normalization (see tokenizer_nfc.h), following the UAX #15 reference algorithm: the
// Rust unicode-normalization-alignments crate HF `tokenizers` uses implements the same
// definition, with Unicode 9.0 data (so does tokenizer_nfc_table.h).
#include "io/tokenizer_nfc.h"

#include <algorithm>
#include <cstdint>
#include <unordered_map>
#include <vector>

#include "io/tokenizer_nfc_table.h"
#include "io/tokenizer_unicode.h"

namespace ftune::tok {

namespace {

// Hangul syllable constants (Unicode §3.12).
constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28;
constexpr uint32_t kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

struct Tables {
  std::unordered_map<uint64_t, uint32_t> compose;  // (first << 21 | second) → composite
  Tables() {
    for (const auto& d : nfc_data::kDecompositions)
      if (d.composes) compose.emplace((uint64_t{d.first} << 21) | d.second, d.cp);
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

uint8_t combining_class(uint32_t cp) {
  const auto& r = nfc_data::kCombiningClasses;
  const auto* it = std::upper_bound(std::begin(r), std::end(r), cp,
                                    [](uint32_t c, const auto& e) { return c < e.first; });
  if (it == std::begin(r)) return 0;
  --it;
  return cp <= it->last ? it->ccc : 0;
}

const nfc_data::Decomposition* find_decomposition(uint32_t cp) {
  const auto& d = nfc_data::kDecompositions;
  const auto* it = std::lower_bound(std::begin(d), std::end(d), cp,
                                    [](const auto& e, uint32_t c) { return e.cp < c; });
  return (it != std::end(d) && it->cp == cp) ? it : nullptr;
}

void decompose(uint32_t cp, std::vector<uint32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const uint32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount) out.push_back(kTBase + s % kTCount);
    return;
  }
  if (const auto* d = find_decomposition(cp)) {
    decompose(d->first, out);
    if (d->second) decompose(d->second, out);
    return;
  }
  out.push_back(cp);
}

// Primary composite of (a, b), or 0.
uint32_t compose(uint32_t a, uint32_t b) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount)
    return a + (b - kTBase);
  const auto& c = tables().compose;
  const auto it = c.find((uint64_t{a} << 21) | b);
  return it == c.end() ? 0 : it->second;
}

}  // namespace

std::string nfc_normalize(std::string_view text) {
  if (std::all_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x80; }))
    return std::string(text);

  // 1. Full canonical decomposition.
  std::vector<uint32_t> d;
  d.reserve(text.size());
  for (size_t i = 0; i < text.size();) decompose(next_code_point(text, i), d);

  // 2. Canonical ordering: stable sort of each run of non-starters by combining class.
  std::vector<uint8_t> cls(d.size());
  for (size_t i = 0; i < d.size(); ++i) cls[i] = combining_class(d[i]);
  for (size_t i = 0; i < d.size();) {
    if (cls[i] == 0) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < d.size() && cls[j] != 0) ++j;
    std::vector<std::pair<uint8_t, uint32_t>> run;
    for (size_t k = i; k < j; ++k) run.emplace_back(cls[k], d[k]);
    std::stable_sort(run.begin(), run.end(),
                     [](const auto& x, const auto& y) { return x.first < y.first; });
    for (size_t k = i; k < j; ++k) {
      cls[k] = run[k - i].first;
      d[k] = run[k - i].second;
    }
    i = j;
  }

  // 3. Canonical composition (UAX #15 sample code): a character joins the last starter unless
  // a character of the same or higher class, or a starter, stands between them.
  std::vector<uint32_t> out;
  out.reserve(d.size());
  size_t starter = 0;
  bool have_starter = false;
  int last_class = -1;  // class of the last character appended after the starter
  for (size_t i = 0; i < d.size(); ++i) {
    const uint32_t ch = d[i];
    const int ch_class = cls[i];
    if (have_starter) {
      const bool blocked = last_class != 0 && last_class >= ch_class;
      if (!blocked || last_class == -1) {
        if (const uint32_t c = compose(out[starter], ch)) {
          out[starter] = c;
          continue;
        }
      }
    }
    if (ch_class == 0) {
      starter = out.size();
      have_starter = true;
      last_class = -1;
    } else {
      last_class = ch_class;
    }
    out.push_back(ch);
  }

  std::string result;
  result.reserve(text.size());
  for (uint32_t cp : out) append_utf8(result, cp);
  return result;
}

}  // namespace ftune::tok
