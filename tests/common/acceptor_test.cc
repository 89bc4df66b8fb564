// Acceptor: connections reach the callback; with no descriptor left the
// listener pauses instead of spinning, and the waiting connection is taken
// once descriptors are free again.
#include "common/acceptor.h"

#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <vector>

#include "common/unix_socket.h"

namespace msb {
namespace {

TEST(AcceptorTest, PausesWhileOutOfDescriptorsAndAcceptsOnceTheyAreBack) {
  std::string dir = ::testing::TempDir() + "/acceptor." + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  auto listen = ListenUnix(dir + "/s", true, 8);
  ASSERT_TRUE(listen.ok());
  Dispatcher d;
  int accepted = 0;
  Acceptor acceptor(d, listen->get(), SOCK_NONBLOCK | SOCK_CLOEXEC, [&](UniqueFd fd) {
    EXPECT_TRUE(fd.valid());
    ++accepted;
    d.Exit();
  });
  auto client = ConnectUnix(dir + "/s", true);
  ASSERT_TRUE(client.ok());

  // Use up every descriptor under a lowered soft limit.
  rlimit saved{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &saved), 0);
  rlimit low = saved;
  low.rlim_cur = 64;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  std::vector<UniqueFd> hog;
  for (;;) {
    UniqueFd fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (!fd) break;
    hog.push_back(std::move(fd));
  }
  ASSERT_EQ(errno, EMFILE);

  // A quarter of a second of loop: a spinning listener would try thousands
  // of times; a paused one a handful.
  EventHandle stop = d.Timer([&]() { d.Exit(); });
  stop.Arm(std::chrono::milliseconds(250));
  d.Run();
  EXPECT_EQ(accepted, 0);
  EXPECT_GE(acceptor.starved(), 1u);
  EXPECT_LE(acceptor.starved(), 5u);

  // Descriptors back: the connection waiting in the backlog is taken.
  hog.clear();
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &saved), 0);
  stop.Arm(std::chrono::milliseconds(5000));
  d.Run();
  EXPECT_EQ(accepted, 1);
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace msb
