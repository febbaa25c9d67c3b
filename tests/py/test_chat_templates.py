#!/usr/bin/env python3
"""Chat template parity: ftune's renderer (tests/tools/render_chat) against jinja2 running the
official chat_template strings, the way transformers' apply_chat_template does
(ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True), raise_exception global,
bos_token/eos_token from tokenizer_config.json, add_generation_prompt=False; and True for every
conversation that ends with a user turn, the prompt `ftune generate --chat` continues from).

For every (template, conversation) pair the rendered text must be byte-identical, or both must
raise. The template is handed to ftune as its Jinja source (rendered by ftune's interpreter); a
few cases use the preset names instead.
Also checks the trainable segments: exactly one per assistant turn, equal to the reply as the
template writes it plus the end-of-turn token.

Second part, tokenization with labels: for templates whose special tokens a tokenizer has,
ftune's ids (the data pipeline's render_example + tokenize_rendered) must equal HF tokenizers'
encode(text, add_special_tokens=False), and its labels must equal a mask computed independently
from HF's character offsets: a token is trained when its characters overlap an assistant reply
(trainable segment). Tokenizers: the repo's Llama-3-style assets/tokenizer, plus a byte-level
BPE and a SentencePiece-style BPE (Prepend/Replace normalizer, byte_fallback, like Llama-2)
trained here with HF tokenizers on the rendered conversations.

Prints "chat templates: N passed, M failed"; exits non-zero on any failure.
"""
import json
import os
import random
import subprocess
import sys
import tempfile

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                  r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# --- Official template strings (tokenizer_config.json "chat_template", JSON-decoded) -------

# meta-llama/Meta-Llama-3-8B-Instruct
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# meta-llama/Llama-2-7b-chat-hf
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)

# mistralai/Mistral-7B-Instruct-v0.1
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token + ' ' }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}"
    "{% endfor %}"
)

# Qwen/Qwen2-7B-Instruct
QWEN2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Plain ChatML without a default system message (teknium/OpenHermes-2.5-Mistral-7B)
CHATML_PLAIN = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# ftune's alpaca chat template (FORMATS.md section 9 prompt strings, no-input form).
ALPACA = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}"
    "{% set loop_messages = messages[1:] %}{% else %}"
    "{{ 'Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.' }}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}{% if message['role'] == 'user' %}"
    "{{ '\\n\\n### Instruction:\\n' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}"
    "{{ '\\n\\n### Response:\\n' + message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '\\n\\n### Response:\\n' }}{% endif %}"
)

# (label, source, tokens as in the official tokenizer_config, ftune name, end-of-turn,
#  how the template writes an assistant reply before its end-of-turn token)
TEMPLATES = [
    ("llama-3", LLAMA3, {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}, "llama-3",
     "<|eot_id|>", lambda c: c.strip()),
    ("llama-2", LLAMA2, {"bos_token": "<s>", "eos_token": "</s>"}, "llama-2", "</s>",
     lambda c: c.strip() + " "),
    ("mistral", MISTRAL, {"bos_token": "<s>", "eos_token": "</s>"}, "mistral", "</s>",
     lambda c: c),
    ("qwen2", QWEN2, {"eos_token": "<|im_end|>"}, "chatml", "<|im_end|>", lambda c: c),
    ("chatml-plain", CHATML_PLAIN, {"bos_token": "<s>", "eos_token": "<|im_end|>"}, "chatml",
     "<|im_end|>", lambda c: c),
    ("alpaca", ALPACA, {"bos_token": "<s>", "eos_token": "</s>"}, "alpaca", "</s>", lambda c: c),
    ("alpaca-llama3-tokens", ALPACA,
     {"bos_token": "<|begin_of_text|>", "eos_token": "<|end_of_text|>"}, "alpaca",
     "<|end_of_text|>", lambda c: c),
]


