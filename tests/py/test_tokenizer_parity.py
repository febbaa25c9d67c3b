#!/usr/bin/env python3
"""Parity of ftune's tokenizer (src/io/tokenizer*.cpp) with HF `tokenizers`.

Trains small tokenizers with HF `tokenizers` on a generated corpus (tests/py/tokenizer_corpus.py):
  (a) byte-level BPE configured like Llama-3 (Split with the Llama-3 regex + ByteLevel,
      ignore_merges, Llama-3 special tokens, TemplateProcessing adding BOS), saved with merges as
      pairs and rewritten with merges as "a b" strings; also the GPT-2 ByteLevel(use_regex)
      pre-tokenizer, with and without add_prefix_space, and extra added tokens with
      lstrip/rstrip/single_word/normalized; and a Qwen2-like variant (NFC normalizer, single-digit
      regex);
  (b) SentencePiece-style BPE like Llama-2 (Prepend+Replace normalizer, byte_fallback, unk,
      <s> </s>, BOS template), and the same without byte_fallback (fused unk);
  (c) the Metaspace pre-tokenizer/decoder variants (prepend_scheme first/always/never, split).
Plus the repo's assets/tokenizer/tokenizer.json. The strings include characters of Unicode 10-16
(tokenizer_corpus.NEWER_UNICODE): HF normalizes NFC with Unicode 9.0 data and its regexes know
Unicode 16.0 letters and digits; the coverage check makes sure both differences are exercised.
For every tokenizer, ftune's ids (tests/tools/tokenize_tool, all strings in one process) must
equal HF's on every test string with and without add_special_tokens; ftune's decode must equal
HF's decode (skip_special_tokens false and true), and for the lossless byte-level tokenizers
decode(encode(s)) == s.

Environment: FTUNE_BIN (build dir holding tools/tokenize_tool), FTUNE_SRC (source dir).
Prints "tokenizer parity: N passed, M failed"; exits non-zero on any mismatch.
"""
import json
import os
import subprocess
import sys
import tempfile
import unicodedata

from tokenizers import (AddedToken, Regex, Tokenizer, decoders, models, normalizers,
                        pre_tokenizers, processors, trainers)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tokenizer_corpus as corpus  # noqa: E402

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = LLAMA3_PATTERN.replace(r"\p{N}{1,3}", r"\p{N}")
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                   "<|end_header_id|>", "<|eot_id|>"]
SP_SPECIALS = ["<unk>", "<s>", "</s>"]


def component_json(**parts):
    """tokenizer.json sections of HF component objects, serialized by HF itself."""
    tok = Tokenizer(models.BPE())
    for key, value in parts.items():
        setattr(tok, key, value)
    j = json.loads(tok.to_str())
    return {key: j[key] for key in parts}


def bos_template(bos, bos_id):
    return processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                         special_tokens=[(bos, bos_id)])


def train_llama3(lines):
    tok = Tokenizer(models.BPE(ignore_merges=True))
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=3000, min_frequency=2,
                                  special_tokens=LLAMA3_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(lines, trainer)
    bos_id = tok.token_to_id("<|begin_of_text|>")
    tok.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=False),
                                              bos_template("<|begin_of_text|>", bos_id)])
    j = json.loads(tok.to_str())
    j["model"]["ignore_merges"] = True
    return j


