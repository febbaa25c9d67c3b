"""Deterministic text generators for the tokenizer parity test (tests/py/test_tokenizer_parity.py).

training_corpus(): lines to train small BPE tokenizers with HF `tokenizers`.
test_strings():    the strings ftune and HF must tokenize identically: English, code, numbers,
                   accents (composed and decomposed), emoji (ZWJ, modifiers, flags), CJK and other
                   scripts, whitespace runs of every Unicode space, tabs/newlines/CRLF, random
                   assigned code points, special tokens inside text, characters of Unicode 10-16
                   (NEWER_UNICODE), and the empty string.
"""
import random
import unicodedata

WORDS = """the a an of to and in is it you that he was for on are with as I his they be at one
have this from or had by hot word but what some we can out other were all there when up use your
how said each she which do their time if will way about many then them write would like so these
her long make thing see him two has look more day could go come did number sound no most people
my over know water than call first who may down side been now find any new work part take get
place made live where after back little only round man year came show every good me give our under
name very through just form sentence great think say help low line differ turn cause much mean
before move right boy old too same tell does set three want air well also play small end put home
read hand port large spell add even land here must big high such follow act why ask men change went
light kind off need house picture try us again animal point mother world near build self earth
father head stand own page should country found answer school grow study still learn plant cover
food sun four between state keep eye never last let thought city tree cross farm hard start might
story saw far sea draw left late run don't while press close night real life few north open seem
together next white children begin got walk example ease paper group always music those both mark
often letter until mile river car feet care second book carry took science eat room friend began
idea fish mountain stop once base hear horse cut sure watch color face wood main enough plain girl
usual young ready above ever red list though feel talk bird soon body dog family direct pose leave
song measure door product black short numeral class wind question happen complete ship area half
rock order fire south problem piece told knew pass since top whole king space heard best hour
better true during hundred five remember step early hold west ground interest reach fast verb sing
listen six table travel less morning ten simple several vowel toward war lay against pattern slow
center love person money serve appear road map rain rule govern pull cold notice voice unit power
town fine certain fly fall lead cry dark machine note wait plan figure star box noun field rest
correct able pound done beauty drive stood contain front teach week final gave green oh quick
develop ocean warm free minute strong special mind behind clear tail produce fact street inch
multiply nothing course stay wheel full force blue object decide surface deep moon island foot
system busy test record boat common gold possible plane stead dry wonder laugh thousand ago ran
check game shape equate miss brought heat snow tire bring yes distant fill east paint language
among""".split()

CONTRACTIONS = ["I'm", "don't", "they'll", "we've", "she'd", "it's", "You're", "WE'LL", "HE'S",
                "can't", "won't", "it'S", "y'all", "o'clock", "rock'n'roll", "'tis"]

ACCENTED = ["café", "naïve", "résumé", "Ångström", "Straße", "Zażółć gęślą jaźń", "Tiếng Việt",
            "São Paulo", "Ærøskøbing", "Crème brûlée", "piñata", "Dvořák", "İstanbul", "ﬁnance",
            "cafe\u0301", "nai\u0308ve", "A\u030angstro\u0308m", "n\u0303", "ǅemal", "ΐ", "ſtraße"]

# Text that NFC changes: decomposed letters, marks out of canonical order, singletons,
# composition exclusions, conjoining Hangul jamo.
DECOMPOSED = ["e\u0301", "a\u0302\u0323", "a\u0323\u0302", "\u212b", "\u2126", "\u0344",
              "\u0f73", "\u1100\u1161\u11a8", "\u1112\u1161\u11ab\u1100\u1173\u11af",
              "\uac00\u11a8", "o\u0308\u0304", "u\u031b\u0301", "\u0958", "\u2adc",
              "A\u0300\u0316", "\u0041\u030a\u0301", "\u1e9b\u0323", "q\u0307\u0323",
              "\u0cc6\u0cc2\u0cd5", "\u0b47\u0b3e", "\u09c7\u09be"]
COMBINING = [0x300, 0x301, 0x302, 0x303, 0x308, 0x30a, 0x316, 0x323, 0x327, 0x328, 0x31b,
             0x345, 0x35c, 0x5b0, 0x64b, 0x93c, 0x9bc, 0x3099, 0x309a, 0x1dc0, 0x20d7]

