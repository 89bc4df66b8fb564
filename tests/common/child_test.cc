#include "common/child.h"

#include <gtest/gtest.h>
#include <signal.h>

namespace msb {
namespace {

TEST(ChildTest, CapturesOutputAndExitCode) {
  auto r = RunCapture({"/bin/sh", "-c", "echo hi; echo err >&2; exit 3"});
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->output, "hi\nerr\n");
  EXPECT_EQ(r->status.code, 3);
  EXPECT_EQ(r->status.ShellCode(), 3);
}

TEST(ChildTest, MissingProgramIsAnErrorNotAChild) {
  auto r = RunCapture({"/nonexistent/prog"});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("cannot run /nonexistent/prog"), std::string::npos);
}

TEST(ChildTest, DestructorKillsAndReaps) {
  SpawnOptions o;
  o.argv = {"/bin/sleep", "100"};
  pid_t pid;
  {
    auto c = ChildProcess::Spawn(o);
    ASSERT_TRUE(c.ok());
    pid = c->pid();
    EXPECT_EQ(kill(pid, 0), 0);
  }
  // Reaped: the pid no longer names our child.
  EXPECT_EQ(kill(pid, 0), -1);
}

TEST(ChildTest, SignalIsReportedAsShellCode) {
  SpawnOptions o;
  o.argv = {"/bin/sleep", "100"};
  auto c = ChildProcess::Spawn(o);
  ASSERT_TRUE(c.ok());
  c->Kill(SIGTERM);
  ExitStatus st = c->Wait();
  EXPECT_EQ(st.signal, SIGTERM);
  EXPECT_EQ(st.ShellCode(), 128 + SIGTERM);
}

}  // namespace
}  // namespace msb