def train_sentencepiece(lines):
    """Learned pieces from a Metaspace-split corpus, laid out like Llama-2's tokenizer.json:
    <unk>=0 <s>=1 </s>=2, <0x00>..<0xFF>=3..258, then the pieces."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always",
                                                 split=True)
    trainer = trainers.BpeTrainer(vocab_size=2500, min_frequency=2, special_tokens=SP_SPECIALS,
                                  limit_alphabet=150, show_progress=False)
    tok.train_from_iterator(lines, trainer)
    j = json.loads(tok.to_str())
    vocab = {t: i for i, t in enumerate(SP_SPECIALS)}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for t, _ in sorted(j["model"]["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(t, len(vocab))
    j["model"].update(vocab=vocab, byte_fallback=True, fuse_unk=True, unk_token="<unk>",
                      ignore_merges=False)
    j["added_tokens"] = [dict(id=i, content=c, single_word=False, lstrip=False, rstrip=False,
                              normalized=False, special=True) for i, c in enumerate(SP_SPECIALS)]
    j.update(component_json(
        normalizer=normalizers.Sequence([normalizers.Prepend("▁"),
                                         normalizers.Replace(" ", "▁")]),
        post_processor=bos_template("<s>", 1),
        decoder=decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                   decoders.Fuse(), decoders.Strip(" ", 1, 0)])))
    j["pre_tokenizer"] = None
    return j


def merges_as_strings(j):
    j = json.loads(json.dumps(j))
    merges = j["model"]["merges"]
    assert merges and isinstance(merges[0], list), "expected pair merges from tokenizers >= 0.20"
    assert all(" " not in a and " " not in b for a, b in merges)
    j["model"]["merges"] = [f"{a} {b}" for a, b in merges]
    return j


def variants(llama3, sp):
    out = {}
    out["llama3_merge_pairs"] = (llama3, True)
    out["llama3_merge_strings"] = (merges_as_strings(llama3), True)

    # A vocab holding tokens its merges cannot build (as Llama-3's does): drop the last merges
    # but keep their results, so ignore_merges=true/false give different ids.
    for ignore in [True, False]:
        cut = json.loads(json.dumps(llama3))
        cut["model"]["merges"] = cut["model"]["merges"][:-400]
        cut["model"]["ignore_merges"] = ignore
        out[f"llama3_unreachable_ignore_merges{int(ignore)}"] = (cut, True)

    # Qwen2-like: NFC normalizer, single-digit regex (not lossless: NFC rewrites the text).
    qwen = json.loads(json.dumps(llama3))
    qwen.update(component_json(
        normalizer=normalizers.NFC(),
        pre_tokenizer=pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])))
    qwen["model"]["ignore_merges"] = False
    out["qwen2_nfc"] = (qwen, False)

    gpt2 = json.loads(json.dumps(llama3))
    gpt2.update(component_json(pre_tokenizer=pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                      use_regex=True)))
    gpt2["model"]["ignore_merges"] = False
    out["gpt2_bytelevel_regex"] = (gpt2, True)
    gpt2p = json.loads(json.dumps(gpt2))
    gpt2p.update(component_json(pre_tokenizer=pre_tokenizers.ByteLevel(add_prefix_space=True,
                                                                       use_regex=True)))
    out["gpt2_bytelevel_prefix_space"] = (gpt2p, False)

    # Extra added tokens with the matching options HF honours.
    tok = Tokenizer.from_str(json.dumps(llama3))
    tok.add_tokens([AddedToken("<tool>", normalized=False, lstrip=True, rstrip=True),
                    AddedToken("world", single_word=True, normalized=True),
                    AddedToken("the end", normalized=True, rstrip=True)])
    tok.add_special_tokens([AddedToken("[INST]", single_word=True, normalized=False),
                            AddedToken("<eos>", lstrip=True, normalized=False)])
    # lstrip/rstrip swallow whitespace: not lossless.
    out["llama3_added_tokens"] = (json.loads(tok.to_str()), False)

    out["sentencepiece_legacy"] = (sp, False)
    nofb = json.loads(json.dumps(sp))
    nofb["model"]["byte_fallback"] = False
    out["sentencepiece_unk_fused"] = (nofb, False)
    tok = Tokenizer.from_str(json.dumps(sp))
    tok.add_tokens([AddedToken("foo bar", normalized=True), AddedToken("<x>", normalized=False)])
    out["sentencepiece_added_normalized"] = (json.loads(tok.to_str()), False)

    for scheme in ["first", "always", "never"]:
        for split in [False, True]:
            ms = json.loads(json.dumps(sp))
            ms["normalizer"] = None
            ms.update(component_json(
                pre_tokenizer=pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme,
                                                       split=split),
                decoder=decoders.Metaspace(replacement="▁", prepend_scheme=scheme, split=split)))
            out[f"metaspace_{scheme}_split{int(split)}"] = (ms, False)
    return out


def coverage_problems(configs):
    """The cases the comparison is meant to exercise must actually occur in the test strings."""
    def hf_ids(name):
        tj = configs[name][0]
        tok = Tokenizer.from_str(json.dumps(tj))
        strings = corpus.test_strings([t["content"] for t in tj["added_tokens"]])
        return [tok.encode(s, add_special_tokens=False).ids for s in strings]

    problems = []
    differ = sum(a != b for a, b in zip(hf_ids("llama3_unreachable_ignore_merges1"),
                                        hf_ids("llama3_unreachable_ignore_merges0")))
    byte_ids = range(len(SP_SPECIALS), len(SP_SPECIALS) + 256)
    fallback = sum(any(i in byte_ids for i in ids) for ids in hf_ids("sentencepiece_legacy"))
    unk = sum(0 in ids for ids in hf_ids("sentencepiece_unk_fused"))
    nfc_strings = corpus.test_strings([t["content"] for t in configs["qwen2_nfc"][0]["added_tokens"]])
    nfc_changes = sum(normalizers.NFC().normalize_str(s) != s for s in nfc_strings)
    # HF's NFC (Unicode 9.0 data) against this Python's (Unicode 14.0 on Python 3.11).
    nfc_version = sum(normalizers.NFC().normalize_str(s) != unicodedata.normalize("NFC", s)
                      for s in nfc_strings)
    # Letters and digits of Unicode 15.0-16.0 (PCRE2 10.42 knows 14.0) that HF's regex knows.
    chars = sorted({c for s in nfc_strings for c in s if corpus.unicode15_plus_alnum(c)})
    alnum = pre_tokenizers.Split(Regex(r"[\p{L}\p{N}]"), behavior="removed")
    kept = "".join(p for p, _ in alnum.pre_tokenize_str("\x01".join(chars))).split("\x01")
    newer = {c for c, part in zip(chars, kept) if not part}
    regex_version = sum(any(c in newer for c in s) for s in nfc_strings)
    print(f"  coverage: ignore_merges changes {differ} strings, byte fallback in {fallback}, "
          f"unk in {unk}, NFC changes {nfc_changes}, NFC Unicode 9.0 vs "
          f"{unicodedata.unidata_version} differs in {nfc_version}, Unicode 15-16 "
          f"letters/digits in {regex_version} ({len(newer)} distinct)")
    for what, n in [("ignore_merges", differ), ("byte fallback", fallback), ("unk", unk),
                    ("NFC", nfc_changes), ("the NFC Unicode version", nfc_version),
                    ("the regex Unicode version", regex_version)]:
        if n < 50:
            problems.append(f"too few test strings exercise {what} ({n})")
    return problems


def run_ftune(tool, tokenizer_json_path, strings_path, out_path):
    proc = subprocess.run([tool, tokenizer_json_path, strings_path, out_path],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"tokenize_tool failed ({proc.returncode}): {proc.stderr.strip()}")
    with open(out_path, encoding="utf-8") as f:
        return json.load(f)


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def main():
    bin_dir = os.environ.get("FTUNE_BIN", "build")
    src_dir = os.environ.get("FTUNE_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))
    tool = os.path.join(bin_dir, "tools", "tokenize_tool")
    if not os.access(tool, os.X_OK):
        print(f"tokenizer parity: FAILED, {tool} not found (build target tokenize_tool)")
        return 1

    lines = corpus.training_corpus()
    configs = variants(train_llama3(lines), train_sentencepiece(lines))
    asset = os.path.join(src_dir, "assets", "tokenizer", "tokenizer.json")
    if os.path.exists(asset):
        with open(asset, encoding="utf-8") as f:
            configs["repo_asset_tokenizer"] = (json.load(f), True)
    else:
        print(f"note: {asset} missing, not tested")

    passed, failed, shown = 0, 0, 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, (tj, lossless) in configs.items():
            text = json.dumps(tj, ensure_ascii=False)
            hf = Tokenizer.from_str(text)
            specials = [t["content"] for t in tj["added_tokens"]]
            strings = corpus.test_strings(specials)
            tok_path = os.path.join(tmp, f"{name}.json")
            str_path = os.path.join(tmp, f"{name}.strings.json")
            with open(tok_path, "w", encoding="utf-8") as f:
                f.write(text)
            with open(str_path, "w", encoding="utf-8") as f:
                json.dump(strings, f, ensure_ascii=False)
            got = run_ftune(tool, tok_path, str_path, os.path.join(tmp, f"{name}.out.json"))
            results = got["results"]
            assert len(results) == len(strings)
            n_fail = 0
            # BOS as ftune reports it: what HF's post-processor puts before an empty text.
            hf_bos = (hf.encode("", add_special_tokens=True).ids or [None])[0]
            if got["meta"]["bos_id"] != hf_bos or got["meta"]["vocab_size"] != max(
                    hf.get_vocab(with_added_tokens=True).values()) + 1:
                n_fail += 1
                print(f"MISMATCH [{name}] meta {got['meta']} vs HF bos {hf_bos}")
            for i, (s, r) in enumerate(zip(strings, results)):
                problems = []
                if "error" in r:
                    problems.append(f"ftune error: {r['error']}")
                else:
                    ids = hf.encode(s, add_special_tokens=False).ids
                    ids_sp = hf.encode(s, add_special_tokens=True).ids
                    for key, want in [("ids", ids), ("ids_special", ids_sp)]:
                        if r[key] != want:
                            k = first_diff(r[key], want)
                            problems.append(f"{key} differ at {k}: ftune {r[key][max(0, k-3):k+5]}"
                                            f" HF {want[max(0, k-3):k+5]} (len {len(r[key])} vs "
                                            f"{len(want)})")
                    for key, skip in [("decode", False), ("decode_skip", True)]:
                        want = hf.decode(ids_sp, skip_special_tokens=skip)
                        if r[key] != want:
                            problems.append(f"{key}: ftune {r[key][:120]!r} HF {want[:120]!r}")
                    if lossless and r["decode_plain"] != s:
                        problems.append(f"decode(encode(s)) != s: {r['decode_plain'][:120]!r}")
                if problems:
                    n_fail += 1
                    if shown < 12:
                        shown += 1
                        print(f"MISMATCH [{name}] #{i} {s[:150]!r}")
                        for p in problems:
                            print(f"    {p}")
                else:
                    passed += 1
            failed += n_fail
            print(f"  {name}: {len(strings) - n_fail}/{len(strings)} strings identical")

    for p in coverage_problems(configs):
        print(f"COVERAGE: {p}")
        failed += 1
    print(f"tokenizer parity: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
