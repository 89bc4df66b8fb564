// Stop of a sandbox whose supervisor holds its lock but answers nothing and
// whose record says pid 0 (it reported its end and has not exited yet): the
// stop must never signal a pid that is not that supervisor. A kill(0) would
// take the caller's whole process group with it (and, under ctest, the run).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <string>

#include "common/fd.h"
#include "orchestrator/launch.h"
#include "orchestrator/store.h"

namespace msb::orchestrator {
namespace {

TEST(StopTest, ASupervisorThatReportedItsEndNeverMakesStopSignalItsCallersGroup) {
  char tmpl[] = "/tmp/msb-stop-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string dir = tmpl;
  // A process holding the lock as a supervisor would, never answering.
  int ready[2];
  ASSERT_EQ(::pipe2(ready, O_CLOEXEC), 0);
  pid_t holder = ::fork();
  ASSERT_GE(holder, 0);
  if (holder == 0) {
    auto lock = TakeSupervisorLock(dir);
    (void)!::write(ready[1], lock.ok() ? "x" : "f", 1);
    if (!lock.ok()) ::_exit(1);
    ::pause();
    ::_exit(0);
  }
  char c;
  ASSERT_EQ(::read(ready[0], &c, 1), 1);
  ASSERT_EQ(c, 'x') << "the holder could not take the lock";
  ASSERT_TRUE(SupervisorRunning(dir));

  // Stop runs in a child that leads its own process group: were it to
  // signal its group, that child dies of it.
  pid_t stopper = ::fork();
  ASSERT_GE(stopper, 0);
  if (stopper == 0) {
    ::setpgid(0, 0);
    auto store = Store::Open(dir + "/state.db");
    if (!store.ok()) ::_exit(3);
    SandboxRecord r;
    r.project = "p";
    r.name = "box";
    r.sandbox_dir = dir;
    r.control_socket = dir + "/control.sock";  // nobody listens
    r.supervisor_pid = 0;
    r.status = SandboxStatus::kStopped;
    (void)Stop(*store, r, 100);
    ::_exit(0);
  }
  int st = 0;
  ASSERT_EQ(::waitpid(stopper, &st, 0), stopper);
  EXPECT_TRUE(WIFEXITED(st)) << "stop was killed by signal " << (WIFSIGNALED(st) ? WTERMSIG(st) : 0);
  if (WIFEXITED(st)) EXPECT_EQ(WEXITSTATUS(st), 0);
  ::kill(holder, SIGKILL);
  ::waitpid(holder, nullptr, 0);
  ::close(ready[0]);
  ::close(ready[1]);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace msb::orchestrator
