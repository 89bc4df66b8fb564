// The network stack with a real guest under TCG: busybox wget in the guest
// reaches an HTTP server this test runs on 127.0.0.1 through the gateway's
// forwarded port (allow-to-host-loopback), over IPv4 and IPv6; a port that is
// not forwarded is refused and its server sees no connection. One VM boot.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <random>
#include <thread>

#include "common/fd.h"
#include "common/sha256.h"
#include "tests/integration/harness.h"

namespace msb::testing {
namespace {

using ::testing::HasSubstr;

UniqueFd ListenLoopback(uint16_t* port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  EXPECT_EQ(::listen(fd.get(), 16), 0);
  socklen_t len = sizeof(a);
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return fd;
}

// A one-thread HTTP/1.0 server: answers each connection with `body`, counts
// connections, stops when asked or at its deadline.
class HttpServer {
 public:
  explicit HttpServer(std::string body) : body_(std::move(body)) {
    fd_ = ListenLoopback(&port_);
    thread_ = std::thread([this]() { Loop(); });
  }
  ~HttpServer() {
    stop_ = true;
    thread_.join();
  }
  uint16_t port() const { return port_; }
  int connections() const { return connections_; }

 private:
  void Loop() {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(170);
    while (!stop_ && std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd_.get(), POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      UniqueFd c(::accept4(fd_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!c) continue;
      ++connections_;
      std::string req;
      char buf[4096];
      while (req.find("\r\n\r\n") == std::string::npos) {
        pollfd q{c.get(), POLLIN, 0};
        if (::poll(&q, 1, 10000) <= 0) break;
        ssize_t n = ::recv(c.get(), buf, sizeof(buf), 0);
        if (n <= 0) break;
        req.append(buf, n);
      }
      std::string resp = "HTTP/1.0 200 OK\r\nContent-Length: " + std::to_string(body_.size()) +
                         "\r\n\r\n" + body_;
      size_t off = 0;
      while (off < resp.size()) {
        ssize_t n = ::send(c.get(), resp.data() + off, resp.size() - off, MSG_NOSIGNAL);
        if (n <= 0) break;
        off += n;
      }
    }
  }

  std::string body_;
  UniqueFd fd_;
  uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> connections_{0};
  std::thread thread_;
};

class NetTest : public MsbTest {};

TEST_F(NetTest, GuestReachesForwardedHostPortAndIsRefusedElsewhere) {
  std::mt19937 rng(std::random_device{}());
  std::string token = "msb-net-" + std::to_string(rng());
  // 256 KiB of a repeating pattern: enough segments for windows and ACK clocking.
  std::string big;
  while (big.size() < 256 * 1024) big += token + "\n";
  HttpServer small(token);
  HttpServer large(big);
  HttpServer denied("never");
  std::string p1 = std::to_string(small.port()), p2 = std::to_string(large.port()),
              p3 = std::to_string(denied.port());
  std::string script =
      "wget -q -O - http://10.0.2.2:" + p1 + "/; echo; echo rc4=$?;"
      "wget -q -O - http://[fd00:6d73:62::2]:" + p1 + "/; echo; echo rc6=$?;"
      "wget -q -O - http://10.0.2.2:" + p2 + "/ | sha256sum; "
      "wget -q -O - http://10.0.2.2:" + p3 + "/ 2>&1; echo rcdenied=$?;"
      "ping -c 1 -W 5 10.0.2.2 >/dev/null; echo rcping=$?;"
      "cat /etc/resolv.conf";
  auto r = Msb({"run", "--net-host-port", p1, "--net-host-port", p2, Rootfs(), "--", "sh", "-c", script});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr(token + "\nrc4=0")) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr(token + "\nrc6=0")) << r.out << r.err;
  // The large body's digest computed here: the guest must print the same.
  EXPECT_THAT(r.out, HasSubstr(Sha256Hex(big))) << r.out;
  EXPECT_THAT(r.out, HasSubstr("refused")) << r.out;
  EXPECT_THAT(r.out, HasSubstr("rcdenied=1")) << r.out;
  EXPECT_THAT(r.out, HasSubstr("rcping=0")) << r.out;
  EXPECT_THAT(r.out, HasSubstr("nameserver 10.0.2.2")) << r.out;
  EXPECT_EQ(small.connections(), 2);
  EXPECT_EQ(large.connections(), 1);
  EXPECT_EQ(denied.connections(), 0);
}

}  // namespace
}  // namespace msb::testing