EMOJI = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🇫🇷", "🇯🇵", "❤️", "✨", "🚀", "🤖", "🧑🏿‍💻", "🏳️‍🌈",
         "😂😂😂", "🙏", "1️⃣", "©️", "👋🏻", "🫠"]

SCRIPTS = ["我们今天去公园散步，天气很好。", "機械学習はとても面白いです。", "ひらがなとカタカナ",
           "한국어 문장을 토큰화합니다.", "Привет, как дела?", "Γειά σου Κόσμε", "مرحبا بالعالم",
           "שלום עולם", "नमस्ते दुनिया", "สวัสดีชาวโลก", "ᚠᚢᚦᚨᚱᚲ", "ქართული ენა", "Հայերեն",
           "中文English混合text123", "東京タワー２０２４年"]

SPACES = [" ", "  ", "   ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", " \n ", "\u00a0",
          "\u3000", "\u2009", "\u0085", "\u180e", "\u200b", "\u2028", "\u2029", "\u202f", "\u205f",
          "\u1680", "\u000b", "\u000c", " \t \n"]

CODE = [
    "def add(a, b):\n    return a + b\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += x[i] * 2;\n}\n",
    '{"name": "ftune", "version": 3, "tags": ["lora", "qlora"]}',
    "SELECT id, name FROM users WHERE age >= 21 ORDER BY name;",
    "#include <vector>\nstd::vector<int> v{1, 2, 3};\n",
    "if x == None:\r\n    raise ValueError('bad x')\r\n",
    "const f = (x) => x ** 2; // square",
    "    \n        indented_line = True\n",
    "<html><body class=\"main\">Hello &amp; welcome</body></html>",
    "$ ls -la /usr/local/bin | grep -v '^d' && echo \"done\"",
    "x+=1;y-=2;z*=3;w/=4;a%=5;b^=6;c|=7;d&=8",
    "print(f\"{value:>10.3f}\")",
    "/* comment */ int main() { return 0; }",
]


# Characters added in Unicode 10-16, where the engines' Unicode versions matter: HF normalizes
# with Unicode 9.0 data (a newer mark is a starter, a newer composite is not composed) and its
# Oniguruma regexes know Unicode 16.0 letters and digits (the system PCRE2 10.42: 14.0).
# (first, last, Unicode version) code point ranges.
NEW_LETTERS = [
    (0x11D00, 0x11D06, "10.0"),  # Masaram Gondi
    (0x2CEB0, 0x2CEC0, "10.0"),  # CJK Extension F
    (0x11800, 0x1182B, "11.0"),  # Dogra
    (0x1E2C0, 0x1E2EB, "12.0"),  # Wancho
    (0x10FB0, 0x10FC4, "13.0"),  # Chorasmian
    (0x30000, 0x30010, "13.0"),  # CJK Extension G
    (0x16A70, 0x16ABE, "14.0"),  # Tangsa
    (0x1E290, 0x1E2AD, "14.0"),  # Toto
    (0x11F04, 0x11F10, "15.0"),  # Kawi
    (0x1E4D0, 0x1E4EA, "15.0"),  # Nag Mundari
    (0x31350, 0x31360, "15.0"),  # CJK Extension H
    (0x2EBF0, 0x2EC00, "15.1"),  # CJK Extension I
    (0x10D50, 0x10D65, "16.0"),  # Garay capitals
    (0x10D70, 0x10D85, "16.0"),  # Garay small letters
    (0x1E5D0, 0x1E5ED, "16.0"),  # Ol Onal
    (0x11BC0, 0x11BE0, "16.0"),  # Sunuwar
    (0x16D40, 0x16D6C, "16.0"),  # Kirat Rai
    (0x16100, 0x1611D, "16.0"),  # Gurung Khema
    (0x105C0, 0x105F3, "16.0"),  # Todhri
    (0xA7CB, 0xA7CD, "16.0"),    # Latin Extended-D additions
    (0x1C89, 0x1C8A, "16.0"),    # Cyrillic Tje
]
NEW_DIGITS = [
    (0x1E2F0, 0x1E2F9, "12.0"),  # Wancho digits
    (0x11950, 0x11959, "13.0"),  # Dives Akuru digits
    (0x11F50, 0x11F59, "15.0"),  # Kawi digits
    (0x1E4F0, 0x1E4F9, "15.0"),  # Nag Mundari digits
    (0x1D2C0, 0x1D2D3, "15.0"),  # Kaktovik numerals (No)
    (0x10D40, 0x10D49, "16.0"),  # Garay digits
    (0x1E5F1, 0x1E5FA, "16.0"),  # Ol Onal digits
    (0x11BF0, 0x11BF9, "16.0"),  # Sunuwar digits
    (0x16D70, 0x16D79, "16.0"),  # Kirat Rai digits
    (0x16130, 0x16139, "16.0"),  # Gurung Khema digits
    (0x1CCF0, 0x1CCF9, "16.0"),  # outlined digits
    (0x116D0, 0x116E3, "16.0"),  # Myanmar Extended-C digits
]
# Combining marks (class != 0) added in Unicode 10-16: starters for HF's Unicode 9.0 NFC.
NEW_MARKS = [0x1DF6, 0x1DF9, 0x0D3B, 0x07FD, 0x08D3, 0x09FE, 0x10D24, 0x10F46, 0x1E130,
             0x1E2EC, 0x1ABF, 0x1AC0, 0x10EAB, 0x16FF0, 0x0898, 0x0899, 0x089C, 0x08CA, 0x10EFD,
             0x11F41, 0x1E08F, 0x1E4EC, 0x1E4EE, 0x0897, 0x10D69, 0x113CE, 0x1612F, 0x1E5EE,
             0x1E5EF]
