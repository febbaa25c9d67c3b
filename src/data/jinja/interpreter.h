// Jinja interpreter: renders a parsed template (parser.h) with a set of global variables, the
// way jinja2's ImmutableSandboxedEnvironment does for transformers' apply_chat_template:
//   * scoping as in jinja2: a {% for %} body is a new scope per iteration (a {% set %} inside it
//     does not leak out; namespace() attributes do), {% if %} is not, a macro sees the
//     template's top-level variables and its arguments;
//   * `loop` (index, index0, revindex, revindex0, first, last, length, previtem, nextitem,
//     cycle), {% break %}/{% continue %} (jinja2.ext.loopcontrols);
//   * {% generation %} renders its body and records the byte span it produced in the output
//     (transformers' AssistantTracker);
//   * filters, tests and str/dict/list methods of builtins.h; unknown filter or test names are
//     refused when the template is loaded, as jinja2 refuses them at compile time.
// Limits keep a hostile template bounded: output size, macro call depth, executed steps.
// Errors at render time are jinja::RenderError (an ftune::Error) with the template line.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "data/jinja/ast.h"
#include "data/jinja/parser.h"
#include "data/jinja/value.h"

namespace ftune::jinja {

struct RenderLimits {
  size_t max_output_bytes = size_t{64} << 20;
  int max_call_depth = 64;
  int64_t max_steps = 20'000'000;  // statements, loop iterations and expression nodes
};

struct RenderResult {
  std::string text;
  std::vector<std::pair<size_t, size_t>> generation_spans;  // [begin, end) byte offsets
};

// Throws ftune::Error (syntax error with line and column) for invalid templates, including
// unknown filter or test names.
std::shared_ptr<const ParsedTemplate> load_template(std::string_view source);

class Interpreter {
 public:
  Interpreter(const ParsedTemplate& tmpl, std::unordered_map<std::string, Value> globals,
              const RenderLimits& limits = {});
  RenderResult render();

  // For builtins: call a callable value, apply a filter or test by name.
  Value call(const Value& fn, CallArgs& args);
  Value filter(const std::string& name, const Value& input, CallArgs& args);
  bool test(const std::string& name, const Value& input, CallArgs& args);
  void count_step();

 private:
  enum class Flow { normal, break_, continue_ };
  using Scope = std::unordered_map<std::string, Value>;

  Flow exec(const Body& body);
  Flow exec(const Stmt& s);
  void exec_for(const Stmt& s, Flow& flow);
  void exec_set(const Stmt& s, Value v);
  Value define_macro(const Stmt& s);
  Value call_macro(const Stmt& s, CallArgs& args, const Value* caller);
  std::string capture(const Body& body);
  void write(const std::string& text);

  Value eval(const Expr& e);
  Value eval_binary(const Expr& e);
  Value eval_call_args(const Expr& e, CallArgs& args);
  Value lookup(const std::string& name) const;
  void assign(const std::string& name, Value v);
  [[noreturn]] void fail(int line, const std::string& what) const;

  const ParsedTemplate& tmpl_;
  std::unordered_map<std::string, Value> globals_;
  RenderLimits limits_;
  std::vector<Scope> scopes_;
  std::vector<size_t> frame_base_;  // first scope of each macro call (0 = template level)
  std::string* out_ = nullptr;
  int capture_depth_ = 0;
  int call_depth_ = 0;
  int64_t steps_ = 0;
  int line_ = 0;  // line of the statement being executed, for error messages
  std::vector<std::pair<size_t, size_t>> spans_;
};

}  // namespace ftune::jinja
