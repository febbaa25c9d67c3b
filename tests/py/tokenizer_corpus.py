"""Deterministic text generators for the tokenizer parity test (tests/py/test_tokenizer_parity.py).

training_corpus(): lines to train small BPE tokenizers with HF `tokenizers`.
test_strings():    the strings ftune and HF must tokenize identically: English, code, numbers,
                   accents (composed and decomposed), emoji (ZWJ, modifiers, flags), CJK and other
                   scripts, whitespace runs of every Unicode space, tabs/newlines/CRLF, random
                   assigned code points, special tokens inside text, and the empty string.
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
        else:
            lines.append(rng.choice(SPACES).join(_sentence(rng, 5) for _ in range(3)))
    return lines


def test_strings(specials, seed=2, n_random=2000):
    """Edge cases first, then n_random generated mixtures. `specials` are token strings to place
    inside text (complete, and truncated so that they must not match)."""
    rng = random.Random(seed)
    out = ["", " ", "  ", "\n", "\t", "a", "'s", "'S", "'ſ", "''", "0", "000", "1234567",
           "hello", " hello", "hello ", "  hello  world  ", "Hello\n\nWorld", "\r\n\r\n",
           "a\u0085b", "a\u180eb", "x\u00a0\u00a0y", "\u3000全角", "tab\there", "end\n"]
    out += SPACES + CONTRACTIONS + ACCENTED + DECOMPOSED + EMOJI + SCRIPTS + CODE
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
    # A few long strings (beyond the BPE word cache limit, many pieces).
    for _ in range(5):
        out.append(" ".join(_sentence(rng) for _ in range(200)))
        out.append("x" * rng.randrange(300, 2000))
        out.append("".join(rng.choice(SCRIPTS) for _ in range(50)))
    return out
