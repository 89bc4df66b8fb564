// Sandbox-name completion (cli/completion.cc) for a command tree whose `ps`
// has -q: bash runs the script and asks a stand-in msb for the names. The
// real tree is covered by docs_test.cc.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include <filesystem>
#include <string>

#include "cli/docs.h"
#include "common/child.h"
#include "common/io.h"

namespace msb::cli {
namespace {

// msb with ps -q and two commands whose first argument is a sandbox.
CLI::App* TreeWithQuietPs(CLI::App& app, bool quiet) {
  static std::string name, other;
  static bool q = false;
  auto* ps = app.add_subcommand("ps", "List sandboxes");
  if (quiet) ps->add_flag("-q,--quiet", q, "names only");
  app.add_subcommand("exec", "Run a command")->add_option("sandbox", name, "sandbox name")->required();
  app.add_subcommand("pull", "Fetch images")->add_option("reference", other, "image references");
  return &app;
}

class CompletionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/msb-completion-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    // Stands in for msb: `ps -q` prints two names.
    ASSERT_TRUE(WriteFileAtomic(dir_ + "/msb", "#!/bin/sh\n[ \"$1 $2\" = 'ps -q' ] && printf 'alpha\\nbeta\\n'\n").ok());
    ASSERT_EQ(::chmod((dir_ + "/msb").c_str(), 0755), 0);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  // COMPREPLY for `msb WORDS... CUR`, one per line; file names come from
  // dir_, which holds only msb and completion.bash.
  std::string Complete(const std::string& script, const std::string& words, const std::string& cur, int cword) {
    EXPECT_TRUE(WriteFileAtomic(dir_ + "/completion.bash", script).ok());
    auto r = RunCapture({"bash", "--norc", "-c",
                         "cd '" + dir_ + "' && source ./completion.bash; COMP_WORDS=('" + dir_ + "/msb' " + words + " '" +
                             cur + "'); COMP_CWORD=" + std::to_string(cword) +
                             "; _msb; printf '%s\\n' \"${COMPREPLY[@]}\""});
    EXPECT_TRUE(r.ok());
    return r.ok() ? r->output : "";
  }

  std::string dir_;
};

TEST_F(CompletionTest, SandboxArgumentsCompleteFromPsQuiet) {
  CLI::App app{"msb", "msb"};
  const CommandDoc root = DescribeCommands(*TreeWithQuietPs(app, true));
  ASSERT_TRUE(HasQuietPs(root));
  const std::string bash = BashCompletion(root);
  EXPECT_EQ(Complete(bash, "exec", "", 2), "alpha\nbeta\n");
  EXPECT_EQ(Complete(bash, "exec", "b", 2), "beta\n");
  // Only the first argument of a command that names a sandbox.
  EXPECT_EQ(Complete(bash, "pull", "al", 2), "\n");
  EXPECT_EQ(Complete(bash, "exec alpha", "al", 3), "\n");
  EXPECT_NE(ZshCompletion(root).find("':sandbox:_msb_sandboxes'"), std::string::npos);
}

TEST_F(CompletionTest, WithoutPsQuietNoNamesAreAskedFor) {
  CLI::App app{"msb", "msb"};
  const CommandDoc root = DescribeCommands(*TreeWithQuietPs(app, false));
  EXPECT_FALSE(HasQuietPs(root));
  const std::string bash = BashCompletion(root);
  EXPECT_EQ(bash.find("ps -q"), std::string::npos);
  EXPECT_EQ(Complete(bash, "exec", "al", 2), "\n");
  EXPECT_EQ(ZshCompletion(root).find("_msb_sandboxes"), std::string::npos);
}

}  // namespace
}  // namespace msb::cli