def conversations():
    S, U, A = "system", "user", "assistant"
    m = lambda r, c: {"role": r, "content": c}
    convs = [
        [m(U, "Hello"), m(A, "Hi there")],
        [m(S, "You are a helpful assistant"), m(U, "Hello"), m(A, "Hi there")],
        [m(U, "What is 2+2?"), m(A, "4"), m(U, "And 3+3?"), m(A, "6")],
        [m(S, "Be brief."), m(U, "Name a color."), m(A, "Red."), m(U, "Another?"), m(A, "Blue.")],
        [m(U, "  leading and trailing spaces  "), m(A, "  padded reply  ")],
        [m(U, "\n\nnewlines around\n"), m(A, "\nreply with newline\n\n")],
        [m(U, "tabs\tinside\t"), m(A, "\tTabbed\t")],
        [m(U, "Unicode: héllo wörld — ☃ 日本語 🙂"), m(A, "Ответ: да ✓")],
        [m(U, "\u3000ideographic space\u3000"), m(A, "\u00a0nbsp around\u00a0")],
        [m(U, "\u2028line sep\u2029"), m(A, "\u200bzero width is not whitespace\u200b")],
        [m(U, "\x85next line\x1f"), m(A, "\x1cfile sep\x0b")],
        [m(U, ""), m(A, "")],
        [m(U, "   "), m(A, "   ")],
        [m(S, ""), m(U, "empty system"), m(A, "ok")],
        [m(S, "  spaced system  "), m(U, "q"), m(A, "a")],
        [m(S, "System only")],
        [m(U, "Only a user turn")],
        [m(U, "Unanswered"), m(A, "Answered"), m(U, "Last question without reply")],
        [m(U, "Code:\n```python\nprint('hi')\n```"), m(A, "```\nhi\n```")],
        [m(U, "Quotes ' \" and {{ braces }} {% tags %}"), m(A, "Literal {{ x }} and <s> text")],
        [m(U, "Special-looking <|eot_id|> inside"), m(A, "and [INST] inside [/INST]")],
        [m(U, "Backslashes \\n \\t \\\\"), m(A, "C:\\path\\to\\file")],
        [m(U, "Long " + "word " * 60), m(A, "Long answer " * 40)],
        # role orders some templates reject
        [m(A, "Assistant speaks first"), m(U, "then the user")],
        [m(U, "two users"), m(U, "in a row"), m(A, "reply")],
        [m(U, "q"), m(A, "a"), m(A, "two assistants")],
        [m(U, "q"), m(S, "system in the middle"), m(A, "a")],
        [m(U, "q"), m(A, "a"), m(S, "late system"), m(A, "b")],
        [m(S, "first system"), m(S, "second system"), m(U, "q"), m(A, "a")],
        [m(S, "sys"), m(A, "assistant right after system")],
    ]
    # Random multi-turn conversations from a fixed seed: mixed whitespace and unicode.
    rng = random.Random(1234)
    words = ["alpha", "beta", "gamma", "ß", "naïve", "東京", "emoji🙂", "x", "42", "a-b", "?", "!"]
    pads = ["", " ", "  ", "\n", "\t", "\u00a0", " \n "]

    def text():
        body = " ".join(rng.choice(words) for _ in range(rng.randint(0, 8)))
        return rng.choice(pads) + body + rng.choice(pads)

    while len(convs) < 56:
        conv = []
        if rng.random() < 0.4:
            conv.append(m(S, text()))
        for _ in range(rng.randint(1, 4)):
            conv.append(m(U, text()))
            if rng.random() < 0.9:
                conv.append(m(A, text()))
        convs.append(conv)
    return convs


def render_jinja(source, tokens, messages, add_generation_prompt=False):
    def raise_exception(msg):
        raise TemplateError(msg)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    tmpl = env.from_string(source)
    return tmpl.render(messages=messages, add_generation_prompt=add_generation_prompt, **tokens)


def train_byte_level(corpus, specials, path):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=900, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    tok.save(path)


