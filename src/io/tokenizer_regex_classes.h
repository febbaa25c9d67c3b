// Unicode-version catch-up for the tokenizer's PCRE2 patterns. HF `tokenizers` 0.23 matches
// split regexes with Oniguruma, whose general categories (\p{L}, \p{N}, \d, ...) follow
// Unicode 16.0; the system PCRE2 may know an older version (Debian 12's 10.42: Unicode 14.0), so
// a letter added in Unicode 15 is "unassigned" there and \p{L}+ would stop at it.
//
// upgrade_unicode_classes rewrites every character class and property escape of a PCRE2 pattern
// that uses a general category so that it matches, on the code points whose category changed
// since Unicode 14.0 (tokenizer_category_table.h), what it matches under Unicode 16.0; every
// other code point keeps PCRE2's answer. Each class is evaluated code point by code point on
// that set (PCRE2 itself answers for the class as written, the table for the categories), then
// the differences are added to the class as ranges, or excluded by a lookahead.
//
// Understood items: \p{X} \P{X} \p{^X} \pX \PX for general categories (short or long names, as
// Oniguruma spells them) and \d \D (Oniguruma: Decimal_Number). Scripts and binary properties
// (\p{Han}, \p{Alphabetic}) and POSIX classes keep PCRE2's Unicode version.
#pragma once
#include <string>

namespace ftune::tok {

// The pattern with its general-category classes brought to Unicode 16.0 (see above); classes
// without a general category, and those whose meaning did not change, are copied unchanged.
std::string upgrade_unicode_classes(const std::string& pcre2_pattern);

// The Unicode version the PCRE2 library was built with ("14.0.0" for 10.42).
std::string pcre2_unicode_version();

}  // namespace ftune::tok
