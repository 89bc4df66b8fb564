// ResolveSandboxRef: the current project first, then a unique name anywhere,
// PROJECT/NAME exactly, and an ambiguity that lists the commands to run.
#include "orchestrator/sandbox_ref.h"

#include <gtest/gtest.h>

namespace msb::orchestrator {
namespace {

SandboxRecord Rec(const std::string& project, const std::string& name) {
  SandboxRecord r;
  r.project = project;
  r.name = name;
  return r;
}

const std::vector<SandboxRecord> kAll = {Rec("_run", "tmp"), Rec("app", "db"), Rec("app", "web"),
                                         Rec("other", "web"), Rec("third", "web")};

std::string Found(const Result<SandboxRecord>& r) {
  if (!r.ok()) return "error: " + r.error().message();
  return r->project + "/" + r->name;
}

TEST(SandboxRefTest, CurrentProjectFirst) {
  EXPECT_EQ(Found(ResolveSandboxRef(kAll, "web", "other", "exec")), "other/web");
  EXPECT_EQ(Found(ResolveSandboxRef(kAll, "web", "app", "exec")), "app/web");
}

TEST(SandboxRefTest, UniqueNameAnywhereWhenNotInTheCurrentProject) {
  EXPECT_EQ(Found(ResolveSandboxRef(kAll, "db", "", "exec")), "app/db");
  EXPECT_EQ(Found(ResolveSandboxRef(kAll, "db", "other", "exec")), "app/db");
  EXPECT_EQ(Found(ResolveSandboxRef(kAll, "tmp", "app", "logs")), "_run/tmp");
}

TEST(SandboxRefTest, ProjectSlashNameIsExact) {
  EXPECT_EQ(Found(ResolveSandboxRef(kAll, "third/web", "app", "exec")), "third/web");
  auto missing = ResolveSandboxRef(kAll, "other/db", "app", "exec");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(missing.error().message(), "no sandbox named db in project other (see msb ps)");
  for (const char* bad : {"/web", "app/", "a/b/c"}) {
    auto r = ResolveSandboxRef(kAll, bad, "", "exec");
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument) << bad;
  }
}

TEST(SandboxRefTest, AmbiguousNameListsTheCommandForEachCandidate) {
  auto r = ResolveSandboxRef(kAll, "web", "elsewhere", "exec");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(r.error().message(),
            "sandbox name web is used in several projects, none of them elsewhere; name one:\n"
            "  msb exec app/web ...\n"
            "  msb exec other/web ...\n"
            "  msb exec third/web ...");
  auto no_current = ResolveSandboxRef(kAll, "web", "", "logs");
  ASSERT_FALSE(no_current.ok());
  EXPECT_EQ(no_current.error().message(),
            "sandbox name web is used in several projects; name one:\n"
            "  msb logs app/web ...\n"
            "  msb logs other/web ...\n"
            "  msb logs third/web ...");
}

TEST(SandboxRefTest, UnknownName) {
  auto r = ResolveSandboxRef(kAll, "nope", "app", "exec");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kNotFound);
  EXPECT_EQ(r.error().message(), "no sandbox named nope in project app or any other (see msb ps)");
}

// What `msb ps -q` prints: the plain name exactly when ResolveSandboxRef,
// with the same current project, comes back to this sandbox.
TEST(SandboxRefTest, ShortestRefIsTheNameOnlyWhenTheNameFindsThisSandbox) {
  auto shortest = [](const SandboxRecord& r, const std::string& current) {
    return ShortestSandboxRef(kAll, r, current);
  };
  // Unique anywhere: the name, whatever the current project.
  EXPECT_EQ(shortest(Rec("app", "db"), ""), "db");
  EXPECT_EQ(shortest(Rec("app", "db"), "other"), "db");
  EXPECT_EQ(shortest(Rec("_run", "tmp"), "app"), "tmp");
  // web is in three projects: the current one's is "web", the others qualified.
  EXPECT_EQ(shortest(Rec("app", "web"), "app"), "web");
  EXPECT_EQ(shortest(Rec("other", "web"), "app"), "other/web");
  EXPECT_EQ(shortest(Rec("third", "web"), "app"), "third/web");
  // No current project: an ambiguous name is always qualified.
  EXPECT_EQ(shortest(Rec("app", "web"), ""), "app/web");
  EXPECT_EQ(shortest(Rec("other", "web"), "elsewhere"), "other/web");
  // Each printed reference resolves back to its own sandbox.
  for (const std::string current : {"", "app", "other", "elsewhere"}) {
    for (const auto& r : kAll) {
      EXPECT_EQ(Found(ResolveSandboxRef(kAll, shortest(r, current), current, "rm")), r.project + "/" + r.name)
          << current;
    }
  }
}

}  // namespace
}  // namespace msb::orchestrator
