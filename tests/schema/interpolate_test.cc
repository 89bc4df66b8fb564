// Tests for $VAR and ${VAR} substitution and .env parsing (schema/interpolate.h).
#include "schema/interpolate.h"

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include "schema/sandboxfile.h"

namespace msb::schema {
namespace {

const Env kEnv = {{"A", "alpha"}, {"EMPTY", ""}, {"N", "3"}};

std::string Sub(std::string_view text) {
  auto r = Interpolate(text, kEnv, nullptr);
  EXPECT_TRUE(r.ok()) << text << ": " << (r.ok() ? "" : r.error().message());
  return r.ok() ? *r : "";
}

std::string Why(std::string_view text) {
  auto r = Interpolate(text, kEnv, nullptr);
  EXPECT_FALSE(r.ok()) << text;
  return r.ok() ? "" : r.error().message();
}

TEST(InterpolateTest, SubstitutesEveryForm) {
  EXPECT_EQ(Sub("x-${A}-y"), "x-alpha-y");
  EXPECT_EQ(Sub("${MISSING:-def}"), "def");
  EXPECT_EQ(Sub("${EMPTY:-def}"), "def");
  EXPECT_EQ(Sub("${EMPTY-def}"), "");
  EXPECT_EQ(Sub("${MISSING-def}"), "def");
  EXPECT_EQ(Sub("${A:-def}"), "alpha");
  EXPECT_EQ(Sub("${A:?must}"), "alpha");
  EXPECT_EQ(Sub("${A:+on}${MISSING:+on}${EMPTY:+on}${EMPTY+set}"), "onset");
  EXPECT_EQ(Sub("${MISSING:-${A}-${N}}"), "alpha-3");
  EXPECT_EQ(Sub("$$A costs 5$ and $${A}"), "$A costs 5$ and ${A}");
  EXPECT_EQ(Sub("no dollars"), "no dollars");
  EXPECT_EQ(Sub("trailing $"), "trailing $");
}

TEST(InterpolateTest, UnbracedNamesAreSubstitutedAsCompose) {
  EXPECT_EQ(Sub("echo $A"), "echo alpha");
  EXPECT_EQ(Sub("$A$N"), "alpha3");
  EXPECT_EQ(Sub("$A-x $A.y $A/z"), "alpha-x alpha.y alpha/z");  // the name ends at the first non-name character
  EXPECT_EQ(Sub("$AB"), "");                                   // the longest name: AB, unset
  EXPECT_EQ(Sub("$_A"), "");
  EXPECT_EQ(Sub("$$A $1 $ $- $"), "$A $1 $ $- $");            // not a name: kept as written
  std::vector<std::string> unset;
  auto r = Interpolate("a$NOPE-b", kEnv, &unset);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, "a-b");
  EXPECT_EQ(unset, (std::vector<std::string>{"NOPE"}));
}

TEST(InterpolateTest, UnsetBareVariablesAreReportedForAWarning) {
  std::vector<std::string> unset;
  auto r = Interpolate("a${NOPE}b${A}${ALSO_NOT}", kEnv, &unset);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, "abalpha");
  EXPECT_EQ(unset, (std::vector<std::string>{"NOPE", "ALSO_NOT"}));
}

TEST(InterpolateTest, RequiredVariablesFailWithTheirMessage) {
  EXPECT_EQ(Why("${MISSING:?set MISSING to the API host}"), "variable MISSING is not set: set MISSING to the API host");
  EXPECT_EQ(Why("${EMPTY:?needed}"), "variable EMPTY is empty: needed");
  EXPECT_EQ(Why("${MISSING?}"), "variable MISSING is not set");
  EXPECT_EQ(Sub("${EMPTY?fine when empty}"), "");
}

TEST(InterpolateTest, RefusesMalformedReferences) {
  EXPECT_EQ(Why("${A"), "unterminated ${ (write $$ for a literal $)");
  EXPECT_NE(Why("${1A}").find("invalid variable name"), std::string::npos);
  EXPECT_NE(Why("${}").find("invalid variable name"), std::string::npos);
  EXPECT_NE(Why("${A=x}").find("expected }, :-, -, :?, ?, :+ or +"), std::string::npos);
  EXPECT_NE(Why("${A:}").find("expected -, ? or + after ':'"), std::string::npos);
  std::string deep = "x";
  for (int i = 0; i < 12; ++i) deep = "${M:-" + deep + "}";
  EXPECT_NE(Why(deep).find("nested more than 8 deep"), std::string::npos);
}

