// Tests for ${VAR} substitution and .env parsing (schema/interpolate.h).
#include "schema/interpolate.h"

#include <gtest/gtest.h>

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
  EXPECT_EQ(Why("echo $HOME"), "$HOME is not substituted: write ${HOME} for a variable, or $$ for a literal $");
  EXPECT_EQ(Why("${A"), "unterminated ${ (write $$ for a literal $)");
  EXPECT_NE(Why("${1A}").find("invalid variable name"), std::string::npos);
  EXPECT_NE(Why("${}").find("invalid variable name"), std::string::npos);
  EXPECT_NE(Why("${A=x}").find("expected }, :-, -, :?, ?, :+ or +"), std::string::npos);
  EXPECT_NE(Why("${A:}").find("expected -, ? or + after ':'"), std::string::npos);
  std::string deep = "x";
  for (int i = 0; i < 12; ++i) deep = "${M:-" + deep + "}";
  EXPECT_NE(Why(deep).find("nested more than 8 deep"), std::string::npos);
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
