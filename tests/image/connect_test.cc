// image/connect.cc: the family interleaving of RFC 8305 §4 (pure), and the
// connect race over real loopback sockets: an address that never answers
// (a listener whose accept queue is full drops SYNs) loses to one that does
// without costing its timeout; a refused address starts the next attempt at
// once. Assertions are on the event sequence, not on elapsed time.
#include "image/connect.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

namespace msb::image::http {
namespace {

using Clock = std::chrono::steady_clock;

Address V4(const char* ip, uint16_t port) {
  Address a;
  auto* sin = reinterpret_cast<sockaddr_in*>(&a.ss);
  sin->sin_family = AF_INET;
  sin->sin_port = htons(port);
  inet_pton(AF_INET, ip, &sin->sin_addr);
  a.len = sizeof(sockaddr_in);
  return a;
}

Address V6(const char* ip, uint16_t port) {
  Address a;
  auto* sin6 = reinterpret_cast<sockaddr_in6*>(&a.ss);
  sin6->sin6_family = AF_INET6;
  sin6->sin6_port = htons(port);
  inet_pton(AF_INET6, ip, &sin6->sin6_addr);
  a.len = sizeof(sockaddr_in6);
  return a;
}

std::vector<std::string> Texts(const std::vector<Address>& v) {
  std::vector<std::string> out;
  for (const auto& a : v) out.push_back(a.Text());
  return out;
}

// A listener on addr (port 0: any); returns the fd and sets *port.
UniqueFd Listen(Address addr, int backlog, uint16_t* port) {
  UniqueFd fd(::socket(addr.family(), SOCK_STREAM | SOCK_CLOEXEC, 0));
  int one = 1;
  if (addr.family() == AF_INET6) setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr.ss), addr.len), 0) << std::strerror(errno);
  EXPECT_EQ(::listen(fd.get(), backlog), 0);
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&ss), &len);
  *port = ntohs(ss.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&ss)->sin_port
                                        : reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  return fd;
}