// Text from pieces that stress the rule: names, braces, $ in every position.
rc::Gen<std::string> DollarText() {
  return rc::gen::map(rc::gen::container<std::vector<std::string>>(rc::gen::elementOf(std::vector<std::string>{
                          "$", "A", "N", "B", "_", "1", "{", "}", "-", ":", " ", "x", "$$", "${A}", "\\", "\""})),
                      [](const std::vector<std::string>& parts) {
                        std::string out;
                        for (const std::string& p : parts) out += p;
                        return out;
                      });
}

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) out += c == '$' ? std::string("$$") : std::string(1, c);
  return out;
}

RC_GTEST_PROP(InterpolateProperties, TextWithoutDollarIsUnchanged, ()) {
  std::string s = *rc::gen::container<std::string>(rc::gen::elementOf(std::string("ab {}:-?+_1\n")));
  auto r = Interpolate(s, kEnv, nullptr);
  RC_ASSERT(r.ok());
  RC_ASSERT(*r == s);
}

RC_GTEST_PROP(InterpolateProperties, DoublingEveryDollarGivesTheTextBack, ()) {
  std::string s = *DollarText();
  auto r = Interpolate(Escape(s), kEnv, nullptr);
  RC_ASSERT(r.ok());
  RC_ASSERT(*r == s);
}

RC_GTEST_PROP(InterpolateProperties, UnbracedIsBracedUpToTheFirstNonNameCharacter, ()) {
  std::string name = *rc::gen::elementOf(std::vector<std::string>{"A", "N", "EMPTY", "NOPE", "_", "A1", "a_b"});
  std::string after = *rc::gen::elementOf(std::vector<std::string>{"", " ", "-x", ".", "/y", "}", "$$", ":-d"});
  std::vector<std::string> unset_bare, unset_braced;
  auto bare = Interpolate("<$" + name + after + ">", kEnv, &unset_bare);
  auto braced = Interpolate("<${" + name + "}" + after + ">", kEnv, &unset_braced);
  RC_ASSERT(bare.ok() && braced.ok());
  RC_ASSERT(*bare == *braced);
  RC_ASSERT(unset_bare == unset_braced);
}

// In a Sandboxfile, scripts keep any text as written; every other value is substituted.
RC_GTEST_PROP(InterpolateProperties, ScriptsKeepAnyTextAsWritten, ()) {
  std::string s = "x" + *DollarText();
  std::string quoted;
  for (char c : s) quoted += c == '"' || c == '\\' ? std::string("\\") + c : std::string(1, c);
  std::string yaml = "sandboxes:\n  web:\n    image: alpine\n    scripts:\n      s: \"" + quoted + "\"\n"
                     "    envs:\n      E: \"" + Escape(quoted) + "\"\n";
  auto p = ParseSandboxfile(yaml, "/proj/Sandboxfile", kEnv);
  RC_ASSERT(p.ok());
  const Sandbox& sb = p->sandboxes.at("web");
  RC_ASSERT(sb.scripts.at("s") == (std::vector<std::string>{"/bin/sh", "-c", s}));
  RC_ASSERT(sb.envs.at("E") == s);
}

TEST(DotEnvTest, ParsesComposeStyleFiles) {
  Diagnostics diags;
  Env env = ParseDotEnv(
      "# comment\n"
      "\n"
      "A=1\n"
      "export B = two words # a comment\n"
      "C=\"quoted # not a comment\\n\"\n"
      "D='single $literal'\n"
      "E=\n",
      ".env", &diags);
  EXPECT_EQ(diags.ToString(), "");
  EXPECT_EQ(env, (Env{{"A", "1"}, {"B", "two words"}, {"C", "quoted # not a comment\n"},
                      {"D", "single $literal"}, {"E", ""}}));
}

TEST(DotEnvTest, ReportsBadLinesWithTheirNumber) {
  Diagnostics diags;
  Env env = ParseDotEnv("OK=1\nnot a pair\n1X=2\nQ=\"open\n", "/p/.env", &diags);
  EXPECT_EQ(diags.ToString(),
            "/p/.env:2:1: expected KEY=VALUE with KEY made of letters, digits and '_'\n"
            "/p/.env:3:1: expected KEY=VALUE with KEY made of letters, digits and '_'\n"
            "/p/.env:4:1: value of Q: unterminated or trailing text after quote \"\n");
  EXPECT_EQ(env, (Env{{"OK", "1"}}));
}

}  // namespace
}  // namespace msb::schema
