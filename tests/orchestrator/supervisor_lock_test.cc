// The supervisor lock (orchestrator/launch.h): taken by the launcher, passed
// to the supervisor through exec with no moment unheld, seen by probes that
// never hold it themselves, and refused to a second taker.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>
#include <thread>

#include "common/child.h"
#include "common/fd.h"
#include "orchestrator/launch.h"

namespace msb::orchestrator {
namespace {

class SupervisorLockTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/msb-lock-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_;
};

TEST_F(SupervisorLockTest, TheHolderIsSeenAndASecondTakerRefused) {
  EXPECT_FALSE(SupervisorRunning(dir_));  // no lock file yet
  auto lock = TakeSupervisorLock(dir_);
  ASSERT_TRUE(lock.ok()) << lock.error().message();
  EXPECT_GE(lock->get(), 3);
  EXPECT_TRUE(SupervisorRunning(dir_));
  auto second = TakeSupervisorLock(dir_);
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code(), ErrorCode::kAlreadyExists) << second.error().message();
  EXPECT_TRUE(HoldSupervisorLock(lock->get()).ok());  // the holder's own fd: already its
  lock->Reset();
  EXPECT_FALSE(SupervisorRunning(dir_));
  EXPECT_TRUE(TakeSupervisorLock(dir_).ok());
}

// What StartSupervisor does: take the lock, let the child inherit its fd
// through exec, drop the launcher's copy. The lock stays held with the
// child alone, and goes with it.
TEST_F(SupervisorLockTest, TheLockPassesThroughExecAndEndsWithTheChild) {
  auto lock = TakeSupervisorLock(dir_);
  ASSERT_TRUE(lock.ok()) << lock.error().message();
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd rd(p[0]), wr(p[1]);
  SpawnOptions so;
  so.argv = {"/bin/cat"};  // runs until the test closes its stdin
  so.stdin_fd = rd.get();
  const int lock_fd = lock->get();
  so.before_exec = [lock_fd]() -> int {
    int flags = ::fcntl(lock_fd, F_GETFD);
    return flags >= 0 && ::fcntl(lock_fd, F_SETFD, flags & ~FD_CLOEXEC) == 0 ? 0 : errno;
  };
  auto child = ChildProcess::Spawn(so);
  ASSERT_TRUE(child.ok()) << child.error().message();
  lock->Reset();
  rd.Reset();
  EXPECT_TRUE(SupervisorRunning(dir_)) << "the lock did not pass to the child";
  EXPECT_FALSE(TakeSupervisorLock(dir_).ok());
  wr.Reset();  // cat sees EOF and exits
  ExitStatus st = child->Wait();
  EXPECT_EQ(st.code, 0);
  EXPECT_FALSE(SupervisorRunning(dir_));
  EXPECT_TRUE(TakeSupervisorLock(dir_).ok());
}

// A supervisor started by an earlier msb holds a flock(2) on the file, not
// the OFD lock: still seen as running, or an upgrade would start a second
// supervisor on its disks.
TEST_F(SupervisorLockTest, ASupervisorOfAnEarlierMsbHoldingAFlockIsSeen) {
  UniqueFd old(::open(SupervisorLockPath(dir_).c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  ASSERT_TRUE(old.valid());
  ASSERT_EQ(::flock(old.get(), LOCK_EX | LOCK_NB), 0);
  EXPECT_TRUE(SupervisorRunning(dir_));
  old.Reset();
  EXPECT_FALSE(SupervisorRunning(dir_));
}

// Probes (every msb ps, every observe) only test for the lock: a launcher
// taking it at the same moment always gets it. A probe that held the lock
// even briefly (flock LOCK_SH, as it once did) would make some of these
// takes fail.
TEST_F(SupervisorLockTest, AProbeNeverKeepsALauncherFromTakingTheLock) {
  ASSERT_TRUE(TakeSupervisorLock(dir_).ok());  // the file exists from here on
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> probes{0};
  std::thread prober([&]() {
    while (!stop) {
      (void)SupervisorRunning(dir_);
      ++probes;
    }
  });
  int refused = 0;
  for (int i = 0; i < 20000; ++i) {
    auto lock = TakeSupervisorLock(dir_);
    if (!lock.ok()) ++refused;
  }
  stop = true;
  prober.join();
  EXPECT_EQ(refused, 0) << "of 20000 takes, while " << probes.load() << " probes ran";
  EXPECT_GT(probes.load(), 0u);
}

}  // namespace
}  // namespace msb::orchestrator
