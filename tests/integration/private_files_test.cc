// $MSB_HOME is private to the user who runs msb: a sandbox started by root,
// then probes run as a second local user (nobody, or a system user made for
// the test), each a forked child that drops to that uid before it acts:
//   - a $MSB_HOME opened up to 0755 is tightened to 0700 by the next msb,
//     which says so;
//   - every file class has its mode (stat): state.db and its WAL and shm,
//     base disk, upper disk, volume, logs, spec, locks, sockets, directories;
//   - the other user reads no state.db, log or disk, connects to neither the
//     control socket nor the group-network socket, cannot put a socket in the
//     project's group directory, and `msb exec` fails for it; the owner's
//     `msb exec` works (the positive control);
//   - with the directories and sockets opened up by hand, only the peer check
//     stands: the other user's connections are closed unanswered and the
//     supervisor logs the refusal, while root's get their answer.
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <poll.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <functional>

#include "agent/frame.h"
#include "common/child.h"
#include "common/fd.h"
#include "common/io.h"
#include "tests/integration/harness.h"
#include "vm/control.h"

namespace msb::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// What a probe child reports besides an errno (errno values are below 128).
constexpr int kOpened = 0;
constexpr int kClosedUnanswered = 200;  // connected; the server closed without a byte
constexpr int kAnswered = 201;          // connected; the server answered
constexpr int kNoAnswer = 202;          // connected; nothing within the receive timeout
constexpr int kCannotDrop = 203;

std::string Mode(mode_t m) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(m & 07777));
  return buf;
}

mode_t ModeOf(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) {
    ADD_FAILURE() << "missing: " << path;
    return 0;
  }
  return st.st_mode;
}

// Fills a sockaddr_un; path must fit.
sockaddr_un Address(const std::string& path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  EXPECT_LT(path.size(), sizeof a.sun_path);
  std::memcpy(a.sun_path, path.c_str(), std::min(path.size() + 1, sizeof a.sun_path));
  return a;
}

// In a child: drops root for uid and gid (no supplementary groups); 0 or the
// errno of the step that failed.
int BecomeUser(uid_t uid, gid_t gid) {
  if (::setgroups(0, nullptr) != 0 || ::setresgid(gid, gid, gid) != 0 || ::setresuid(uid, uid, uid) != 0) {
    return errno;
  }
  return 0;
}

// Opens path for reading: kOpened or the errno.
int ProbeOpen(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  ::close(fd);
  return kOpened;
}

// Connects to a unix socket, sends `request` and waits (up to 20 s) for the
// first byte back: kAnswered, kClosedUnanswered, kNoAnswer, or connect's errno.
int ProbeConnect(const sockaddr_un& addr, const std::string& request) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) {
    int e = errno;
    ::close(fd);
    return e;
  }
  timeval tv{20, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  (void)::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
  char c;
  ssize_t n = ::recv(fd, &c, 1, 0);
  int r = n == 1 ? kAnswered : n == 0 || errno == ECONNRESET ? kClosedUnanswered : kNoAnswer;
  ::close(fd);
  return r;
}

// In a child: binds a new unix socket at addr; kOpened or bind's errno.
int ProbeBind(const sockaddr_un& addr) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  int r = ::bind(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof addr) == 0 ? kOpened : errno;
  ::close(fd);
  return r;
}

class PrivateFilesTest : public ProjectTest {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root: the probes run as a second local user";
    ProjectTest::SetUp();
    if (IsSkipped()) return;
    passwd* pw = ::getpwnam("nobody");
    if (pw == nullptr) {
      auto made = RunCapture({"useradd", "-r", "-M", "-s", "/usr/sbin/nologin", "msbtest-other"});
      ASSERT_TRUE(made.ok() && made->status.code == 0) << (made.ok() ? made->output : made.error().message());
      pw = ::getpwnam("msbtest-other");
    }
    ASSERT_NE(pw, nullptr);
    ASSERT_NE(pw->pw_uid, 0u);
    other_uid_ = pw->pw_uid;
    other_gid_ = pw->pw_gid;
  }

  // Runs probe in a child that has become the other user; its result.
  int AsOther(const std::function<int()>& probe) {
    pid_t pid = ::fork();
    if (pid == 0) {
      if (BecomeUser(other_uid_, other_gid_) != 0) ::_exit(kCannotDrop);
      ::_exit(probe());
    }
    int status = 0;
    EXPECT_EQ(::waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }

  // msb ARGS as the other user with this test's environment; stdout and
  // stderr merged, within 60 s.
  MsbResult MsbAsOther(const std::vector<std::string>& args) {
    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
    UniqueFd rd(p[0]), wr(p[1]);
    SpawnOptions o = MsbSpawnOptions(args);
    o.stdout_fd = wr.get();
    o.stderr_fd = wr.get();
    o.cwd = "/";
    const uid_t uid = other_uid_;
    const gid_t gid = other_gid_;
    o.before_exec = [uid, gid]() -> int { return BecomeUser(uid, gid); };
    auto child = ChildProcess::Spawn(o);
    MsbResult res;
    EXPECT_TRUE(child.ok()) << (child.ok() ? "" : child.error().message());
    if (!child.ok()) return res;
    wr.Reset();
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) {
        ADD_FAILURE() << "msb as the other user did not finish within 60 s";
        child->Kill(SIGKILL);
        break;
      }
      pollfd pfd{rd.get(), POLLIN, 0};
      if (::poll(&pfd, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[4096];
      ssize_t n = ::read(rd.get(), buf, sizeof buf);
      if (n <= 0) break;
      res.out.append(buf, static_cast<size_t>(n));
    }
    res.code = child->Wait().ShellCode();
    return res;
  }

  uid_t other_uid_ = 0;
  gid_t other_gid_ = 0;
};

