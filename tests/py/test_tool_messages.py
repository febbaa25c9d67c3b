#!/usr/bin/env python3
"""Tool calling and reasoning in dataset records: ftune's data path against jinja2.

Dataset records of the messages format carrying what current chat templates use -- a `tools`
list, assistant turns with `tool_calls` (content "", null or left out), tool results (role
"tool" / "ipython" with tool_call_id and name), `reasoning_content`, arguments as an object or
a JSON string, keys in non-alphabetical order -- go through ftune's record conversion
(tests/tools/render_chat with "record", i.e. convert_record as in training) and its Jinja
renderer, and through jinja2 the way transformers' apply_chat_template renders them
(test_jinja_parity's environment; messages exactly as json.loads gives them, tools=record's
tools, documents=record's documents). Templates: the official tool-capable fixtures
(Llama-3.2, Llama-3.3, Qwen2.5, Qwen3 with and without enable_thinking, Mistral v0.3,
Mistral-Nemo) and ChatML (role "tool" in its header), plus Qwen3 and Llama-3.2 with
{% generation %} around the assistant output (qwen3-generation.jinja,
llama-3.2-generation.jinja, written for the tests).

Each (template, record) must give byte-identical text, or both must raise. Trainable spans
(train_on_responses_only): the segments join to the text; where the template marks
{% generation %} the trained spans equal the marked ones; the official Qwen3 and Llama-3.2
templates must train exactly what their marked twins mark (same text, so the same spans); in
every template each tool call's function name lies in a trained span (a turn that only calls
tools is trained) and no tool result lies in one.

The C++ test tests/data/test_tool_messages.cpp reads tests/fixtures/tool_messages/
{records.jsonl,expected.json} (these records, jinja2's text and marked spans); this test fails
when they differ from what jinja2 renders now, and --write-fixture rewrites them.

Prints "tool messages: N passed, M failed"; exits non-zero on any failure.
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_jinja_parity import DATE, FIXTURES, SRC, render_jinja  # noqa: E402

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"]}}}
CLOCK = {"type": "function", "function": {
    "name": "get_time", "description": "Local time in a time zone",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string"}},
                   "required": ["zone"]}}}


def call(name, arguments, call_id):
    return {"type": "function", "id": call_id, "function": {"name": name, "arguments": arguments}}


def weather_call(call_id="call00001"):
    # "unit" before "city": tojson must keep the record's key order, as json.dumps does.
    return call("get_weather", {"unit": "celsius", "city": "Paris"}, call_id)


RESULT = "sunny, 21 degrees"


def records():
    U = lambda c: {"role": "user", "content": c}
    A = lambda c: {"role": "assistant", "content": c}
    S = lambda c: {"role": "system", "content": c}
    tool = lambda c, call_id="call00001", name="get_weather": {
        "role": "tool", "content": c, "tool_call_id": call_id, "name": name}
    calling = lambda content, *calls: dict({"role": "assistant", "tool_calls": list(calls)},
                                           **({} if content is ... else {"content": content}))
    return [
        # content "", null, left out
        {"messages": [U("Weather in Paris?"), calling("", weather_call()), tool(RESULT),
                      A("It is sunny and 21 degrees in Paris.")], "tools": [WEATHER]},
        {"messages": [U("Weather in Paris?"), calling(None, weather_call()), tool(RESULT),
                      A("It is sunny and 21 degrees in Paris.")], "tools": [WEATHER, CLOCK]},
        {"messages": [U("Weather in Paris?"), calling(..., weather_call()), tool(RESULT),
                      A("Sunny, 21 degrees.")], "tools": [WEATHER]},
        # reasoning_content on the calling turn and on the answer
        {"messages": [S("You are a weather bot."), U("Weather in Paris?"),
                      dict(calling("", weather_call()), reasoning_content="I should call the tool."),
                      tool(RESULT),
                      dict(A("Sunny and 21 degrees."), reasoning_content="The tool said sunny.")],
         "tools": [WEATHER]},
        # a later user turn: earlier tool rounds are history (Qwen3 drops their reasoning)
        {"messages": [U("Weather in Paris?"),
                      dict(calling("Let me check.", weather_call()), reasoning_content="call it"),
                      tool(RESULT), dict(A("Sunny, 21."), reasoning_content="done"),
                      U("Thanks! And the time?"), A("I cannot tell the time without a tool.")],
         "tools": [WEATHER]},
        # two calls in one turn and two results (Llama-3.x refuses: both must raise)
        {"messages": [U("Weather and time in Paris?"),
                      calling("", weather_call("call00001"),
                              call("get_time", {"zone": "Europe/Paris"}, "call00002")),
                      tool(RESULT), tool("14:05", "call00002", "get_time"),
                      A("Sunny, 21 degrees, and five past two.")], "tools": [WEATHER, CLOCK]},
        # arguments as a JSON string; the tool result under role ipython
        {"messages": [U("Time in Tokyo?"),
                      calling("", call("get_time", '{"zone": "Asia/Tokyo"}', "call00003")),
                      {"role": "ipython", "content": "21:30"}, A("Half past nine in the evening there.")],
         "tools": [CLOCK]},
        # no tools list, but a tool round; documents pass through; a thinking key
        {"messages": [U("What does the tool say?"), calling("", weather_call()), tool(RESULT),
                      dict(A("It says: sunny."), thinking="quote it")],
         "documents": [{"title": "Paris", "text": "Capital of France."}]},
        # reasoning written inline in the content (Qwen3 splits it at </think>)
        {"messages": [U("2+2?"), A("<think>\nsimple sum\n</think>\n\n4")]},
    ]


# (fixture, tokens, variables, generation-marked twin or None)
TEMPLATES = [
    ("llama-3.2.jinja", {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}, {},
     "llama-3.2-generation.jinja"),
    ("llama-3.2-generation.jinja", {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
     {}, None),
    ("llama-3.3.jinja", {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}, {}, None),
    ("qwen2.5.jinja", {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, {}, None),
    ("qwen3.jinja", {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, {},
     "qwen3-generation.jinja"),
    # enable_thinking false: the generation prompt ends with an empty <think></think>, so that
    # block is prompt, not trained -- unlike the marked twin, which marks it.
    ("qwen3.jinja", {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
     {"enable_thinking": False}, None),
    ("qwen3-generation.jinja", {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, {},
     None),
    ("mistral-v0.3.jinja", {"bos_token": "<s>", "eos_token": "</s>"}, {}, None),
    ("mistral-nemo-tekken.jinja", {"bos_token": "<s>", "eos_token": "</s>"}, {}, None),
    ("chatml-plain.jinja", {"bos_token": "<s>", "eos_token": "<|im_end|>"}, {}, None),
]

# The C++ test's fixture: the generation-marked templates and the official Qwen3 / Llama-3.2.
FIXTURE_TEMPLATES = ["qwen3.jinja", "qwen3-generation.jinja", "llama-3.2.jinja",
                     "llama-3.2-generation.jinja", "mistral-v0.3.jinja"]


def source_of(fixture):
    with open(os.path.join(FIXTURES, fixture), encoding="utf-8") as f:
        return f.read()


def jinja_of(fixture, tokens, variables, record):
    return render_jinja(source_of(fixture), record["messages"], tokens, False, variables,
                        tools=record.get("tools"), documents=record.get("documents"))


def marked_texts(text, spans):
    b = text.encode()
    return [b[s:e].decode() for s, e in spans if e > s]


def check(fixture, record, want, twin, got):
    problems = []
    if isinstance(want, Exception):
        if "error" not in got:
            problems.append("jinja2 raised %s(%s) but ftune rendered %r" %
                            (type(want).__name__, want, got.get("text")))
        return problems
    if "error" in got:
        return ["ftune raised %r, jinja2 rendered %r" % (got["error"], want[0])]
    text, spans = want
    if got["text"] != text:
        return ["text differs:\n  jinja2 %r\n  ftune  %r" % (text, got["text"])]
    segs = got["segments"]
    if "".join(s for s, _ in segs) != text:
        problems.append("segments do not join to the text")
    trained = [s for s, t in segs if t]
    if spans and trained != marked_texts(text, spans):
        problems.append("trained %r, {%% generation %%} marks %r" % (trained, marked_texts(text, spans)))
    if twin is not None:
        twin_text, twin_spans = twin
        assert twin_text == text, "the marked twin renders other text"
        if trained != marked_texts(text, twin_spans):
            problems.append("trained %r, the marked twin marks %r" %
                            (trained, marked_texts(text, twin_spans)))
    msgs = record["messages"]
    if len(trained) > sum(m["role"] == "assistant" for m in msgs):
        problems.append("more trained spans than assistant messages")
    for m in msgs:
        for c in m.get("tool_calls") or []:
            name = c["function"]["name"]
            if '"name": "%s"' % name in text and not any(name in t for t in trained):
                problems.append("tool call %s is rendered but not trained" % name)
        if m["role"] in ("tool", "ipython") and any(m["content"] in t for t in trained):
            problems.append("tool result %r is trained" % m["content"])
    return problems


def run_tool(cases):
    build = os.environ.get("FTUNE_BIN", "build")
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as f:
        json.dump({"cases": cases}, f, ensure_ascii=False)
        path = f.name
    try:
        out = subprocess.run([os.path.join(build, "tools", "render_chat"), path], capture_output=True)
    finally:
        os.unlink(path)
    if out.returncode != 0:
        print(out.stderr.decode(errors="replace"))
        return None
    return json.loads(out.stdout.decode())


def fixture_files(recs):
    """{path: text} of the C++ test's fixture, from jinja2."""
    out_dir = os.path.join(SRC, "tests", "fixtures", "tool_messages")
    records_text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs)
    expected = {"date": DATE, "templates": []}
    for fixture, tokens, variables, _ in TEMPLATES:
        if fixture not in FIXTURE_TEMPLATES or variables:
            continue
        entry = {"template": fixture, "bos_token": tokens.get("bos_token"),
                 "eos_token": tokens.get("eos_token"), "renderings": []}
        for r in recs:
            want = jinja_of(fixture, tokens, variables, r)
            if isinstance(want, Exception):
                entry["renderings"].append({"error": True})
            else:
                entry["renderings"].append({"text": want[0], "marked": marked_texts(*want)})
        expected["templates"].append(entry)
    expected_text = json.dumps(expected, ensure_ascii=False, indent=1) + "\n"
    return {os.path.join(out_dir, "records.jsonl"): records_text,
            os.path.join(out_dir, "expected.json"): expected_text}