# Canonical pairs whose composite was added in Unicode 13-16 (not composed by HF), as decomposed.
NEW_PAIRS = ["\U00011935\U00011930", "\U000105D2\u0307", "\U000105DA\u0307",
             "\U00011382\U000113C9", "\U00011384\U000113BB", "\U0001138B\U000113C2",
             "\U000113C2\U000113C2", "\U0001611E\U0001611E", "\U0001611E\U0001611F",
             "\U00016121\U0001611F", "\U00016D67\U00016D67", "\U00016D63\U00016D67"]
# Emoji of Unicode 10-16 (symbols: the same class in both engines, kept for completeness).
NEW_EMOJI = ["\U0001F929", "\U0001F970", "\U0001F971", "\U0001FAE0", "\U0001FAE8",
             "\U0001F426\u200D\U0001F525", "\U0001FAE9", "\U0001FADF", "\U0001FAE8\U0001F3FD"]

NEWER_UNICODE = [
    "a\u1df9\u0301", "q\u0301\u0899", "e\u0899\u0323", "o\u0308\u1df6\u0323", "A\u0300\u08d3",
    "\u1100\u1161\u0899\u11a8", "\uac00\u1df9\u11a8", "n\u0303\U0001E4EC\u0301",
    "\U00011F04\U00011F05\U00011F06", "abc\U0001E4D0def", " \U0001E4D0\U0001E4D1 x",
    "\U0001E4F0\U0001E4F1\U0001E4F2\U0001E4F3\U0001E4F4", "12\U00010D40\U00010D41345",
    "\U00031350\U00031351\u4e2d\u6587", "\U0002EBF0\U0002EBF1\U0002EBF2 text",
    "\U00010D50\U00010D70\U00010D71 \U0001E5D0\U0001E5D1!", "x\U0001E5F1\U0001E5F2\U0001E5F3y",
    "'s\U00011BC0", "\U00016D40\U00016D41\n\U00016D70\U00016D71", "\u0001\U000105C0\U000105C1",
    "\ua7cb\ua7cc\ua7cd Latin", "\u1c89\u1c8a", "\U0001CCF0\U0001CCF1\U0001CCF2\U0001CCF3",
    # Word characters next to a single_word added token ("world" in the parity test).
    "\U00011F04world", "world\U0001E5D0", "\U0001E4F0world", "world\u0897", "world \U00011F04",
] + NEW_PAIRS + NEW_EMOJI


def _range_char(rng, ranges):
    first, last, _ = rng.choice(ranges)
    return chr(rng.randrange(first, last + 1))