TEST_F(PrivateFilesTest, AnotherUserCannotReadConnectOrExec) {
  const std::string home = Home();
  // An MSB_HOME someone opened up: the next msb closes it and says so.
  ASSERT_EQ(::chmod(home.c_str(), 0755), 0);
  WriteSandboxfile(
      "name: priv\nsandboxes:\n  web:\n    image: " + Rootfs() +
      "\n    memory: 128M\n    envs:\n      - TOKEN=kept-in-state-db\n"
      "    command: [\"/bin/sh\", \"-c\", \"echo web started; " + std::string(kKeepAlive) + "\"]\n"
      "    volumes:\n      - data:/data\nvolumes:\n  data: { size: 16M }\n");
  auto up = InProject({"up"});
  ASSERT_EQ(up.code, 0) << up.err;
  EXPECT_THAT(up.err, HasSubstr(home + " was mode 0755, open to other users; it is now 0700"));
  EXPECT_EQ(WaitForLogs("web", "web started"), "web started\n");
  // Said once: the next command finds it private.
  auto ps = Msb({"ps"});
  EXPECT_THAT(ps.err, Not(HasSubstr("open to other users")));

  // The files, class by class.
  std::string sandbox;
  for (const auto& e : std::filesystem::directory_iterator(home + "/sandboxes")) sandbox = e.path();
  ASSERT_FALSE(sandbox.empty());
  std::string base;
  for (const auto& e : std::filesystem::directory_iterator(home + "/images/local")) {
    if (e.path().extension() == ".ext4") base = e.path();
  }
  ASSERT_FALSE(base.empty());
  const std::string volume = home + "/volumes/priv/data.ext4";
  const std::string group_dir = home + "/net/priv";
  const std::string group_sock = group_dir + "/web.sock";
  const std::string control = sandbox + "/control.sock";

  for (const std::string& dir : {home, home + "/sandboxes", sandbox, home + "/images", home + "/images/local",
                                 home + "/volumes", home + "/volumes/priv", home + "/net", group_dir,
                                 home + "/locks", home + "/initramfs"}) {
    mode_t m = ModeOf(dir);
    EXPECT_TRUE(S_ISDIR(m)) << dir;
    EXPECT_EQ(Mode(m), "0700") << dir;
  }
  // The database is open in the supervisor, so its WAL and shm files exist.
  for (const std::string& f : {home + "/state.db", home + "/state.db-wal", home + "/state.db-shm",
                               sandbox + "/spec.json", sandbox + "/workload.log", sandbox + "/supervisor.log",
                               sandbox + "/qemu.log", sandbox + "/supervisor.lock", home + "/locks/priv.lock"}) {
    mode_t m = ModeOf(f);
    EXPECT_TRUE(S_ISREG(m)) << f;
    EXPECT_EQ(Mode(m), "0600") << f;
  }
  // Disks and the console log: private to their owner (which the VM's jail
  // may make its own uid).
  for (const std::string& f : {sandbox + "/upper.ext4", volume, sandbox + "/console.log"}) {
    mode_t m = ModeOf(f);
    EXPECT_TRUE(S_ISREG(m)) << f;
    EXPECT_EQ(m & 077, 0u) << f << " is " << Mode(m);
  }
  // Read-only images (base disk, initramfs) may be readable, never writable,
  // by others: they sit in 0700 directories.
  EXPECT_EQ(ModeOf(base) & 0222, 0u) << base << " is " << Mode(ModeOf(base));
  size_t initramfs_files = 0;
  for (const auto& e : std::filesystem::directory_iterator(home + "/initramfs")) {
    EXPECT_EQ(ModeOf(e.path()) & 022, 0u) << e.path() << " is " << Mode(ModeOf(e.path()));
    ++initramfs_files;
  }
  EXPECT_GE(initramfs_files, 1u) << "the running sandbox booted an initramfs from " << home << "/initramfs";
  // Every socket: only its owner may connect.
  for (const std::string& s : {control, group_sock, sandbox + "/agent.sock", sandbox + "/qmp.sock",
                               sandbox + "/net.sock"}) {
    mode_t m = ModeOf(s);
    EXPECT_TRUE(S_ISSOCK(m)) << s;
    EXPECT_EQ(m & 077, 0u) << s << " is " << Mode(m);
  }
  EXPECT_EQ(Mode(ModeOf(control)), "0600");
  EXPECT_EQ(Mode(ModeOf(group_sock)), "0600");
  // Nothing under $MSB_HOME that another user could write.
  for (const auto& e : std::filesystem::recursive_directory_iterator(home)) {
    if (e.path().string().rfind(project_, 0) == 0) continue;  // the test's own project directory
    if (e.is_symlink()) continue;
    EXPECT_EQ(ModeOf(e.path()) & 022, 0u) << e.path() << " is " << Mode(ModeOf(e.path()));
  }

  // The other user, against the files as msb made them.
  for (const std::string& f : {home + "/state.db", sandbox + "/workload.log", sandbox + "/upper.ext4", base,
                               volume}) {
    EXPECT_EQ(AsOther([&] { return ProbeOpen(f); }), EACCES) << f;
    EXPECT_EQ(ProbeOpen(f), kOpened) << "the owner: " << f;
  }
  EXPECT_EQ(AsOther([&] { return ProbeOpen(home); }), EACCES);
  const sockaddr_un control_addr = Address(control), group_addr = Address(group_sock);
  const sockaddr_un intruder = Address(group_dir + "/intruder.sock");
  std::string status_request;
  agent::AppendFrame(status_request, 0, vm::AsFrameKind(vm::ControlKind::kStatus), "");
  const std::string group_request = "tcp 80 intruder\n";
  EXPECT_EQ(AsOther([&] { return ProbeConnect(control_addr, status_request); }), EACCES);
  EXPECT_EQ(AsOther([&] { return ProbeConnect(group_addr, group_request); }), EACCES);
  EXPECT_EQ(AsOther([&] { return ProbeBind(intruder); }), EACCES);
  EXPECT_NE(::access((group_dir + "/intruder.sock").c_str(), F_OK), 0);

  auto theirs = MsbAsOther({"exec", "web", "--", "echo", "reached"});
  EXPECT_NE(theirs.code, 0) << theirs.out;
  EXPECT_THAT(theirs.out, Not(HasSubstr("reached")));
  EXPECT_THAT(theirs.out, HasSubstr("Permission denied"));
  auto mine = Msb({"exec", "web", "--", "echo", "reached"});
  EXPECT_EQ(mine.code, 0) << mine.err;
  EXPECT_EQ(mine.out, "reached\n");

  // Directories opened to search only: the sockets' own mode still stops them.
  for (const std::string& dir : {home, home + "/sandboxes", sandbox, home + "/net", group_dir}) {
    ASSERT_EQ(::chmod(dir.c_str(), 0711), 0) << dir;
  }
  EXPECT_EQ(AsOther([&] { return ProbeConnect(control_addr, status_request); }), EACCES);
  EXPECT_EQ(AsOther([&] { return ProbeConnect(group_addr, group_request); }), EACCES);
  EXPECT_EQ(AsOther([&] { return ProbeOpen(home + "/state.db"); }), EACCES);

  // Sockets opened too: the peer check is what is left, and it holds.
  ASSERT_EQ(::chmod(control.c_str(), 0666), 0);
  ASSERT_EQ(::chmod(group_sock.c_str(), 0666), 0);
  EXPECT_EQ(AsOther([&] { return ProbeConnect(control_addr, status_request); }), kClosedUnanswered);
  EXPECT_EQ(AsOther([&] { return ProbeConnect(group_addr, group_request); }), kClosedUnanswered);
  // The same requests from the owner are answered: the probes can tell.
  EXPECT_EQ(ProbeConnect(control_addr, status_request), kAnswered);
  EXPECT_EQ(ProbeConnect(group_addr, group_request), kAnswered);
  // The refusals were logged before the connections were closed.
  auto log = ReadFile(sandbox + "/supervisor.log");
  ASSERT_TRUE(log.ok());
  const std::string uid = " uid " + std::to_string(other_uid_) + " (only root may connect)";
  EXPECT_THAT(*log, HasSubstr("refused a connection to " + control + " from pid "));
  EXPECT_THAT(*log, HasSubstr("refused a connection to " + group_sock + " from pid "));
  EXPECT_THAT(*log, HasSubstr(uid));

  // The owner's sandbox still works after all that.
  EXPECT_EQ(Msb({"exec", "web", "--", "echo", "still"}).out, "still\n");
  EXPECT_EQ(InProject({"down"}).code, 0);
  EXPECT_TRUE(WaitNoProcess(home, 20));
}

// A fresh MSB_HOME is made private by whatever msb command creates it.
TEST_F(PrivateFilesTest, AFreshHomeIsCreatedPrivate) {
  const std::string fresh = Home() + "/fresh/msb";
  env_["MSB_HOME"] = fresh;
  auto ls = Msb({"volume", "ls"});
  EXPECT_EQ(ls.code, 0) << ls.err;
  EXPECT_THAT(ls.err, Not(HasSubstr("open to other users")));
  EXPECT_EQ(Mode(ModeOf(fresh)), "0700");
  EXPECT_EQ(Mode(ModeOf(fresh + "/state.db")), "0600");
}

}  // namespace
}  // namespace msb::testing