def check_fixture(recs, write):
    """Writes the fixture, or checks the committed one is what jinja2 renders now."""
    stale = []
    for path, text in fixture_files(recs).items():
        if write:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            print("wrote", path)
            continue
        try:
            with open(path, encoding="utf-8") as f:
                current = f.read()
        except OSError:
            current = None
        if current != text:
            stale.append(path)
    for path in stale:
        print("FAIL %s differs from jinja2's rendering; run tests/py/test_tool_messages.py "
              "--write-fixture" % path)
    return not stale


def main():
    recs = records()
    fixture_ok = check_fixture(recs, "--write-fixture" in sys.argv)
    cases, expected = [], []
    for fixture, tokens, variables, twin in TEMPLATES:
        for i, r in enumerate(recs):
            cases.append({"template": source_of(fixture), "record": r, "date": DATE,
                          "bos_token": tokens.get("bos_token"), "eos_token": tokens.get("eos_token"),
                          "variables": dict(variables, **{k: v for k, v in tokens.items()
                                                          if k not in ("bos_token", "eos_token")})})
            want = jinja_of(fixture, tokens, variables, r)
            twin_want = jinja_of(twin, tokens, variables, r) if twin else None
            if isinstance(twin_want, Exception):
                twin_want = None
            expected.append(("%s %s record %d" % (fixture, variables or "", i), fixture, r, want,
                             twin_want))
    got_all = run_tool(cases)
    if got_all is None:
        print("tool messages: 0 passed, %d failed" % len(cases))
        return 1
    passed = failed = rendered = 0
    for (label, fixture, r, want, twin), got in zip(expected, got_all):
        problems = check(fixture, r, want, twin, got)
        rendered += not isinstance(want, Exception)
        if problems:
            failed += 1
            print("FAIL %s: %s" % (label, "; ".join(problems)))
        else:
            passed += 1
    print("  (%d cases rendered by jinja2, %d raised in both)" % (rendered, len(cases) - rendered))
    passed, failed = (passed + 1, failed) if fixture_ok else (passed, failed + 1)
    print("tool messages: %d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
