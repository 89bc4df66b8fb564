// Helpers for the schema tests: parse a Sandboxfile held in a string as
// /proj/Sandboxfile (messages name it "Sandboxfile") and look at the
// diagnostics as the text a user would see.
#pragma once

#include <gtest/gtest.h>

#include <optional>
#include <set>
#include <string>

#include "schema/sandboxfile.h"

namespace msb::schema::testing {

inline Env TestEnv() { return Env{{"HOME", "/home/u"}, {"TAG", "v1"}, {"EMPTY", ""}}; }

struct Parsed {
  std::optional<Project> project;
  std::string diagnostics;  // one per line, as printed by msb validate
  std::string error;        // the Error's message when parsing failed
};

// existing: host paths that exist (bind sources); nullopt: not checked.
inline Parsed ParseText(const std::string& yaml, const Env& env = TestEnv(),
                        std::optional<std::set<std::string>> existing = std::nullopt) {
  Diagnostics diags;
  ParseOptions options;
  options.display_name = "Sandboxfile";
  options.diagnostics = &diags;
  if (existing) {
    options.path_exists = [existing](const std::string& p) { return existing->count(p) > 0; };
  }
  auto r = ParseSandboxfile(yaml, "/proj/Sandboxfile", env, options);
  Parsed out;
  out.diagnostics = diags.ToString();
  if (r.ok()) out.project = std::move(r).value();
  else out.error = r.error().message();
  return out;
}

// The diagnostics of a file that must fail.
inline std::string Errors(const std::string& yaml, const Env& env = TestEnv()) {
  Parsed p = ParseText(yaml, env);
  EXPECT_FALSE(p.project.has_value()) << "expected errors, the file loaded:\n" << yaml;
  return p.diagnostics;
}

// A file that must load without errors (warnings allowed).
inline Project MustParse(const std::string& yaml, const Env& env = TestEnv()) {
  Parsed p = ParseText(yaml, env);
  EXPECT_TRUE(p.project.has_value()) << p.diagnostics << "in:\n" << yaml;
  return p.project ? *p.project : Project{};
}

// A one-sandbox file: "sandboxes:\n  web:\n    image: alpine\n" + body
// (body lines are indented by the caller with 4 spaces).
inline std::string Web(const std::string& body) {
  return "sandboxes:\n  web:\n    image: alpine\n" + body;
}

}  // namespace msb::schema::testing
