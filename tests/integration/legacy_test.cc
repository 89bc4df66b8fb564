// A microsandbox Sandboxfile, unchanged, through the real msb and one real
// microVM: no name:, memory in MiB, envs as a list, a shell, scripts holding
// shell text. `msb up` runs its start script; `msb exec --script` and
// NAME~SCRIPT run the others in the guest's shell (their $VARs are the
// guest's); `msb shell` opens the file's shell.
#include "tests/integration/harness.h"

namespace msb::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class LegacyTest : public ProjectTest {};

TEST_F(LegacyTest, MicrosandboxFileRunsUnchanged) {
  WriteSandboxfile(
      "meta:\n"
      "  description: written for microsandbox\n"
      "sandboxes:\n"
      "  app:\n"
      "    image: " + Rootfs() + "\n"
      "    memory: 128\n"
      "    shell: /bin/ash\n"
      "    envs:\n"
      "      - GREETING=hi\n"
      "    scripts:\n"
      "      start: echo \"start $0 $GREETING\"; mkfifo /dev/keep-alive; exec cat /dev/keep-alive\n"
      "      where: echo \"where $0 home=$HOME greeting=$GREETING args=$1,$2 pid=$(( $$ > 1 ))\"\n"
      "    scope: none\n");
  auto up = InProject({"up"});
  ASSERT_EQ(up.code, 0) << up.err;
  EXPECT_THAT(up.err, Not(HasSubstr("not set")));  // no host-side substitution in scripts
  // The start script is the workload, run by the file's shell.
  EXPECT_EQ(WaitForLogs("app", "start"), "start /bin/ash hi\n");

  // $0 is the script's name, the arguments after -- are $1...; $HOME, $GREETING
  // and $$ are the guest shell's.
  auto script = Msb({"exec", "app", "--script", "where", "--", "a", "b"});
  EXPECT_EQ(script.code, 0) << script.err;
  EXPECT_EQ(script.out, "where where home=/root greeting=hi args=a,b pid=1\n");
  auto tilde = Msb({"exec", "app~where", "--", "x"});
  EXPECT_EQ(tilde.code, 0) << tilde.err;
  EXPECT_EQ(tilde.out, "where where home=/root greeting=hi args=x, pid=1\n");

  auto missing = Msb({"exec", "app~nope"});
  EXPECT_NE(missing.code, 0);
  EXPECT_THAT(missing.err, HasSubstr("sandbox app has no script \"nope\" (its scripts: start, where"));
  auto twice = Msb({"exec", "app~where", "--script", "where"});
  EXPECT_NE(twice.code, 0);
  EXPECT_THAT(twice.err, HasSubstr("give the script once"));

  // msb shell opens /bin/ash, not /bin/sh.
  auto shell = Msb({"shell", "app"}, "echo \"shell $0\"\nexit\n");
  EXPECT_EQ(shell.code, 0) << shell.err;
  EXPECT_EQ(shell.out, "shell /bin/ash\n");

  auto down = InProject({"down"});
  EXPECT_EQ(down.code, 0) << down.err;
}

}  // namespace
}  // namespace msb::testing
