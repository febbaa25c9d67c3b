#!/usr/bin/env python3
"""Jinja parity: ftune's chat-template interpreter (tests/tools/render_chat) against Python
jinja2 configured the way transformers' apply_chat_template configures it:
ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True) with the loopcontrols
extension and a {% generation %} tag, raise_exception, strftime_now (a fixed date here),
tojson = json.dumps(ensure_ascii=False, sort_keys=False), namespace, dict; render(messages=...,
tools=None, documents=None, add_generation_prompt=..., bos_token/eos_token/..., **variables).

Templates: the official strings in tests/fixtures/chat_templates/*.jinja (sources in the README
there), rendered with many conversations, add_generation_prompt both ways, extra variables
(enable_thinking) and a date. Each case must give byte-identical text, or both must raise.
Also:
  * trainable spans: for every case ftune renders without raising, the segments must join to
    the text and there must be one trainable span per rendered assistant reply containing
    that reply's text as the template writes it (where the template writes it verbatim);
  * {% generation %}: where a template marks assistant output, ftune's spans must equal the
    marked spans (transformers' return_assistant_tokens_mask);
  * feature snippets: small templates exercising filters, tests, methods, scoping,
    whitespace control and errors, each compared with jinja2;
  * a template with a syntax error must be refused by both.

Prints "jinja parity: N passed, M failed"; exits non-zero on any failure.
"""
import datetime
import json
import os
import random
import subprocess
import sys
import tempfile

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("FTUNE_SRC", os.path.join(HERE, "..", ".."))
FIXTURES = os.path.join(SRC, "tests", "fixtures", "chat_templates")
DATE = "2025-03-07"


class GenerationTracker(Extension):
    """{% generation %}...{% endgeneration %}: renders the body, records its character span
    (transformers' AssistantTracker)."""
    tags = {"generation"}

    def __init__(self, environment):
        super().__init__(environment)
        self.spans = None

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_generation"), [], [], body).set_lineno(lineno)

    def _generation(self, caller):
        return "\x00GEN{" + caller() + "\x00GEN}"


def make_env():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTracker, "jinja2.ext.loopcontrols"])

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.datetime.strptime(DATE, "%Y-%m-%d").replace(hour=12).strftime(fmt)

    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


ENV = make_env()


def render_jinja(source, messages, tokens, gen, variables, tools=None, documents=None):
    """(text, generation spans as byte offsets) or an exception instance."""
    try:
        tmpl = ENV.from_string(source)
        raw = tmpl.render(messages=messages, tools=tools, documents=documents,
                          add_generation_prompt=gen, **tokens, **variables)
    except Exception as e:  # jinja2 raises TemplateError, UndefinedError, TypeError, ...
        return e
    text, spans, pos, stack = "", [], 0, []
    i = 0
    while i < len(raw):
        if raw.startswith("\x00GEN{", i):
            stack.append(len(text.encode()))
            i += 5
        elif raw.startswith("\x00GEN}", i):
            spans.append([stack.pop(), len(text.encode())])
            i += 5
        else:
            text += raw[i]
            i += 1
    spans.sort()
    return text, spans


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
        [m(U, "Unicode: héllo wörld — ☃ 日本語 🙂"), m(A, "Ответ: да ✓")],
        [m(U, "\u3000ideographic space\u3000"), m(A, "\u00a0nbsp around\u00a0")],
        [m(U, ""), m(A, "")],
        [m(S, "System only")],
        [m(U, "Only a user turn")],
        [m(U, "Unanswered"), m(A, "Answered"), m(U, "Last question without reply")],
        [m(U, "Code:\n```python\nprint('hi')\n```"), m(A, "```\nhi\n```")],
        [m(U, "Quotes ' \" and {{ braces }} {% tags %}"), m(A, "Literal {{ x }} and <s> text")],
        [m(U, "Backslashes \\n \\t \\\\"), m(A, "C:\\path\\to\\file")],
        [m(U, "Think first"), m(A, "<think>\nsome reasoning\n</think>\n\nThe answer.")],
        [m(U, "q1"), m(A, "<think>r1</think>a1"), m(U, "q2"), m(A, "<think>\nr2\n</think>\n\na2")],
        [m(S, "sys"), m(U, "q1"), m(A, "a1"), m(U, "q2"), m(A, "a2"), m(U, "q3"), m(A, "a3")],
        # role orders some templates reject
        [m(A, "Assistant speaks first"), m(U, "then the user")],
        [m(U, "two users"), m(U, "in a row"), m(A, "reply")],
        [m(U, "q"), m(A, "a"), m(A, "two assistants")],
        [m(U, "q"), m(S, "system in the middle"), m(A, "a")],
        [m(S, "first system"), m(S, "second system"), m(U, "q"), m(A, "a")],
    ]
    rng = random.Random(4321)
    words = ["alpha", "beta", "ß", "naïve", "東京", "emoji🙂", "x", "42", "?", "</think>", "<think>"]
    pads = ["", " ", "\n", "\t", " \n "]

    def text():
        body = " ".join(rng.choice(words) for _ in range(rng.randint(0, 6)))
        return rng.choice(pads) + body + rng.choice(pads)

    while len(convs) < 40:
        conv = [m(S, text())] if rng.random() < 0.4 else []
        for _ in range(rng.randint(1, 3)):
            conv.append(m(U, text()))
            conv.append(m(A, text()))
        convs.append(conv)
    return convs


