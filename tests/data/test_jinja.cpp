// The Jinja interpreter (src/data/jinja): expressions, filters, tests, methods, scoping,
// whitespace control, undefined values, errors and limits. Expected values are what jinja2
// 3.1 renders for the same template (tests/py/test_jinja_parity.py checks many more against
// jinja2 itself).
#include <gtest/gtest.h>

#include <string>

#include "core/error.h"
#include "data/jinja/builtins.h"
#include "data/jinja/interpreter.h"
#include "data/jinja/value.h"

namespace ftune::jinja {
namespace {

std::string render(const std::string& src, nlohmann::ordered_json vars = nlohmann::ordered_json::object(),
                   const RenderLimits& limits = {}) {
  std::tm date{};
  date.tm_year = 2024 - 1900;
  date.tm_mon = 6;
  date.tm_mday = 26;
  auto globals = builtin_globals(date);
  for (auto it = vars.begin(); it != vars.end(); ++it) globals[it.key()] = Value::from_json(it.value());
  const auto t = load_template(src);
  Interpreter in(*t, std::move(globals), limits);
  return in.render().text;
}

std::string error_of(const std::string& src, nlohmann::ordered_json vars = nlohmann::ordered_json::object(),
                     const RenderLimits& limits = {}) {
  try {
    render(src, vars, limits);
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Jinja, LiteralsAndArithmeticFollowPython) {
  EXPECT_EQ(render("{{ 1 + 2 * 3 - 4 / 2 }}|{{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 2 ** 10 }}"),
            "5.0|3 -4 2 1024");
  EXPECT_EQ(render("{{ 1e20 }} {{ 1.0 }} {{ 0.1 + 0.2 }} {{ 1e-5 }} {{ 2.5e-4 }} {{ 1e16 }} {{ 123.0e3 }}"),
            "1e+20 1.0 0.30000000000000004 1e-05 0.00025 1e+16 123000.0");
  EXPECT_EQ(render("{{ true }} {{ none }} {{ False }} {{ 'a' 'b' }} {{ \"q\\\"\" }} {{ 'tab\\tx' }}"),
            "True None False ab q\" tab\tx");
  EXPECT_EQ(render("{{ [1, 'a', none, true, 1.5, {'k': \"it's\"}] }}|{{ ('x',) }}|{{ () }}"),
            "[1, 'a', None, True, 1.5, {'k': \"it's\"}]|('x',)|()");
  EXPECT_EQ(render("{{ 'a' ~ 1 ~ none }} {{ 'ab' * 2 }} {{ [1] + [2] }} {{ 1 == 1.0 }} {{ true == 1 }}"),
            "a1None abab [1, 2] True True");
}

TEST(Jinja, ComparisonsLogicAndTernary) {
  EXPECT_EQ(render("{{ 'a' < 'b' }} {{ 2 >= 2 }} {{ [1, 2] < [1, 3] }} {{ 1 != 2 }}"), "True True True True");
  EXPECT_EQ(render("{{ true and 'b' }} {{ 0 and 1 }} {{ false or 'c' }} {{ not '' }}"), "b 0 c True");
  EXPECT_EQ(render("{{ 'y' if 1 else 'n' }}{{ 'y' if 0 else 'n' }}[{{ 'y' if 0 }}]"), "yn[]");
  EXPECT_EQ(render("{{ 'b' in 'abc' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 3 not in [1] }}"),
            "True True True True");
}

TEST(Jinja, StringsIndexAndSliceByCodePoint) {
  EXPECT_EQ(render("{{ s[1:4] }}|{{ s[::-1] }}|{{ s[-1] }}|{{ s|length }}|{{ [1, 2, 3, 4][1::2] }}",
                   {{"s", "héllo🙂"}}),
            "éll|🙂olléh|🙂|6|[2, 4]");
  EXPECT_EQ(render("{{ [1, 2][5] }}|{{ 'ab'[9] }}|"), "||");  // out of range: undefined
}

TEST(Jinja, FiltersUsedByChatTemplates) {
  EXPECT_EQ(render("{{ '  x \n'|trim }}|{{ 'xxhixx'|trim('x') }}|{{ 'Hello'|lower }}|{{ 'héllo'|upper }}|"
                   "{{ 'hello wORLD'|title }}|{{ 'hello World'|capitalize }}|{{ 'aaa'|replace('a', 'b', 2) }}"),
            "x|hi|hello|HÉLLO|Hello World|Hello world|bba");
  EXPECT_EQ(render("{{ [1, 2]|length }} {{ 'abc'|count }} {{ [3, 1, 2]|sort }} {{ [1, 2]|first }} "
                   "{{ [1, 2]|last }} {{ [1, 2, 2]|unique|list }} {{ ['a', 'b']|join('-') }} {{ 42|string ~ '!' }}"),
            "2 3 [1, 2, 3] 1 2 [1, 2] a-b 42!");
  EXPECT_EQ(render("{{ '5'|int + 1 }} {{ '4.7'|int }} {{ 'x'|int }} {{ 3.9|int }} {{ '2.5'|float }} {{ x|default('d') }} "
                   "{{ ''|default('e', true) }} {{ {'a': 1}|items|list }} {{ 'ab'|list }}"),
            "6 4 0 3 2.5 d e [('a', 1)] ['a', 'b']");
  EXPECT_EQ(render("{{ m|selectattr('role', 'equalto', 'user')|map(attribute='c')|join(',') }}|"
                   "{{ m|rejectattr('role', 'eq', 'user')|list|length }}|{{ m|map(attribute='role')|list }}",
                   {{"m", {{{"role", "user"}, {"c", "1"}}, {{"role", "bot"}, {"c", "2"}}, {{"role", "user"}, {"c", "3"}}}}}),
            "1,3|1|['user', 'bot', 'user']");
  EXPECT_EQ(render("{{ 'a\nb\n\nc'|indent(2) }}|{{ 2.5|round }} {{ 3.14159|round(2) }} {{ -3|abs }} {{ [1, 2]|sum }}"),
            "a\n  b\n\n  c|2.0 3.14 3 3");
}

TEST(Jinja, TojsonIsTransformersJsonDumps) {
  // ensure_ascii=False, key order kept, Python's separators and float repr.
  EXPECT_EQ(render("{{ v|tojson }}", {{"v", {{"b", "é\n\"\x01"}, {"a", {1, 2.5, nullptr, true}}}}}),
            "{\"b\": \"é\\n\\\"\\u0001\", \"a\": [1, 2.5, null, true]}");
  EXPECT_EQ(render("{{ v|tojson(indent=2) }}", {{"v", {{"a", {1, nlohmann::ordered_json::object()}}, {"c", nlohmann::ordered_json::array()}}}}),
            "{\n  \"a\": [\n    1,\n    {}\n  ],\n  \"c\": []\n}");
  EXPECT_EQ(render("{{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }} {{ 'ü'|tojson(ensure_ascii=true) }}"),
            "{\"a\": 2, \"b\": 1} \"\\u00fc\"");
  EXPECT_NE(error_of("{{ x|tojson }}").find("not JSON serializable"), std::string::npos);
}

TEST(Jinja, TestsAndMethods) {
  EXPECT_EQ(render("{{ none is none }} {{ 1 is number }} {{ 'a' is string }} {{ {} is mapping }} {{ [] is iterable }} "
                   "{{ x is defined }} {{ x is undefined }} {{ 3 is divisibleby 3 }} {{ 1 is equalto 1 }} "
                   "{{ 2 is in [1, 2] }} {{ true is true }} {{ 0 is false }} {{ 3 is odd }} {{ 1 is not none }}"),
            "True True True True True False True True True True True False True True");
  EXPECT_EQ(render("{{ ' a '.strip() }}|{{ 'xhix'.strip('x') }}|{{ ' a'.lstrip() }}|{{ 'a '.rstrip() }}|"
                   "{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'a b c'.rsplit(' ', 1) }}"),
            "a|hi|a|a|['a', 'b', '', 'c']|['a', 'b']|['a', 'b c']|['a b', 'c']");
  EXPECT_EQ(render("{{ 'abc'.startswith('a') }} {{ 'abc'.endswith(('x', 'c')) }} {{ 'ab'.upper() }} {{ 'AB'.lower() }} "
                   "{{ 'a b'.title() }} {{ 'aa'.replace('a', 'b') }} {{ 'abcb'.find('b') }} {{ 'abcb'.count('b') }}"),
            "True True AB ab A B bb 1 2");
  EXPECT_EQ(render("{{ d.get('a') }} {{ d.get('z') }} {{ d.get('z', 2) }} {{ d.keys()|list }} {{ d.values()|list }} "
                   "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}",
                   {{"d", {{"b", 1}, {"a", 2}}}}),
            "2 None 2 ['b', 'a'] [1, 2] b=1;a=2;");
  EXPECT_NE(error_of("{{ [].append(1) }}").find("unsafe"), std::string::npos);
}

TEST(Jinja, ForLoopsScopesAndNamespaces) {
  EXPECT_EQ(render("{% for m in ['a', 'b', 'c'] if m != 'b' %}{{ loop.index }}/{{ loop.length }}{{ m }}"
                   "{{ '!' if loop.first }}{{ '$' if loop.last }}{{ loop.revindex0 }};{% endfor %}"),
            "1/2a!1;2/2c$0;");
  EXPECT_EQ(render("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  // A set inside a loop does not leak out (and is fresh each iteration); a namespace does.
  EXPECT_EQ(render("{% set x = 0 %}{% for i in range(3) %}{{ x }}{% set x = x + 1 %}{{ x }}{% endfor %}{{ x }}"),
            "0101010");
  EXPECT_EQ(render("{% set ns = namespace(n=0) %}{% for i in range(5) %}{% if i == 3 %}{% break %}{% endif %}"
                   "{% set ns.n = ns.n + i %}{% endfor %}{{ ns.n }}"),
            "3");
  EXPECT_EQ(render("{% for i in range(6) %}{% if i is odd %}{% continue %}{% endif %}{{ i }}{% endfor %}"), "024");
  EXPECT_EQ(render("{% for a in [[1, 2], [3]] %}{% for b in a %}{{ loop.index }}{{ b }}{% endfor %}{{ loop.index }}|{% endfor %}"),
            "11221|132|");
  EXPECT_EQ(render("{% set a, b = [1, 2] %}{{ a }}{{ b }}{% set blk %} x {{ 1 + 1 }} {% endset %}[{{ blk }}]"),
            "12[ x 2 ]");
  EXPECT_NE(error_of("{% set x = 1 %}{% set x.y = 2 %}").find("non-namespace"), std::string::npos);
}

TEST(Jinja, MacrosAndCallBlocks) {
  EXPECT_EQ(render("{% macro tag(name, body='x', sep=':') %}<{{ name }}{{ sep }}{{ body }}>{% endmacro %}"
                   "{{ tag('a') }}{{ tag('b', 'c') }}{{ tag('d', sep='=') }}"),
            "<a:x><b:c><d=x>");
  EXPECT_EQ(render("{% set x = 5 %}{% macro m() %}{{ x }}{% endmacro %}{% set x = 6 %}{{ m() }}"), "6");
  EXPECT_EQ(render("{% macro wrap() %}[{{ caller() }}]{% endmacro %}{% call wrap() %}in{% endcall %}"), "[in]");
}

TEST(Jinja, WhitespaceControlAsTransformersConfiguresIt) {
  // trim_blocks drops the newline after a block tag; lstrip_blocks the indentation before it.
  EXPECT_EQ(render("{% if true %}\n  yes\n{% endif %}\n  {% if true %}\n    in\n  {% endif %}\nend"),
            "  yes\n    in\nend");
  EXPECT_EQ(render("a  {%- if true -%}  b  {%- endif -%}  c {{- ' d ' -}} e"), "abc d e");
  EXPECT_EQ(render("line1\n{# comment #}\nline2\n"), "line1\nline2");  // one trailing \n dropped
  EXPECT_EQ(render("{%+ if true %}  keep{% endif +%}\nnext"), "  keep\nnext");
  EXPECT_EQ(render("{% raw %}{{ not parsed }}{% endraw %}"), "{{ not parsed }}");
  EXPECT_EQ(render("{{ x }}  {% if true %}k{% endif %}", {{"x", 1}}), "1  k");  // not at line start
  EXPECT_EQ(render("a\r\nb"), "a\nb");
}

TEST(Jinja, UndefinedBehavesLikeJinja2Default) {
  EXPECT_EQ(render("[{{ x }}]{{ x|length }}{{ x ~ 'a' }}{{ x is none }}{% for i in x %}{{ i }}{% endfor %}"
                   "{{ m.nothing }}{{ m.nothing is defined }}",
                   {{"m", {{"a", 1}}}}),
            "[]0aFalseFalse");
  EXPECT_NE(error_of("{{ x.y }}").find("'x' is undefined"), std::string::npos);
  EXPECT_NE(error_of("{{ m.nothing.deeper }}", {{"m", {{"a", 1}}}}).find("has no attribute 'nothing'"),
            std::string::npos);
  EXPECT_NE(error_of("{{ x + 'a' }}").find("'x' is undefined"), std::string::npos);
}

TEST(Jinja, GlobalsRaiseExceptionStrftimeRangeDict) {
  EXPECT_NE(error_of("{{ raise_exception('custom failure') }}").find("custom failure"), std::string::npos);
  EXPECT_EQ(render("{{ strftime_now('%d %b %Y') }}|{{ range(2, 10, 3)|list }}|{{ dict(x=1, y='z') }}|{{ namespace(a=1).a }}"),
            "26 Jul 2024|[2, 5, 8]|{'x': 1, 'y': 'z'}|1");
}

TEST(Jinja, GenerationBlocksRecordTheirSpans) {
  const auto t = load_template("a{% generation %}b{{ 'c' }}{% endgeneration %}d{% generation %}{% endgeneration %}");
  EXPECT_TRUE(t->has_generation);
  Interpreter in(*t, {});
  const RenderResult r = in.render();
  EXPECT_EQ(r.text, "abcd");
  ASSERT_EQ(r.generation_spans.size(), 2u);
  EXPECT_EQ(r.generation_spans[0], (std::pair<size_t, size_t>{1, 3}));
  EXPECT_EQ(r.generation_spans[1], (std::pair<size_t, size_t>{4, 4}));
}

TEST(Jinja, SyntaxErrorsNameLineAndColumn) {
  EXPECT_NE(error_of("line one\n{% if x %}\nnever closed").find("line 3"), std::string::npos);
  EXPECT_NE(error_of("{{ 'abc' }}\n  {{ (1 + }}").find("template syntax error at line 2, column 3"),
            std::string::npos);
  EXPECT_NE(error_of("{{ 'unterminated }}").find("unexpected end of string"), std::string::npos);
  EXPECT_NE(error_of("{{ x | nosuchfilter }}").find("no filter named 'nosuchfilter'"), std::string::npos);
  EXPECT_NE(error_of("{% if x is nosuch %}{% endif %}").find("no test named 'nosuch'"), std::string::npos);
  EXPECT_NE(error_of("{% for m in x %}{% endif %}").find("unknown tag 'endif'"), std::string::npos);
  EXPECT_NE(error_of("{% break %}").find("outside of a for loop"), std::string::npos);
  EXPECT_NE(error_of("{{ a b }}").find("expected '}}'"), std::string::npos);
}

TEST(Jinja, RuntimeErrorsAreTypeErrorsLikePython) {
  EXPECT_NE(error_of("{{ 1 < 'a' }}").find("not supported between"), std::string::npos);
  EXPECT_NE(error_of("{{ 'a' + 1 }}").find("can only concatenate str"), std::string::npos);
  EXPECT_NE(error_of("{{ 1 / 0 }}").find("division by zero"), std::string::npos);
  EXPECT_NE(error_of("\n{{ 1 in 'a' }}").find("template line 2"), std::string::npos);
}

TEST(Jinja, LimitsBoundHostileTemplates) {
  RenderLimits small;
  small.max_output_bytes = 1000;
  small.max_steps = 10000;
  small.max_call_depth = 8;
  EXPECT_NE(error_of("{% for i in range(1000) %}{{ 'xxxxxxxxxx' }}{% endfor %}", {}, small).find("exceeds 1000 bytes"),
            std::string::npos);
  EXPECT_NE(error_of("{% for i in range(100000) %}{% endfor %}", {}, small).find("steps"), std::string::npos);
  EXPECT_NE(error_of("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", {}, small).find("nested deeper"),
            std::string::npos);
  EXPECT_NE(error_of("{{ " + std::string(500, '(') + "1" + std::string(500, ')') + " }}").find("too deep"), std::string::npos);
  EXPECT_NE(error_of("{{ 'x' * 100000000000 }}").find("too large"), std::string::npos);
}

}  // namespace
}  // namespace ftune::jinja