def train_sentencepiece_style(corpus, path):
    """Llama-2-like layout: <unk>=0 <s>=1 </s>=2, <0x00>..<0xFF>, then learned pieces."""
    specials = ["<unk>", "<s>", "</s>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"),
                                           normalizers.Replace(" ", "\u2581")])
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(corpus, trainer)
    j = json.loads(tok.to_str())
    vocab = {t: i for i, t in enumerate(specials)}
    for b in range(256):
        vocab["<0x%02X>" % b] = len(vocab)
    for t, _ in sorted(j["model"]["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(t, len(vocab))
    j["model"]["vocab"] = vocab
    j["model"]["byte_fallback"] = True
    for a in j["added_tokens"]:
        a["id"] = vocab[a["content"]]
    j["decoder"] = json.loads(Tokenizer(models.BPE()).to_str())["decoder"]
    Tokenizer.from_str(json.dumps(j))  # HF must accept it
    with open(path, "w") as f:
        json.dump(j, f)


def expected_ids_and_labels(tok, text, segments):
    """HF ids and a mask from character offsets: trained iff the token overlaps a reply."""
    enc = tok.encode(text, add_special_tokens=False)
    ranges, pos = [], 0
    for seg, trainable in segments:
        if trainable:
            ranges.append((pos, pos + len(seg)))
        pos += len(seg)
    labels = []
    for tid, (a, b) in zip(enc.ids, enc.offsets):
        if b > a:
            trained = any(a < re and b > rs for rs, re in ranges)
        else:
            trained = any(rs <= a < re for rs, re in ranges)
        labels.append(tid if trained else -100)
    return enc.ids, labels


def first_difference(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def tokenization_cases(convs, src_dir, work):
    """(label, template source, tokens, tokenizer path) for the second part."""
    corpus = []
    for _, source, tokens, _, _, _ in TEMPLATES:
        for conv in convs:
            try:
                corpus.append(render_jinja(source, tokens, conv))
            except TemplateError:
                pass
    corpus = corpus * 3
    byte_level = os.path.join(work, "byte_level.json")
    train_byte_level(corpus, ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                              "<|end_header_id|>", "<|eot_id|>", "<|im_start|>", "<|im_end|>",
                              "<s>", "</s>"], byte_level)
    sp = os.path.join(work, "sentencepiece.json")
    train_sentencepiece_style(corpus, sp)
    asset = os.path.join(src_dir, "assets", "tokenizer", "tokenizer.json")
    by_label = {t[0]: t for t in TEMPLATES}
    out = []
    for label, path in [("llama-3", asset), ("llama-3", byte_level), ("qwen2", byte_level),
                        ("chatml-plain", byte_level), ("alpaca-llama3-tokens", byte_level),
                        ("llama-2", sp), ("mistral", sp), ("alpaca", sp)]:
        _, source, tokens, _, _, _ = by_label[label]
        out.append((label + " / " + os.path.basename(path), source, tokens, path))
    return out


def main():
    build = os.environ.get("FTUNE_BIN", "build")
    tool = os.path.join(build, "tools", "render_chat")
    convs = conversations()
    cases, expected = [], []
    for label, source, tokens, name, eot, reply in TEMPLATES:
        for i, conv in enumerate(convs):
            case = {"template": source, "messages": conv}
            case["bos_token"] = tokens.get("bos_token")  # None: HF leaves it undefined -> ""
            case["eos_token"] = tokens.get("eos_token")
            cases.append(case)
            try:
                want = render_jinja(source, tokens, conv)
            except TemplateError as e:
                want = TemplateError(str(e))
            expected.append((label, i, name, eot, reply, conv, want))
    # With add_generation_prompt (the prompt `ftune generate --chat` continues from): every
    # conversation whose last message is the user's, i.e. a turn awaiting the reply.
    for label, source, tokens, name, eot, reply in TEMPLATES:
        for i, conv in enumerate(convs):
            prompt = conv[:-1] if conv[-1]["role"] == "assistant" else conv
            if not prompt or prompt[-1]["role"] != "user":
                continue
            case = {"template": source, "messages": prompt, "add_generation_prompt": True,
                    "bos_token": tokens.get("bos_token"), "eos_token": tokens.get("eos_token")}
            cases.append(case)
            try:
                want = render_jinja(source, tokens, prompt, add_generation_prompt=True)
            except TemplateError as e:
                want = TemplateError(str(e))
            expected.append((label + " (generation prompt)", i, name, eot, reply, prompt, want))
    # The table names resolve too (no detection): a few cases by name.
    for label, source, tokens, name, eot, reply in TEMPLATES[:4]:
        conv = convs[1] if name not in ("mistral",) else convs[0]
        cases.append({"template": name, "messages": conv, **tokens})
        expected.append((label + " (by name)", 0, name, eot, reply, conv,
                         render_jinja(source, tokens, conv)))

    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"cases": cases}, f)
        path = f.name
    try:
        out = subprocess.run([tool, path], capture_output=True, text=True)
    finally:
        os.unlink(path)
    if out.returncode != 0:
        print(out.stderr)
        print("chat templates: 0 passed, %d failed" % len(cases))
        return 1
    got = json.loads(out.stdout)
    assert len(got) == len(cases)

    passed, failed = 0, 0
    for (label, i, name, eot, reply, conv, want), g in zip(expected, got):
        problems = []
        if isinstance(want, TemplateError):
            if "error" not in g:
                problems.append("jinja raised %r but ftune rendered %r" % (str(want), g.get("text")))
        elif "error" in g:
            problems.append("ftune raised %r, jinja rendered %r" % (g["error"], want))
        else:
            if label.endswith("(by name)") and g["name"] != name:
                problems.append("resolved %s, want %s" % (g["name"], name))
            if g["text"] != want:
                problems.append("text differs:\n  jinja %r\n  ftune %r" % (want, g["text"]))
            if label.endswith("(generation prompt)"):
                pass  # the prompt to continue from: text only, no trained spans
            elif "segments" not in g:
                problems.append("no segments rendered")
            elif "".join(s for s, _ in g["segments"]) != g["text"]:
                problems.append("segments do not join to the text")
            trained = [s for s, t in g.get("segments", []) if t]
            # llama-2 renders nothing for a non-user/assistant role at an odd loop index, and
            # skips a leading system message; otherwise every assistant message is rendered.
            replies = [reply(c["content"]) + eot
                       for c in conv if c["role"] == "assistant"]
            if not label.endswith("(generation prompt)") and trained != replies:
                problems.append("trainable segments %r, want %r" % (trained, replies))
        if problems:
            failed += 1
            print("FAIL %s conversation %d: %s" % (label, i, "; ".join(problems)))
        else:
            passed += 1
    # --- Part 2: tokenization with labels -------------------------------------------------
    src_dir = os.environ.get("FTUNE_SRC", os.path.join(os.path.dirname(__file__), "..", ".."))
    with tempfile.TemporaryDirectory() as work:
        tcases, texpected = [], []
        for label, source, tokens, tok_path in tokenization_cases(convs, src_dir, work):
            for i, conv in enumerate(convs):
                try:
                    render_jinja(source, tokens, conv)
                except TemplateError:
                    continue
                tcases.append({"template": source, "messages": conv, "tokenizer": tok_path,
                               "bos_token": tokens.get("bos_token"),
                               "eos_token": tokens.get("eos_token")})
                texpected.append((label, i, tok_path))
        path = os.path.join(work, "cases.json")
        with open(path, "w") as f:
            json.dump({"cases": tcases}, f)
        out = subprocess.run([tool, path], capture_output=True, text=True)
        if out.returncode != 0:
            print(out.stderr)
            failed += len(tcases)
            tgot = [{"error": "render_chat failed"}] * len(tcases)
        else:
            tgot = json.loads(out.stdout)
        hf = {}
        tpassed = 0
        for (label, i, tok_path), g in zip(texpected, tgot):
            if tok_path not in hf:
                hf[tok_path] = Tokenizer.from_file(tok_path)
                hf[tok_path].post_processor = None  # raw (untrimmed) offsets
            problems = []
            if "error" in g:
                problems.append("ftune raised %r" % g["error"])
            else:
                ids, labels = expected_ids_and_labels(hf[tok_path], g["text"], g["segments"])
                if g["ids"] != ids:
                    k = first_difference(g["ids"], ids)
                    problems.append("ids differ from HF at %d: ftune %r, HF %r" %
                                    (k, g["ids"][k:k + 6], ids[k:k + 6]))
                elif g["labels"] != labels:
                    k = first_difference(g["labels"], labels)
                    problems.append("labels differ at token %d (%r): ftune %r, offsets %r" %
                                    (k, hf[tok_path].id_to_token(ids[k]), g["labels"][k:k + 6],
                                     labels[k:k + 6]))
                elif all(l == -100 for l in labels) and any(
                        m["role"] == "assistant" for m in convs[i]):
                    problems.append("no trained token although there is a reply")
            if problems:
                failed += 1
                print("FAIL tokenize %s conversation %d: %s" % (label, i, "; ".join(problems)))
            else:
                passed += 1
                tpassed += 1
        print("  (of which tokenization with labels: %d cases)" % tpassed)

    print("chat templates: %d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 and passed > 0 else 1




if __name__ == "__main__":
    sys.exit(main())