def unicode15_plus_alnum(c):
    """Whether `c` is one of the letters or digits above that Unicode 15.0-16.0 added."""
    cp = ord(c)
    return any(a <= cp <= b and float(v) >= 15 for a, b, v in NEW_LETTERS + NEW_DIGITS)


def _newer_text(rng):
    """A mixture of Unicode 10-16 letters, digits, marks, composites and emoji with ASCII."""
    out = []
    for _ in range(rng.randrange(1, 6)):
        k = rng.random()
        if k < 0.35:
            out.append("".join(_range_char(rng, NEW_LETTERS) for _ in range(rng.randrange(1, 7))))
        elif k < 0.55:
            out.append("".join(_range_char(rng, NEW_DIGITS) for _ in range(rng.randrange(1, 8))))
        elif k < 0.75:
            base = (rng.choice("aeiouqnAOx") if rng.random() < 0.7
                    else chr(rng.randrange(0xAC00, 0xAC40)))  # Hangul syllables
            marks = [rng.choice(NEW_MARKS) if rng.random() < 0.5 else rng.choice(COMBINING)
                     for _ in range(rng.randrange(1, 4))]
            out.append(base + "".join(map(chr, marks)))
        elif k < 0.85:
            out.append(rng.choice(NEW_PAIRS))
        elif k < 0.92:
            out.append(rng.choice(NEW_EMOJI))
        else:
            out.append(rng.choice(WORDS))
        out.append(rng.choice(["", "", " ", "-", ".", "'", "1", "\n"]))
    return "".join(out)


def _number(rng):
    kind = rng.randrange(7)
    if kind == 0:
        return str(rng.randrange(10 ** rng.randrange(1, 16)))
    if kind == 1:
        return f"{rng.uniform(-1000, 1000):.{rng.randrange(1, 6)}f}"
    if kind == 2:
        return f"{rng.randrange(1, 29):02d}/{rng.randrange(1, 13):02d}/{rng.randrange(1900, 2100)}"
    if kind == 3:
        return f"{rng.randrange(10 ** 9):,}"
    if kind == 4:
        return f"+1 ({rng.randrange(100, 999)}) {rng.randrange(100, 999)}-{rng.randrange(1000, 9999)}"
    if kind == 5:
        return "".join(rng.choice("٠١٢٣٤٥٦٧٨٩")  for _ in range(rng.randrange(1, 6)))
    return f"{rng.randrange(100)}%"


def _sentence(rng, n_words=None):
    n = n_words or rng.randrange(3, 16)
    words = []
    for _ in range(n):
        r = rng.random()
        if r < 0.75:
            w = rng.choice(WORDS)
        elif r < 0.85:
            w = rng.choice(CONTRACTIONS)
        elif r < 0.92:
            w = _number(rng)
        else:
            w = rng.choice(ACCENTED)
        if rng.random() < 0.1:
            w = w.capitalize()
        if rng.random() < 0.03:
            w = w.upper()
        words.append(w)
    s = " ".join(words)
    return s[0].upper() + s[1:] + rng.choice([".", "!", "?", "...", ",", ":", ";", ""])


# Assigned code points of the Unicode version Python knows (unicodedata), so that both engines
# (Oniguruma in HF, PCRE2 here) agree on their classes; surrogates cannot be encoded.
def _random_char(rng):
    while True:
        r = rng.random()
        if r < 0.4:
            cp = rng.randrange(0x20, 0x800)
        elif r < 0.8:
            cp = rng.randrange(0x800, 0x10000)
        else:
            cp = rng.randrange(0x10000, 0x30000)
        if 0xD800 <= cp < 0xE000:
            continue
        if unicodedata.category(chr(cp)) == "Cn":
            continue
        return chr(cp)


def _marked(rng):
    """Letters (Latin, Greek, Cyrillic, Hangul jamo, ...) followed by random combining marks."""
    out = []
    for _ in range(rng.randrange(1, 6)):
        r = rng.random()
        if r < 0.6:
            out.append(rng.choice("aeiouAEIOUnNcCsSzZyYwWαεηιοςυωΑΕИиеkKgGhH"))
        elif r < 0.8:
            out.append(rng.choice(DECOMPOSED))
        else:
            out.append(chr(rng.choice([0x1100, 0x1105, 0x1112])) + chr(rng.randrange(0x1161, 0x1176))
                       + (chr(rng.randrange(0x11A8, 0x11C3)) if rng.random() < 0.5 else ""))
        out.extend(chr(rng.choice(COMBINING)) for _ in range(rng.randrange(0, 4)))
    return "".join(out)