// A listener on [::1] that never completes another handshake: backlog 0 and
// one connection queued, so the kernel drops further SYNs.
struct BlackHole {
  UniqueFd listener;
  UniqueFd filler;
  uint16_t port = 0;
  BlackHole() {
    listener = Listen(V6("::1", 0), 0, &port);
    filler.Reset(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
    Address a = V6("::1", port);
    EXPECT_EQ(::connect(filler.get(), reinterpret_cast<sockaddr*>(&a.ss), a.len), 0) << std::strerror(errno);
  }
};

std::vector<std::string> Events(const std::vector<ConnectEvent>& ev) {
  std::vector<std::string> out;
  for (const auto& e : ev) out.push_back(std::string(ToString(e.kind)) + " " + e.address);
  return out;
}

TEST(OrderForRace, Ipv6FirstThenAlternatingEachFamilyInOrder) {
  std::vector<Address> in = {V4("192.0.2.1", 1), V4("192.0.2.2", 1), V6("2001:db8::1", 1), V6("2001:db8::2", 1),
                             V4("192.0.2.3", 1)};
  EXPECT_EQ(Texts(OrderForRace(in)), (std::vector<std::string>{"2001:db8::1", "192.0.2.1", "2001:db8::2",
                                                                "192.0.2.2", "192.0.2.3"}));
  EXPECT_EQ(Texts(OrderForRace({V4("192.0.2.1", 1), V4("192.0.2.2", 1)})),
            (std::vector<std::string>{"192.0.2.1", "192.0.2.2"}));
  EXPECT_TRUE(OrderForRace({}).empty());
}

TEST(RaceConnect, AnAddressThatNeverAnswersLosesToTheNextWithoutItsTimeout) {
  BlackHole hole;
  uint16_t good_port = 0;
  UniqueFd good = Listen(V4("127.0.0.1", 0), 16, &good_port);
  std::vector<ConnectEvent> events;
  // A deadline far beyond the attempt delay: waiting for the silent address
  // would fail this test with a timeout rather than pass it slowly.
  auto fd = RaceConnect({V6("::1", hole.port), V4("127.0.0.1", good_port)}, "dual.test:1",
                        Clock::now() + std::chrono::minutes(5),
                        [&](const ConnectEvent& e) { events.push_back(e); });
  ASSERT_TRUE(fd.ok()) << fd.error().message();
  EXPECT_EQ(Events(events), (std::vector<std::string>{"attempt ::1", "attempt 127.0.0.1", "connected 127.0.0.1",
                                                      "abandoned ::1"}));
  // The socket returned is the one the good listener accepts.
  sockaddr_in peer{};
  socklen_t len = sizeof peer;
  ASSERT_EQ(::getpeername(fd->get(), reinterpret_cast<sockaddr*>(&peer), &len), 0);
  EXPECT_EQ(ntohs(peer.sin_port), good_port);
  UniqueFd accepted(::accept4(good.get(), nullptr, nullptr, SOCK_CLOEXEC));
  EXPECT_TRUE(accepted.valid());
}

TEST(RaceConnect, ARefusedAddressStartsTheNextAttemptAtOnce) {
  uint16_t closed_port = 0;
  { UniqueFd tmp = Listen(V6("::1", 0), 1, &closed_port); }  // bound and closed: refuses
  uint16_t good_port = 0;
  UniqueFd good = Listen(V4("127.0.0.1", 0), 16, &good_port);
  std::vector<ConnectEvent> events;
  // With an attempt delay of an hour, only the failure can start the second attempt.
  auto fd = RaceConnect({V6("::1", closed_port), V4("127.0.0.1", good_port)}, "dual.test:1",
                        Clock::now() + std::chrono::minutes(5), [&](const ConnectEvent& e) { events.push_back(e); },
                        std::chrono::hours(1));
  ASSERT_TRUE(fd.ok()) << fd.error().message();
  EXPECT_EQ(Events(events), (std::vector<std::string>{"attempt ::1", "failed ::1", "attempt 127.0.0.1",
                                                      "connected 127.0.0.1"}));
}

TEST(RaceConnect, EveryAddressFailingGivesOneSentence) {
  uint16_t p6 = 0, p4 = 0;
  { UniqueFd a = Listen(V6("::1", 0), 1, &p6); }
  { UniqueFd b = Listen(V4("127.0.0.1", 0), 1, &p4); }
  auto fd = RaceConnect({V6("::1", p6), V4("127.0.0.1", p4)}, "dual.test:1", Clock::now() + std::chrono::minutes(1));
  ASSERT_FALSE(fd.ok());
  EXPECT_NE(fd.error().message().find("cannot connect to dual.test:1"), std::string::npos) << fd.error().message();
  EXPECT_NE(fd.error().message().find("is the registry running"), std::string::npos) << fd.error().message();
}

TEST(RaceConnect, NoAnswerWithinTheDeadlineIsATimeout) {
  BlackHole hole;
  std::vector<ConnectEvent> events;
  auto fd = RaceConnect({V6("::1", hole.port)}, "silent.test:1", Clock::now() + std::chrono::milliseconds(300),
                        [&](const ConnectEvent& e) { events.push_back(e); });
  ASSERT_FALSE(fd.ok());
  EXPECT_EQ(fd.error().code(), ErrorCode::kTimeout);
  EXPECT_EQ(Events(events), (std::vector<std::string>{"attempt ::1", "abandoned ::1"}));
}

TEST(Resolve, HostsFileFromCaresHostsGivesBothFamilies) {
  char tmpl[] = "/tmp/msb-hosts-XXXXXX";
  int fd = ::mkstemp(tmpl);
  ASSERT_GE(fd, 0);
  std::string text = "::1 dual.msb.test\n127.0.0.1 dual.msb.test\n";
  ASSERT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
  ::close(fd);
  ::setenv("CARES_HOSTS", tmpl, 1);
  auto addrs = Resolve("dual.msb.test", 443, Clock::now() + std::chrono::seconds(10));
  ::unsetenv("CARES_HOSTS");
  ::unlink(tmpl);
  ASSERT_TRUE(addrs.ok()) << addrs.error().message();
  auto texts = Texts(OrderForRace(*addrs));
  EXPECT_EQ(texts, (std::vector<std::string>{"::1", "127.0.0.1"}));
}

}  // namespace
}  // namespace msb::image::http
