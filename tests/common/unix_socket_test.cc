// The unix socket helpers: ListenUnix's mode and the peer check that the
// control and group-network sockets apply to every connection. The
// other-user cases fork a child that drops to uid/gid 65534 (nobody) before
// it connects, so SO_PEERCRED carries a uid that is neither ours nor root.
#include "common/unix_socket.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>

#include "common/fd.h"
#include "common/log.h"

namespace msb {
namespace {

constexpr uid_t kOtherUid = 65534;
constexpr gid_t kOtherGid = 65534;

// What the child reports as its exit code.
enum ChildResult : int {
  kConnectedThenClosed = 0,  // connected; the server closed without a byte
  kRefusedByMode = 10,       // connect failed with EACCES
  kCannotDrop = 11,
  kOtherFailure = 12,
  kGotBytes = 13,
};

// In a forked child: becomes kOtherUid/kOtherGid with no supplementary groups,
// or exits kCannotDrop.
void BecomeOtherUser() {
  if (::setgroups(0, nullptr) != 0 || ::setresgid(kOtherGid, kOtherGid, kOtherGid) != 0 ||
      ::setresuid(kOtherUid, kOtherUid, kOtherUid) != 0) {
    ::_exit(kCannotDrop);
  }
}

// Forks a child that becomes kOtherUid and connects to path, then reads until
// the server closes. Returns its pid. System calls only after fork.
pid_t ConnectAsOtherUser(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  pid_t pid = ::fork();
  if (pid != 0) return pid;
  BecomeOtherUser();
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) ::_exit(kOtherFailure);
  timeval tv{20, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::_exit(errno == EACCES ? kRefusedByMode : kOtherFailure);
  }
  char c;
  ssize_t n = ::read(fd, &c, 1);
  ::_exit(n == 0 ? kConnectedThenClosed : kGotBytes);
}

int WaitExit(pid_t pid) {
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

// Accepts one connection within 10 s; invalid when none came.
UniqueFd AcceptWithin(int listen_fd) {
  pollfd p{listen_fd, POLLIN, 0};
  if (::poll(&p, 1, 10000) != 1) return UniqueFd();
  return UniqueFd(::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC));
}

// Log lines written while it lives, read from a pipe.
class CapturedLog {
 public:
  CapturedLog() {
    int p[2];
    EXPECT_EQ(::pipe2(p, O_CLOEXEC | O_NONBLOCK), 0);
    rd_ = UniqueFd(p[0]);
    wr_ = UniqueFd(p[1]);
    SetLogFd(wr_.get());
  }
  ~CapturedLog() { SetLogFd(2); }
  std::string Text() {
    std::string text;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(rd_.get(), buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
    return text;
  }

 private:
  UniqueFd rd_, wr_;
};

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

class UnixSocketTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/msb-sock-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/control.sock";
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string dir_, path_;
};

TEST(SendWithFdTest, TheDescriptorArrivesWithTheFirstByteAndTheRestFollows) {
  int sp[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp), 0);
  UniqueFd a(sp[0]), b(sp[1]);
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd r(p[0]), w(p[1]);
  EXPECT_FALSE(SendWithFd(a.get(), "", w.get()).ok());
  ASSERT_TRUE(SendWithFd(a.get(), "hello", w.get()).ok());
  char buf[16] = {};
  iovec iov{buf, sizeof buf};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n = ::recvmsg(b.get(), &msg, MSG_CMSG_CLOEXEC);
  ASSERT_EQ(n, 5);
  EXPECT_EQ(std::string(buf, 5), "hello");
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  ASSERT_NE(c, nullptr);
  ASSERT_EQ(c->cmsg_type, SCM_RIGHTS);
  int got = -1;
  std::memcpy(&got, CMSG_DATA(c), sizeof got);
  UniqueFd passed(got);
  // The copy writes into the same pipe.
  ASSERT_EQ(::write(passed.get(), "z", 1), 1);
  char z = 0;
  ASSERT_EQ(::read(r.get(), &z, 1), 1);
  EXPECT_EQ(z, 'z');
}

TEST(PeerAllowedTest, OwnerAndRootOnly) {
  EXPECT_TRUE(PeerAllowed(PeerCredentials{1, 1000, 1000}, 1000));
  EXPECT_TRUE(PeerAllowed(PeerCredentials{1, 0, 0}, 1000));
  EXPECT_TRUE(PeerAllowed(PeerCredentials{1, 0, 0}, 0));
  EXPECT_FALSE(PeerAllowed(PeerCredentials{1, 1001, 1000}, 1000));
  EXPECT_FALSE(PeerAllowed(PeerCredentials{1, 65534, 0}, 0));
  // The gid does not make a peer the owner.
  EXPECT_FALSE(PeerAllowed(PeerCredentials{1, 1001, 0}, 1000));
}