def training_corpus(seed=1, n_lines=6000):
    rng = random.Random(seed)
    lines = []
    for i in range(n_lines):
        r = rng.random()
        if r < 0.55:
            lines.append(" ".join(_sentence(rng) for _ in range(rng.randrange(1, 4))))
        elif r < 0.70:
            lines.append(rng.choice(CODE))
        elif r < 0.78:
            lines.append(rng.choice(SCRIPTS) + " " + _sentence(rng, 4))
        elif r < 0.85:
            lines.append(_sentence(rng) + " " + rng.choice(EMOJI) + rng.choice(SPACES) +
                         _sentence(rng))
        elif r < 0.92:
            lines.append(" ".join(_number(rng) for _ in range(rng.randrange(2, 8))))
        elif r < 0.96:
            lines.append(" ".join(_newer_text(rng) for _ in range(rng.randrange(1, 4))))
        else:
            lines.append(rng.choice(SPACES).join(_sentence(rng, 5) for _ in range(3)))
    return lines


def test_strings(specials, seed=2, n_random=2000, n_newer=400):
    """Edge cases first, then n_random generated mixtures. `specials` are token strings to place
    inside text (complete, and truncated so that they must not match)."""
    rng = random.Random(seed)
    out = ["", " ", "  ", "\n", "\t", "a", "'s", "'S", "'ſ", "''", "0", "000", "1234567",
           "hello", " hello", "hello ", "  hello  world  ", "Hello\n\nWorld", "\r\n\r\n",
           "a\u0085b", "a\u180eb", "x\u00a0\u00a0y", "\u3000全角", "tab\there", "end\n"]
    out += SPACES + CONTRACTIONS + ACCENTED + DECOMPOSED + EMOJI + SCRIPTS + CODE + NEWER_UNICODE
    for sp in specials:
        out += [sp, sp + sp, " " + sp + " ", "a" + sp + "b", sp + "\n\nhi", "hi " + sp,
                sp[:-1], sp[1:], sp[:-1] + " " + sp, sp.upper()]
    # Every printable ASCII character, alone and after a space.
    out += [chr(c) for c in range(0x20, 0x7F)] + [" " + chr(c) for c in range(0x21, 0x7F)]
    for _ in range(n_random):
        r = rng.random()
        parts = []
        for _ in range(rng.randrange(1, 7)):
            k = rng.random()
            if k < 0.35:
                parts.append(_sentence(rng))
            elif k < 0.45:
                parts.append(rng.choice(CODE))
            elif k < 0.53:
                parts.append(rng.choice(SCRIPTS))
            elif k < 0.60:
                parts.append(rng.choice(EMOJI))
            elif k < 0.68:
                parts.append(rng.choice(SPACES))
            elif k < 0.74:
                parts.append(_number(rng))
            elif k < 0.82 and specials:
                sp = rng.choice(specials)
                parts.append(sp if rng.random() < 0.8 else sp[: rng.randrange(1, len(sp))])
            elif k < 0.87:
                parts.append("".join(_random_char(rng) for _ in range(rng.randrange(1, 12))))
            elif k < 0.90:
                parts.append(_marked(rng))
            else:
                parts.append(rng.choice(WORDS) * rng.randrange(1, 5))
        joiner = rng.choice(["", " ", " ", "\n", "  ", "\t"]) if r < 0.9 else rng.choice(SPACES)
        out.append(joiner.join(parts))
    out += [_newer_text(rng) for _ in range(n_newer)]
    # A few long strings (beyond the BPE word cache limit, many pieces).
    for _ in range(5):
        out.append(" ".join(_sentence(rng) for _ in range(200)))
        out.append("x" * rng.randrange(300, 2000))
        out.append("".join(rng.choice(SCRIPTS) for _ in range(50)))
    return out