# (fixture, tokens as the official tokenizer_config.json has them, variable sets)
TEMPLATES = [
    ("llama-3.jinja", {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}, [{}]),
    ("llama-3.2.jinja", {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
     [{}, {"date_string": "01 Jan 2025"}]),
    ("llama-3.3.jinja", {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}, [{}]),
    ("llama-2.jinja", {"bos_token": "<s>", "eos_token": "</s>"}, [{}]),
    ("mistral-v0.1.jinja", {"bos_token": "<s>", "eos_token": "</s>"}, [{}]),
    ("mistral-v0.3.jinja", {"bos_token": "<s>", "eos_token": "</s>"}, [{}]),
    ("mistral-nemo-tekken.jinja", {"bos_token": "<s>", "eos_token": "</s>"}, [{}]),
    ("qwen2.jinja", {"eos_token": "<|im_end|>"}, [{}]),
    ("qwen2.5.jinja", {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, [{}]),
    ("qwen3.jinja", {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
     [{}, {"enable_thinking": False}, {"enable_thinking": True}]),
    ("gemma-2.jinja", {"bos_token": "<bos>", "eos_token": "<eos>"}, [{}]),
    ("gemma-3.jinja", {"bos_token": "<bos>", "eos_token": "<eos>"}, [{}]),
    ("phi-3.5.jinja", {"bos_token": "<s>", "eos_token": "<|endoftext|>"}, [{}]),
    ("phi-4.jinja", {"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>"}, [{}]),
    ("phi-4-generation.jinja", {"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>"}, [{}]),
    ("llama-3-generation.jinja", {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}, [{}]),
    ("deepseek-r1-distill-llama.jinja",
     {"bos_token": "<｜begin▁of▁sentence｜>", "eos_token": "<｜end▁of▁sentence｜>"}, [{}]),
    ("chatml-plain.jinja", {"bos_token": "<s>", "eos_token": "<|im_end|>"}, [{}]),
    ("alpaca.jinja", {"bos_token": "<s>", "eos_token": "</s>"}, [{}]),
]

# Small templates for single features: (template, variables). Rendered with one conversation.
SNIPPETS = [
    ("{{ 'a' ~ 1 ~ none ~ true }}|{{ 1 + 2 * 3 - 4 / 2 }}|{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 2 ** 10 }}", {}),
    ("{{ 1e20 }} {{ 1.0 }} {{ 0.1 + 0.2 }} {{ 1e-5 }} {{ 123456789.125 }} {{ 3 / 3 }}", {}),
    ("{{ [1, 'a', none, true, 1.5, {'k': \"it's\"}] }}|{{ ('x',) }}|{{ {'a': [1, 2]} }}", {}),
    ("{{ 'héllo wörld'[1:4] }}|{{ 'abc'[::-1] }}|{{ [1, 2, 3, 4][1::2] }}|{{ 'xyz'[-1] }}|{{ [1,2][5] }}|", {}),
    ("{{ messages|length }} {{ messages[0].role }} {{ messages[-1]['content'] }} {{ messages|map(attribute='role')|join(',') }}", {}),
    ("{{ messages|selectattr('role', 'equalto', 'user')|list|length }} {{ messages|rejectattr('role', 'eq', 'user')|map(attribute='content')|list }}", {}),
    ("{% for m in messages if m.role != 'system' %}{{ loop.index }}/{{ loop.length }}{{ '!' if loop.first }}{{ '$' if loop.last }}{{ loop.revindex0 }};{% else %}none{% endfor %}", {}),
    ("{% for x in [] %}x{% else %}empty{% endfor %}|{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }},{% endfor %}", {}),
    ("{% set x = 0 %}{% for i in range(3) %}{{ x }}{% set x = x + 1 %}{{ x }}{% endfor %}{{ x }}", {}),
    ("{% set ns = namespace(n=0, s='') %}{% for i in range(5) %}{% if i == 3 %}{% break %}{% endif %}{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}", {}),
    ("{% for i in range(6) %}{% if i is odd %}{% continue %}{% endif %}{{ i }}{% endfor %}|{{ range(2, 10, 3)|list }}", {}),
    ("{% macro tag(name, body='x', sep=':') %}<{{ name }}{{ sep }}{{ body }}>{% endmacro %}{{ tag('a') }}{{ tag('b', 'c') }}{{ tag('d', sep='=') }}", {}),
    ("{% macro wrap() %}[{{ caller() }}]{% endmacro %}{% call wrap() %}inside{% endcall %}", {}),
    ("{% set block %}  captured {{ 1 + 1 }} {% endset %}[{{ block }}]|{{ block|trim|upper }}", {}),
    ("{{ '  x  '|trim }}|{{ 'xxhixx'.strip('x') }}|{{ ' a b '.lstrip() }}|{{ ' a b '.rstrip() }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}", {}),
    ("{{ 'Hello World'.lower() }} {{ 'hello world'.upper() }} {{ 'hello wORLD'.title() }} {{ 'hello World'.capitalize() }} {{ 'aaa'.replace('a', 'b', 2) }} {{ 'héllo'|upper }}", {}),
    ("{{ 'abc'.startswith('a') }} {{ 'abc'.endswith(('x', 'c')) }} {{ 'b' in 'abc' }} {{ 'z' not in ['a'] }} {{ 'k' in {'k': 1} }}", {}),
    ("{{ {'a': 1}.get('a') }} {{ {'a': 1}.get('b') }} {{ {'a': 1}.get('b', 2) }} {{ {'b': 1, 'a': 2}.keys()|list }} {{ {'a': 2}.values()|list }} {{ {'a': 1}|items|list }}", {}),
    ("{{ x }}|{{ x is defined }}|{{ x is undefined }}|{{ x|default('d') }}|{{ ''|default('e', true) }}|{{ x|length }}|{{ (x ~ 'a') }}|{{ x is none }}|{% for i in x %}{{ i }}{% endfor %}", {}),
    ("{{ x.y }}", {}),
    ("{{ x + 'a' }}", {}),
    ("{{ messages[0].nothing }}|{{ messages[0].nothing is defined }}|{{ messages[0]['nothing']|default('dflt') }}", {}),
    ("{{ messages[0].nothing.deeper }}", {}),
    ("{{ 1 < 'a' }}", {}),
    ("{{ 'a' + 1 }}", {}),
    ("{{ raise_exception('custom failure') }}", {}),
    ("{{ [].append(1) }}", {}),
    ("{{ none is none }} {{ 1 is number }} {{ 'a' is string }} {{ {} is mapping }} {{ [] is iterable }} {{ 'a' is sequence }} {{ true is true }} {{ 0 is false }} {{ 3 is divisibleby 3 }} {{ 1 is equalto 1 }} {{ 2 is in [1, 2] }}", {}),
    ("{{ {'b': 'é\n\"', 'a': [1, 2.5, none, true, {}]}|tojson }}|{{ [1, {'x': []}]|tojson(indent=2) }}|{{ 'ü'|tojson }}|{{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }}", {}),
    ("{{ messages|tojson }}", {}),
    ("{{ '5'|int + 1 }} {{ '4.7'|int }} {{ 'x'|int }} {{ 3.9|int }} {{ '2.5'|float }} {{ 42|string ~ '!' }} {{ [3, 1, 2]|sort }} {{ [1, 2]|first }} {{ [1, 2]|last }} {{ [1, 2, 2]|unique|list }} {{ 'abc'|reverse }} {{ [1, 2]|reverse|list }}", {}),
    ("{{ 'a\nb\n\nc'|indent(2) }}|{{ 'a\nb'|indent(2, true) }}|{{ [1, 2, 3]|sum }} {{ [3, 1]|max }} {{ [3, 1]|min }} {{ 2.5|round }} {{ 3.14159|round(2) }} {{ -3|abs }}", {}),
    ("{{ 'yes' if true else 'no' }} {{ 'yes' if false else 'no' }} {{ 'x' if false }}| {{ true and 'b' }} {{ false or 'c' }} {{ not 0 }} {{ 1 == 1.0 }} {{ [1] == [1] }} {{ 'a' < 'b' }} {{ 2 >= 2 }}", {}),
    ("{{ strftime_now('%d %b %Y') }} {{ strftime_now('%Y-%m-%d %A') }}", {}),
    ("{{ enable_thinking }} {{ enable_thinking is defined }} {{ tools is none }} {{ tools is defined }} {{ documents }} {{ bos_token }}{{ eos_token }}", {"enable_thinking": False}),
    ("{% if true %}\n  yes\n{% endif %}\n  {% if true %}\n    indented\n  {% endif %}\nend", {}),
    ("a  {%- if true -%}  b  {%- endif -%}  c {{- ' d ' -}} e {# comment #}\n f {#- c -#} g", {}),
    ("{%+ if true %}  keep{% endif +%}\nnext\n  {%- raw %}{{ not parsed }}{% endraw %}", {}),
    ("line1\n{# a comment on its own line #}\nline2\n", {}),
    ("{% set a, b = [1, 2] %}{{ a }}{{ b }}|{% set d = dict(x=1, y='z') %}{{ d }}|{{ namespace(a=1).a }}", {}),
    ("{{ '%s and %d' % ('x', 3) }}|{{ '%s!'|format('hi') }}|{{ 'ab' * 3 }}|{{ [0] * 2 }}", {}),
    ("{% filter upper %}shout {{ 'this' }}{% endfilter %}|{{ 'a' is lower }}|{{ 'Ab' is upper }}", {}),
    ("{{ messages[0].content|wordcount }} {{ 'a-b'|replace('-', '_') }} {{ 'Hello'|lower|capitalize }} {{ 'x'|e }} {{ '<&>'|escape }}", {}),
    ("{% for a in [[1, 2], [3, 4]] %}{% for b in a %}{{ loop.index }}{{ b }}{% endfor %}{{ loop.index }}|{% endfor %}", {}),
    ("{% for m in messages %}{{ loop.previtem.role if loop.previtem is defined else '-' }}>{{ loop.nextitem.role if not loop.last else '.' }} {% endfor %}{{ loop }}", {}),
    ("{{ messages|dictsort }}", {}),
    ("{{ {'b': 2, 'a': 1}|dictsort }}", {}),
]

# Templates jinja2 refuses to compile (ftune must refuse them too).
BROKEN = [
    "{% if messages %}never closed",
    "{% for m in messages %}{{ m.content }}{% endif %}",
    "{{ 'unterminated }}",
    "{{ messages | nosuchfilter }}",
    "{% if x is nosuchtest %}{% endif %}",
    "{{ a b }}",
    "{% set %}",
    "{% unknowntag %}",
    "{{ (1 + }}",
    "{% endfor %}",
    "{% break %}",
]


def cases():
    """[(label, case dict for render_chat, expected)]"""
    out = []
    convs = conversations()
    for fixture, tokens, variable_sets in TEMPLATES:
        source = open(os.path.join(FIXTURES, fixture), encoding="utf-8").read()
        for variables in variable_sets:
            for i, conv in enumerate(convs):
                for gen in (False, True):
                    case = {"template": source, "messages": conv, "add_generation_prompt": gen,
                            "variables": dict(variables, **{k: v for k, v in tokens.items()
                                                            if k not in ("bos_token", "eos_token")}),
                            "bos_token": tokens.get("bos_token"), "eos_token": tokens.get("eos_token"),
                            "date": DATE}
                    want = render_jinja(source, conv, tokens, gen, variables)
                    out.append(("%s %s conv %d gen=%s" % (fixture, variables or "", i, gen), case, want, conv))
    conv = convs[3]
    for k, (source, variables) in enumerate(SNIPPETS):
        case = {"template": source, "messages": conv, "bos_token": "<s>", "eos_token": "</s>",
                "variables": variables, "date": DATE, "spans": False}
        want = render_jinja(source, conv, {"bos_token": "<s>", "eos_token": "</s>"}, False, variables)
        out.append(("snippet %d %r" % (k, source[:50]), case, want, None))
    for k, source in enumerate(BROKEN):
        case = {"template": source, "messages": conv, "spans": False}
        want = render_jinja(source, conv, {}, False, {})
        assert isinstance(want, Exception), source
        out.append(("broken %d %r" % (k, source), case, want, None))
    broken_file = os.path.join(FIXTURES, "syntax-error.jinja")
    source = open(broken_file, encoding="utf-8").read()
    want = render_jinja(source, convs[0], {}, False, {})
    assert isinstance(want, jinja2.exceptions.TemplateSyntaxError), want
    out.append(("syntax-error.jinja", {"template": source, "messages": convs[0]}, want, None))
    return out


def check_spans(label, conv, got, problems):
    segs = got.get("segments")
    if segs is None:
        return
    if "".join(s for s, _ in segs) != got["text"]:
        problems.append("segments do not join to the text")
    trained = [s for s, t in segs if t]
    if got["generation"]:
        # Where the template marks {% generation %}, ftune's spans must be exactly those.
        text_bytes = got["text"].encode()
        marked = [text_bytes[b:e].decode() for b, e in got["generation"]]
        if trained != [m for m in marked if m]:
            problems.append("trainable spans %r differ from {%% generation %%} spans %r" % (trained, marked))
    n_assistant = sum(1 for m in conv if m["role"] == "assistant")
    if len(trained) > n_assistant:
        problems.append("%d trainable spans for %d assistant messages" % (len(trained), n_assistant))
    # Every span must hold its reply's text where the template writes the reply verbatim.
    replies = [m["content"].strip() for m in conv if m["role"] == "assistant"]
    for reply in replies:
        core = reply.split("</think>")[-1].strip()
        if core and core in got["text"] and not any(core in t for t in trained):
            problems.append("reply %r is in the text but in no trainable span" % core)
    for t in trained:
        if "<|start_header_id|>user" in t or "<|im_start|>user" in t or "[INST]" in t:
            problems.append("trainable span %r contains a user turn" % t)


def main():
    build = os.environ.get("FTUNE_BIN", "build")
    tool = os.path.join(build, "tools", "render_chat")
    all_cases = cases()
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as f:
        json.dump({"cases": [c for _, c, _, _ in all_cases]}, f, ensure_ascii=False)
        path = f.name
    try:
        out = subprocess.run([tool, path], capture_output=True)
    finally:
        os.unlink(path)
    if out.returncode != 0:
        print(out.stderr.decode(errors="replace"))
        print("jinja parity: 0 passed, %d failed" % len(all_cases))
        return 1
    got_all = json.loads(out.stdout.decode())
    assert len(got_all) == len(all_cases)
    passed = failed = 0
    for (label, case, want, conv), got in zip(all_cases, got_all):
        problems = []
        if isinstance(want, Exception):
            if "error" not in got:
                problems.append("jinja2 raised %s(%s) but ftune rendered %r" %
                                (type(want).__name__, want, got.get("text")))
        elif "error" in got:
            problems.append("ftune raised %r, jinja2 rendered %r" % (got["error"], want[0]))
        else:
            text, spans = want
            if got["text"] != text:
                problems.append("text differs:\n  jinja2 %r\n  ftune  %r" % (text, got["text"]))
            elif got["generation"] != spans:
                problems.append("generation spans %r, jinja2 %r" % (got["generation"], spans))
            elif conv is not None:
                check_spans(label, conv, got, problems)
        if problems:
            failed += 1
            print("FAIL %s: %s" % (label, "; ".join(problems)))
        else:
            passed += 1
    print("jinja parity: %d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