TEST_F(UnixSocketTest, ListensWithModeOwnerOnlyAndAdmitsTheOwner) {
  auto listen = ListenUnix(path_, false, 4);
  ASSERT_TRUE(listen.ok()) << listen.error().message();
  struct stat st;
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0600u);

  auto client = ConnectUnix(path_);
  ASSERT_TRUE(client.ok()) << client.error().message();
  UniqueFd server = AcceptWithin(listen->get());
  ASSERT_TRUE(server.valid());
  auto cred = PeerCredentialsOf(server.get());
  ASSERT_TRUE(cred.ok()) << cred.error().message();
  EXPECT_EQ(cred->pid, ::getpid());
  EXPECT_EQ(cred->uid, ::geteuid());
  EXPECT_EQ(cred->gid, ::getegid());
  CapturedLog log;
  EXPECT_TRUE(AdmitPeer(server.get(), path_));
  EXPECT_EQ(log.Text(), "");
}

TEST_F(UnixSocketTest, AnotherUserIsStoppedByTheModeAndThenByThePeerCheck) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a child as another user";
  // Let the other user reach the socket file: only its own mode stands in the way.
  ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);
  auto listen = ListenUnix(path_, false, 64);
  ASSERT_TRUE(listen.ok()) << listen.error().message();

  EXPECT_EQ(WaitExit(ConnectAsOtherUser(path_)), kRefusedByMode);

  // With the mode opened up, the connection is made and the peer check refuses it.
  ASSERT_EQ(::chmod(path_.c_str(), 0666), 0);
  CapturedLog log;
  pid_t child = ConnectAsOtherUser(path_);
  UniqueFd server = AcceptWithin(listen->get());
  ASSERT_TRUE(server.valid()) << "the other user's connection did not arrive";
  auto cred = PeerCredentialsOf(server.get());
  ASSERT_TRUE(cred.ok()) << cred.error().message();
  EXPECT_EQ(cred->uid, kOtherUid);
  EXPECT_EQ(cred->pid, child);
  EXPECT_FALSE(AdmitPeer(server.get(), path_));
  server.Reset();  // as the callers do: close without a byte
  EXPECT_EQ(WaitExit(child), kConnectedThenClosed);
  std::string text = log.Text();
  EXPECT_NE(text.find("refused a connection to " + path_ + " from pid " + std::to_string(child) +
                      " uid 65534 (only root may connect)"),
            std::string::npos)
      << text;

  // A user knocking in a loop costs a bounded number of log lines.
  for (int i = 0; i < 30; ++i) {
    pid_t again = ConnectAsOtherUser(path_);
    UniqueFd s = AcceptWithin(listen->get());
    ASSERT_TRUE(s.valid());
    EXPECT_FALSE(AdmitPeer(s.get(), path_));
    s.Reset();
    ASSERT_EQ(WaitExit(again), kConnectedThenClosed);
  }
  text += log.Text();
  size_t lines = Count(text, "refused a connection to " + path_);
  EXPECT_GE(lines, 1u);
  EXPECT_LE(lines, 10u) << text;

  // Root is let in whoever owns the socket (here: root itself).
  auto client = ConnectUnix(path_);
  ASSERT_TRUE(client.ok());
  UniqueFd mine = AcceptWithin(listen->get());
  ASSERT_TRUE(mine.valid());
  EXPECT_TRUE(AdmitPeer(mine.get(), path_));
}

// The credentials are the connecting process's at connect time: a socket
// pair made by a process running as another user carries that user.
TEST(PeerCredentialsTest, SocketPairMadeByAnotherUserCarriesItsUid) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs root to run a child as another user";
  int carrier[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, carrier), 0);
  UniqueFd ours(carrier[0]), theirs(carrier[1]);
  pid_t pid = ::fork();
  if (pid == 0) {
    BecomeOtherUser();
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) ::_exit(kOtherFailure);
    // Hand one end to the parent (SCM_RIGHTS), keep the other until it closes.
    if (!SendWithFd(carrier[1], "x", pair[0]).ok()) ::_exit(kOtherFailure);
    ::close(pair[0]);  // the parent holds that end now; EOF comes when it closes it
    timeval tv{20, 0};
    ::setsockopt(pair[1], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char got;
    ssize_t n = ::read(pair[1], &got, 1);
    ::_exit(n == 0 ? kConnectedThenClosed : kGotBytes);
  }
  theirs.Reset();
  char byte;
  iovec iov{&byte, 1};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ASSERT_EQ(::recvmsg(ours.get(), &msg, MSG_CMSG_CLOEXEC), 1);
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  ASSERT_NE(c, nullptr);
  ASSERT_EQ(c->cmsg_type, SCM_RIGHTS);
  int raw;
  std::memcpy(&raw, CMSG_DATA(c), sizeof(int));
  UniqueFd end(raw);
  auto cred = PeerCredentialsOf(end.get());
  ASSERT_TRUE(cred.ok()) << cred.error().message();
  EXPECT_EQ(cred->uid, kOtherUid);
  EXPECT_EQ(cred->gid, kOtherGid);
  EXPECT_FALSE(AdmitPeer(end.get(), "a test socket pair"));
  end.Reset();
  EXPECT_EQ(WaitExit(pid), kConnectedThenClosed);
}

TEST(PeerCredentialsTest, NotASocketIsAnErrorAndRefused) {
  UniqueFd fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd.valid());
  EXPECT_FALSE(PeerCredentialsOf(fd.get()).ok());
  CapturedLog log;
  EXPECT_FALSE(AdmitPeer(fd.get(), "/dev/null"));
  EXPECT_NE(log.Text().find("refused a connection to /dev/null: SO_PEERCRED"), std::string::npos);
}

}  // namespace
}  // namespace msb
