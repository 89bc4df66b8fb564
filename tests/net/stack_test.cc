// The stack driven with crafted guest frames, a fake policy and real host
// sockets on 127.0.0.1: gateway answers, TCP handshake and data both ways,
// window closing, FIN/RST, retransmission, deny → RST, UDP, DNS, inbound.
#include "net/stack.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/sockios.h>
#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <deque>
#include <thread>
#include <functional>
#include <string>

#include "net/tcp.h"

namespace msb::net {
namespace {

using std::chrono::milliseconds;

UniqueFd Listen(uint16_t* port, int type = SOCK_STREAM) {
  UniqueFd fd(socket(AF_INET, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  if (type == SOCK_STREAM) {
    EXPECT_EQ(listen(fd.get(), 16), 0);
  }
  socklen_t len = sizeof(a);
  getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len);
  *port = ntohs(a.sin_port);
  return fd;
}

struct Captured {
  std::vector<uint8_t> bytes;
  ParsedFrame f;
};

class StackTest : public ::testing::Test {
 protected:
  void SetUp() override { Start(); }
  void Start(StackConfig cfg = StackConfig{}) {
    cfg_ = cfg;
    stack_ = std::make_unique<Stack>(
        d_, cfg_,
        [this](std::span<const uint8_t> fr) {
          auto c = std::make_unique<Captured>();
          c->bytes.assign(fr.begin(), fr.end());
          auto parsed = ParseFrame(c->bytes);
          ASSERT_TRUE(parsed) << "the stack sent an unparsable frame";
          c->f = *parsed;
          frames_.push_back(std::move(c));
        },
        [this](const FlowKey& k) { return policy_(k); },
        [this](std::string_view q, DnsReply reply) {
          dns_queries_.emplace_back(q);
          reply("answer:" + std::string(q));
        });
  }

  // Runs the loop until pred holds or the deadline passes.
  bool RunUntil(const std::function<bool()>& pred, milliseconds deadline = milliseconds(5000)) {
    if (pred()) return true;
    bool ok = false;
    auto start = std::chrono::steady_clock::now();
    EventHandle tick;
    tick = d_.Timer([&]() {
      if (pred()) {
        ok = true;
        d_.Exit();
      } else if (std::chrono::steady_clock::now() - start > deadline) {
        d_.Exit();
      } else {
        tick.Arm(milliseconds(1));
      }
    });
    tick.Arm(milliseconds(0));
    d_.Run();
    return ok;
  }

  // Runs `n` iterations of the loop: each one polls every fd and runs the
  // callbacks of those ready, then the test's timer (libevent activates fd
  // events before expired timers). An fd that was ready before this call
  // has had its callback by the time it returns: the barrier for "the stack
  // saw X and did nothing", where waiting for nothing would prove little.
  void RunIterations(int n) {
    int ticks = 0;
    EXPECT_TRUE(RunUntil([&]() { return ++ticks > n; }));
  }

  void Inject(const std::vector<uint8_t>& frame) { stack_->OnFrame(frame); }

  void SendTcp(uint16_t sport, const IpAddress& dst, uint16_t dport, uint8_t flags, uint32_t seq,
               uint32_t ack, const std::string& data = "", uint16_t window = 65535,
               std::optional<uint8_t> wscale = std::nullopt) {
    TcpHeader h;
    h.sport = sport;
    h.dport = dport;
    h.seq = seq;
    h.ack = ack;
    h.flags = flags;
    h.window = window;
    if (flags & kTcpSyn) {
      h.options.mss = 1460;
      h.options.wscale = wscale;
    }
    std::vector<uint8_t> out;
    BuildTcp(out, L2L3{cfg_.guest_mac, cfg_.gateway_mac, cfg_.guest4, dst}, h,
             {reinterpret_cast<const uint8_t*>(data.data()), data.size()});
    Inject(out);
  }

  // The next captured TCP segment to guest port `port`, waiting for it.
  std::unique_ptr<Captured> NextTcp(uint16_t port, milliseconds deadline = milliseconds(5000)) {
    std::unique_ptr<Captured> got;
    RunUntil(
        [&]() {
          for (auto it = frames_.begin(); it != frames_.end(); ++it) {
            if ((*it)->f.tcp && (*it)->f.dport == port) {
              got = std::move(*it);
              frames_.erase(it);
              return true;
            }
          }
          return false;
        },
        deadline);
    return got;
  }

  // Guest-side handshake to dst:dport; returns the stack's ISN + 1.
  uint32_t Connect(uint16_t sport, const IpAddress& dst, uint16_t dport, uint32_t iss = 100,
                   uint16_t window = 65535) {
    SendTcp(sport, dst, dport, kTcpSyn, iss, 0, "", window);
    auto sa = NextTcp(sport);
    EXPECT_TRUE(sa);
    if (!sa) return 0;
    EXPECT_EQ(sa->f.tcp->flags, kTcpSyn | kTcpAck);
    EXPECT_EQ(sa->f.tcp->ack, iss + 1);
    uint32_t next = sa->f.tcp->seq + 1;
    SendTcp(sport, dst, dport, kTcpAck, iss + 1, next, "", window);
    return next;
  }

  UniqueFd Accept(int listen_fd) {
    UniqueFd conn;
    RunUntil([&]() {
      conn = UniqueFd(accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
      return conn.valid();
    });
    return conn;
  }

  std::string ReadAll(int fd, size_t want) {
    std::string got;
    RunUntil([&]() {
      char buf[65536];
      ssize_t n;
      while ((n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0) got.append(buf, n);
      return got.size() >= want;
    });
    return got;
  }

  Dispatcher d_;
  StackConfig cfg_;
  std::unique_ptr<Stack> stack_;
  std::deque<std::unique_ptr<Captured>> frames_;
  std::vector<std::string> dns_queries_;
  std::function<FlowVerdict(const FlowKey&)> policy_ = [](const FlowKey&) { return FlowVerdict{}; };
};

TEST_F(StackTest, AnswersArpForTheGatewayAndNotForTheGuest) {
  std::vector<uint8_t> req(kEthHeader + 28, 0);
  auto fill = [&](uint32_t tpa) {
    std::fill(req.begin(), req.begin() + 6, 0xff);
    std::copy(cfg_.guest_mac.begin(), cfg_.guest_mac.end(), req.begin() + 6);
    req[12] = 0x08, req[13] = 0x06;
    uint8_t* a = req.data() + kEthHeader;
    a[1] = 1, a[2] = 0x08, a[4] = 6, a[5] = 4, a[7] = 1;
    std::copy(cfg_.guest_mac.begin(), cfg_.guest_mac.end(), a + 8);
    std::copy(cfg_.guest4.bytes().begin(), cfg_.guest4.bytes().begin() + 4, a + 14);
    a[24] = tpa >> 24, a[25] = tpa >> 16, a[26] = tpa >> 8, a[27] = tpa;
  };
  fill(cfg_.gateway4.v4());
  Inject(req);
  ASSERT_EQ(frames_.size(), 1u);
  ASSERT_TRUE(frames_[0]->f.arp);
  EXPECT_EQ(frames_[0]->f.arp->op, 2);
  EXPECT_EQ(frames_[0]->f.arp->sha, cfg_.gateway_mac);
  EXPECT_EQ(frames_[0]->f.arp->spa, cfg_.gateway4.v4());
  frames_.clear();
  fill(cfg_.guest4.v4());  // duplicate address detection: must stay unanswered
  Inject(req);
  EXPECT_TRUE(frames_.empty());
}

TEST_F(StackTest, AnswersEchoAndNeighborSolicitationForTheGateway) {
  std::vector<uint8_t> out;
  std::vector<uint8_t> body = {0, 7, 0, 1, 'p', 'i', 'n', 'g'};
  BuildIcmp(out, L2L3{cfg_.guest_mac, cfg_.gateway_mac, cfg_.guest4, cfg_.gateway4}, kIcmpEchoRequest, 0, body);
  Inject(out);
  ASSERT_EQ(frames_.size(), 1u);
  EXPECT_EQ(frames_[0]->f.icmp_type, kIcmpEchoReply);
  EXPECT_EQ(std::vector<uint8_t>(frames_[0]->f.payload.begin(), frames_[0]->f.payload.end()), body);
  frames_.clear();

  uint8_t ns[4 + 16 + 8] = {};
  std::copy(cfg_.gateway6.bytes().begin(), cfg_.gateway6.bytes().end(), ns + 4);
  BuildIcmp(out, L2L3{cfg_.guest_mac, cfg_.gateway_mac, cfg_.guest6, *IpAddress::Parse("ff02::1:ff00:1")},
            kIcmp6NeighborSolicit, 0, ns);
  Inject(out);
  ASSERT_EQ(frames_.size(), 1u);
  EXPECT_EQ(frames_[0]->f.icmp_type, kIcmp6NeighborAdvert);
  EXPECT_EQ(frames_[0]->f.ip_dst, cfg_.guest6);
}

// Echo to an allowed destination goes out through an unprivileged ICMP
// socket. The host here forbids those (ping_group_range), so the test runs on
// a thread in a network namespace of its own that permits them, pinging its
// own loopback; a denied destination is dropped.
TEST_F(StackTest, EchoToAnAllowedDestinationIsRelayedThroughAnIcmpSocket) {
  bool in_namespace = false;
  bool got_reply = false;
  std::vector<uint8_t> reply_body;
  uint64_t dropped_before = 0, dropped_after = 0;
  size_t frames_after_deny = 0;
  std::vector<uint8_t> body = {0x12, 0x34, 0, 9, 'r', 'e', 'l', 'a', 'y'};
  std::thread t([&]() {
    if (unshare(CLONE_NEWNET) != 0) return;
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ifreq ifr{};
    std::strcpy(ifr.ifr_name, "lo");
    ifr.ifr_flags = IFF_UP | IFF_LOOPBACK | IFF_RUNNING;
    bool up = ioctl(s, SIOCSIFFLAGS, &ifr) == 0;
    close(s);
    int fd = open("/proc/sys/net/ipv4/ping_group_range", O_WRONLY | O_CLOEXEC);
    bool permitted = fd >= 0 && write(fd, "0 2147483647", 12) == 12;
    if (fd >= 0) close(fd);
    if (!up || !permitted) return;
    in_namespace = true;
    policy_ = [](const FlowKey& k) {
      bool allowed = k.proto == FlowProto::kIcmp && k.dst == IpAddress::V4(0x7f000001);
      return FlowVerdict{allowed ? FlowAction::kAllow : FlowAction::kDeny};
    };
    std::vector<uint8_t> out;
    BuildIcmp(out, L2L3{cfg_.guest_mac, cfg_.gateway_mac, cfg_.guest4, IpAddress::V4(0x7f000001)},
              kIcmpEchoRequest, 0, body);
    Inject(out);
    got_reply = RunUntil([&]() { return !frames_.empty(); });
    if (got_reply) {
      const ParsedFrame& f = frames_[0]->f;
      if (f.icmp_type == kIcmpEchoReply && f.ip_src == IpAddress::V4(0x7f000001) && f.ip_dst == cfg_.guest4) {
        reply_body.assign(f.payload.begin(), f.payload.end());
      }
    }
    frames_.clear();
    dropped_before = stack_->stats().frames_dropped;
    BuildIcmp(out, L2L3{cfg_.guest_mac, cfg_.gateway_mac, cfg_.guest4, IpAddress::V4(0x7f000002)},
              kIcmpEchoRequest, 0, body);
    Inject(out);
    dropped_after = stack_->stats().frames_dropped;
    frames_after_deny = frames_.size();
  });
  t.join();
  if (!in_namespace) GTEST_SKIP() << "needs root for a network namespace of its own";
  ASSERT_TRUE(got_reply);
  EXPECT_EQ(reply_body, body);  // the guest's echo id and sequence, the same data
  EXPECT_EQ(dropped_after, dropped_before + 1);
  EXPECT_EQ(frames_after_deny, 0u);
}

TEST_F(StackTest, DeniedSynGetsRstAndNoHostConnection) {
  uint16_t port;
  UniqueFd lfd = Listen(&port);
  FlowKey seen;
  policy_ = [&](const FlowKey& k) {
    seen = k;
    return FlowVerdict{FlowAction::kDeny};
  };
  SendTcp(40000, cfg_.gateway4, port, kTcpSyn, 1, 0);
  auto r = NextTcp(40000);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->f.tcp->flags, kTcpRst | kTcpAck);
  EXPECT_EQ(r->f.tcp->ack, 2u);
  EXPECT_EQ(stack_->stats().tcp_denied, 1u);
  EXPECT_EQ(seen.dport, port);
  EXPECT_EQ(seen.proto, FlowProto::kTcp);
  EXPECT_EQ(stack_->tcp_flows(), 0u);
  EXPECT_EQ(stack_->stats().host_sockets, 0u);  // none opened, so none connects later
  EXPECT_LT(accept4(lfd.get(), nullptr, nullptr, SOCK_NONBLOCK), 0);  // nobody connected
}

TEST_F(StackTest, ClosedHostPortGetsRst) {
  uint16_t port;
  { UniqueFd gone = Listen(&port); }
  policy_ = [](const FlowKey&) { return FlowVerdict{FlowAction::kAllowToHostLoopback}; };
  SendTcp(40001, cfg_.gateway4, port, kTcpSyn, 1, 0);
  auto r = NextTcp(40001);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->f.tcp->flags & kTcpRst);
  EXPECT_EQ(stack_->stats().tcp_refused, 1u);
}

TEST_F(StackTest, DataBothWaysAndCloseFromTheGuest) {
  uint16_t port;
  UniqueFd lfd = Listen(&port);
  policy_ = [](const FlowKey&) { return FlowVerdict{FlowAction::kAllowToHostLoopback}; };
  uint32_t snd = Connect(40002, cfg_.gateway4, port);
  UniqueFd conn = Accept(lfd.get());
  ASSERT_TRUE(conn);
  // guest → host
  SendTcp(40002, cfg_.gateway4, port, kTcpAck | kTcpPsh, 101, snd, "GET / HTTP/1.0\r\n\r\n");
  EXPECT_EQ(ReadAll(conn.get(), 18), "GET / HTTP/1.0\r\n\r\n");
  auto ack = NextTcp(40002);
  ASSERT_TRUE(ack);
  EXPECT_EQ(ack->f.tcp->ack, 101u + 18);
  // host → guest
  ASSERT_EQ(send(conn.get(), "HTTP/1.0 200 OK\r\n", 17, 0), 17);
  auto data = NextTcp(40002);
  ASSERT_TRUE(data);
  EXPECT_EQ(std::string(data->f.payload.begin(), data->f.payload.end()), "HTTP/1.0 200 OK\r\n");
  EXPECT_EQ(data->f.tcp->seq, snd);
  snd += 17;
  // guest FIN → host sees EOF; host closes → guest gets FIN.
  SendTcp(40002, cfg_.gateway4, port, kTcpAck | kTcpFin, 119, snd);
  char c;
  ASSERT_TRUE(RunUntil([&]() { return recv(conn.get(), &c, 1, MSG_DONTWAIT) == 0; }));
  conn.Reset();
  std::unique_ptr<Captured> fin;
  while ((fin = NextTcp(40002)) && !(fin->f.tcp->flags & kTcpFin)) {}
  ASSERT_TRUE(fin);
  EXPECT_EQ(fin->f.tcp->seq, snd);
  SendTcp(40002, cfg_.gateway4, port, kTcpAck, 120, snd + 1);
  EXPECT_TRUE(RunUntil([&]() { return stack_->tcp_flows() == 0; }));
}

// FlowVerdict::intercept: the stack's connecting socket goes to the
// interceptor, the SYN-ACK waits for the stream it hands back, and bytes
// then flow through that stream; the host socket is the interceptor's.
TEST_F(StackTest, InterceptedFlowWaitsForTheStreamAndFlowsThroughIt) {
  uint16_t port;
  UniqueFd lfd = Listen(&port);
  UniqueFd host;
  FlowVerdict::InterceptDone done;
  policy_ = [&](const FlowKey&) {
    FlowVerdict v{FlowAction::kAllowToHostLoopback};
    v.intercept = [&](UniqueFd h, FlowVerdict::InterceptDone d) {
      host = std::move(h);
      done = std::move(d);
    };
    return v;
  };
  SendTcp(40020, cfg_.gateway4, port, kTcpSyn, 100, 0);
  ASSERT_TRUE(RunUntil([&]() { return host.valid(); }));
  UniqueFd conn = Accept(lfd.get());
  ASSERT_TRUE(conn);  // the stack connected the host socket it handed over
  // No SYN-ACK while the interceptor holds the flow, though the host socket
  // is connected: it was writable before the listener could accept it, so
  // two more iterations run any callback its readiness would trigger.
  RunIterations(2);
  for (const auto& c : frames_) EXPECT_FALSE(c->f.tcp && c->f.dport == 40020);
  int sp[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sp), 0);
  UniqueFd mine(sp[0]);
  done(UniqueFd(sp[1]));
  auto sa = NextTcp(40020);
  ASSERT_TRUE(sa);
  EXPECT_EQ(sa->f.tcp->flags, kTcpSyn | kTcpAck);
  uint32_t snd = sa->f.tcp->seq + 1;
  SendTcp(40020, cfg_.gateway4, port, kTcpAck | kTcpPsh, 101, snd, "hello");
  EXPECT_EQ(ReadAll(mine.get(), 5), "hello");  // the stream, not the host socket
  // Nothing was sent on the host socket either: it has no byte queued, so
  // any it had sent would already be readable at the listener's end.
  int queued = -1;
  EXPECT_EQ(ioctl(host.get(), SIOCOUTQ, &queued), 0);
  EXPECT_EQ(queued, 0);
  char c;
  EXPECT_LT(recv(conn.get(), &c, 1, MSG_DONTWAIT), 0);
  ASSERT_EQ(send(mine.get(), "back", 4, 0), 4);
  std::unique_ptr<Captured> data;
  while ((data = NextTcp(40020)) && data->f.payload.empty()) {}
  ASSERT_TRUE(data);
  EXPECT_EQ(std::string(data->f.payload.begin(), data->f.payload.end()), "back");
  EXPECT_EQ(stack_->stats().tcp_opened, 1u);
}

TEST_F(StackTest, InterceptorRefusingGetsRstAndALateCompletionIsHarmless) {
  uint16_t port;
  UniqueFd lfd = Listen(&port);
  std::vector<FlowVerdict::InterceptDone> dones;
  policy_ = [&](const FlowKey&) {
    FlowVerdict v{FlowAction::kAllowToHostLoopback};
    v.intercept = [&](UniqueFd, FlowVerdict::InterceptDone d) { dones.push_back(std::move(d)); };
    return v;
  };
  SendTcp(40021, cfg_.gateway4, port, kTcpSyn, 1, 0);
  ASSERT_TRUE(RunUntil([&]() { return dones.size() == 1; }));
  dones[0](UniqueFd());
  auto r = NextTcp(40021);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->f.tcp->flags & kTcpRst);
  EXPECT_EQ(stack_->stats().tcp_refused, 1u);
  EXPECT_EQ(stack_->tcp_flows(), 0u);
  // A completion after the flow is gone closes what it is given.
  int sp[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sp), 0);
  UniqueFd mine(sp[0]);
  dones[0](UniqueFd(sp[1]));
  char c;
  EXPECT_EQ(recv(mine.get(), &c, 1, MSG_DONTWAIT), 0);  // EOF: the stack closed it
  EXPECT_EQ(stack_->tcp_flows(), 0u);
}

TEST_F(StackTest, HostClosingBeforeTheHandshakeCompletesStillSendsFin) {
  uint16_t port;
  UniqueFd lfd = Listen(&port);
  policy_ = [](const FlowKey&) { return FlowVerdict{FlowAction::kAllowToHostLoopback}; };
  SendTcp(40008, cfg_.gateway4, port, kTcpSyn, 100, 0);
  auto sa = NextTcp(40008);
  ASSERT_TRUE(sa);
  UniqueFd conn = Accept(lfd.get());
  ASSERT_TRUE(conn);
  // The host ends its side before the guest's ACK arrives. Once its FIN is
  // acknowledged (FIN_WAIT2), the stack's socket holds the EOF; two
  // iterations later the stack has read it, and must still be silent.
  ASSERT_EQ(shutdown(conn.get(), SHUT_WR), 0);
  ASSERT_TRUE(RunUntil([&]() {
    tcp_info info{};
    socklen_t len = sizeof(info);
    return getsockopt(conn.get(), IPPROTO_TCP, TCP_INFO, &info, &len) == 0 && info.tcpi_state == TCP_FIN_WAIT2;
  }));
  conn.Reset();
  RunIterations(2);
  for (const auto& c : frames_) {
    EXPECT_FALSE(c->f.tcp && c->f.dport == 40008) << "a segment before the handshake completed";
  }
  uint32_t snd = sa->f.tcp->seq + 1;
  SendTcp(40008, cfg_.gateway4, port, kTcpAck, 101, snd);
  auto fin = NextTcp(40008);
  ASSERT_TRUE(fin);
  EXPECT_TRUE(fin->f.tcp->flags & kTcpFin);
  EXPECT_EQ(fin->f.tcp->seq, snd);
  SendTcp(40008, cfg_.gateway4, port, kTcpAck | kTcpFin, 101, snd + 1);
  EXPECT_TRUE(RunUntil([&]() { return stack_->tcp_flows() == 0; }));
}

TEST_F(StackTest, HostResetReachesTheGuest) {
  uint16_t port;
  UniqueFd lfd = Listen(&port);
  policy_ = [](const FlowKey&) { return FlowVerdict{FlowAction::kAllowToHostLoopback}; };
  uint32_t snd = Connect(40003, cfg_.gateway4, port);
  UniqueFd conn = Accept(lfd.get());
  ASSERT_TRUE(conn);
  linger l{1, 0};
  setsockopt(conn.get(), SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  conn.Reset();
  auto r = NextTcp(40003);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->f.tcp->flags & kTcpRst);
  EXPECT_EQ(r->f.tcp->seq, snd);
  EXPECT_TRUE(RunUntil([&]() { return stack_->tcp_flows() == 0; }));
}

TEST_F(StackTest, GuestResetClosesTheHostSocket) {
  uint16_t port;
  UniqueFd lfd = Listen(&port);
  policy_ = [](const FlowKey&) { return FlowVerdict{FlowAction::kAllowToHostLoopback}; };
  uint32_t snd = Connect(40004, cfg_.gateway4, port);
  UniqueFd conn = Accept(lfd.get());
  SendTcp(40004, cfg_.gateway4, port, kTcpRst, 101, snd);
  char c;
  ssize_t n = 0;
  ASSERT_TRUE(RunUntil([&]() {
    n = recv(conn.get(), &c, 1, MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno == ECONNRESET);
  }));
  EXPECT_EQ(stack_->tcp_flows(), 0u);
}

TEST_F(StackTest, ClosedGuestWindowStopsDataAndLostSegmentIsRetransmitted) {
  uint16_t port;
  UniqueFd lfd = Listen(&port);
  policy_ = [](const FlowKey&) { return FlowVerdict{FlowAction::kAllowToHostLoopback}; };
  uint32_t snd = Connect(40005, cfg_.gateway4, port, 100, 3000);
  UniqueFd conn = Accept(lfd.get());
  std::string big(20000, 'q');
  ASSERT_EQ(send(conn.get(), big.data(), big.size(), 0), static_cast<ssize_t>(big.size()));
  // Only 3000 bytes (the guest's window) may arrive.
  size_t got = 0;
  uint32_t first_seq = 0;
  RunUntil([&]() {
    for (auto& c : frames_)
      if (c->f.tcp && !c->f.payload.empty()) {
        if (got == 0) first_seq = c->f.tcp->seq;
        got += c->f.payload.size();
      }
    frames_.clear();
    return got >= 3000;
  });
  EXPECT_EQ(got, 3000u);
  EXPECT_EQ(first_seq, snd);
  // Every byte the host sent is in the stack's socket once the host has no
  // unacknowledged byte left; two iterations later the stack has read what
  // it will. Nothing beyond the guest's window may have gone out, only
  // retransmissions (the RTO may have fired meanwhile) of what is in it.
  ASSERT_TRUE(RunUntil([&]() {
    int unacked = -1;
    return ioctl(conn.get(), SIOCOUTQ, &unacked) == 0 && unacked == 0;
  }));
  RunIterations(2);
  for (const auto& c : frames_) {
    if (!c->f.tcp || c->f.payload.empty()) continue;
    uint32_t from = c->f.tcp->seq - snd;
    EXPECT_LE(from + c->f.payload.size(), 3000u) << "data beyond the guest's window, at offset " << from;
  }
  // The guest "lost" everything: no ACK. The RTO resends from snd_una.
  auto re = NextTcp(40005, milliseconds(3000));
  ASSERT_TRUE(re);
  EXPECT_EQ(re->f.tcp->seq, snd);
  EXPECT_FALSE(re->f.payload.empty());
  // Ack all and open the window: the rest flows.
  SendTcp(40005, cfg_.gateway4, port, kTcpAck, 101, snd + 3000, "", 65535);
  size_t rest = 0;
  RunUntil([&]() {
    for (auto& c : frames_)
      if (c->f.tcp) rest += c->f.payload.size();
    frames_.clear();
    return rest >= 17000;
  });
  EXPECT_GE(rest, 17000u);
}

TEST_F(StackTest, SlowHostPeerShrinksTheWindowAdvertisedToTheGuest) {
  StackConfig cfg;
  cfg.tcp_buffer = 64 * 1024;
  stack_.reset();
  Start(cfg);
  uint16_t port;
  UniqueFd lfd = Listen(&port);
  policy_ = [](const FlowKey&) { return FlowVerdict{FlowAction::kAllowToHostLoopback}; };
  uint32_t snd = Connect(40006, cfg_.gateway4, port);
  UniqueFd conn = Accept(lfd.get());
  // The guest pushes until the stack stops taking data; the host never reads.
  uint32_t seq = 101;
  std::string chunk(1400, 'g');
  uint16_t window = 65535;
  for (int i = 0; i < 5000 && window > 0; ++i) {
    SendTcp(40006, cfg_.gateway4, port, kTcpAck, seq, snd, chunk);
    auto a = NextTcp(40006);
    ASSERT_TRUE(a);
    seq = a->f.tcp->ack;
    window = a->f.tcp->window;
  }
  EXPECT_EQ(window, 0) << "the window never closed";
  // The host reads everything: the window reopens with an update.
  std::string got = ReadAll(conn.get(), seq - 101);
  EXPECT_EQ(got.size(), seq - 101);
  auto upd = NextTcp(40006);
  ASSERT_TRUE(upd);
  EXPECT_GT(upd->f.tcp->window, 0);
}

TEST_F(StackTest, UdpFlowsAndDns) {
  uint16_t port;
  UniqueFd server = Listen(&port, SOCK_DGRAM);
  policy_ = [](const FlowKey&) { return FlowVerdict{FlowAction::kAllowToHostLoopback}; };
  std::vector<uint8_t> out;
  std::string msg = "ping";
  BuildUdp(out, L2L3{cfg_.guest_mac, cfg_.gateway_mac, cfg_.guest4, cfg_.gateway4}, 5555, port,
           {reinterpret_cast<const uint8_t*>(msg.data()), msg.size()});
  Inject(out);
  sockaddr_in from{};
  socklen_t len = sizeof(from);
  char buf[100];
  ssize_t n = -1;
  ASSERT_TRUE(RunUntil([&]() {
    n = recvfrom(server.get(), buf, sizeof(buf), MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from), &len);
    return n >= 0;
  }));
  EXPECT_EQ(std::string(buf, n), "ping");
  sendto(server.get(), "pong", 4, 0, reinterpret_cast<sockaddr*>(&from), len);
  ASSERT_TRUE(RunUntil([&]() { return !frames_.empty(); }));
  EXPECT_EQ(frames_[0]->f.dport, 5555);
  EXPECT_EQ(frames_[0]->f.sport, port);
  EXPECT_EQ(std::string(frames_[0]->f.payload.begin(), frames_[0]->f.payload.end()), "pong");
  EXPECT_EQ(stack_->udp_flows(), 1u);
  frames_.clear();

  std::string q = "query";
  BuildUdp(out, L2L3{cfg_.guest_mac, cfg_.gateway_mac, cfg_.guest4, cfg_.gateway4}, 5556, 53,
           {reinterpret_cast<const uint8_t*>(q.data()), q.size()});
  Inject(out);
  ASSERT_EQ(frames_.size(), 1u);
  EXPECT_EQ(frames_[0]->f.sport, 53);
  EXPECT_EQ(std::string(frames_[0]->f.payload.begin(), frames_[0]->f.payload.end()), "answer:query");
}

TEST_F(StackTest, UdpFlowExpiresWhenIdle) {
  StackConfig cfg;
  cfg.udp_idle = milliseconds(50);
  stack_.reset();
  Start(cfg);
  uint16_t port;
  UniqueFd server = Listen(&port, SOCK_DGRAM);
  policy_ = [](const FlowKey&) { return FlowVerdict{FlowAction::kAllowToHostLoopback}; };
  std::vector<uint8_t> out;
  BuildUdp(out, L2L3{cfg_.guest_mac, cfg_.gateway_mac, cfg_.guest4, cfg_.gateway4}, 5557, port, {});
  Inject(out);
  EXPECT_EQ(stack_->udp_flows(), 1u);
  EXPECT_TRUE(RunUntil([&]() { return stack_->udp_flows() == 0; }));
}

TEST_F(StackTest, DnsOverTcp) {
  uint32_t snd = Connect(40007, cfg_.gateway4, 53);
  std::string q = std::string("\0\x03", 2) + "abc";
  SendTcp(40007, cfg_.gateway4, 53, kTcpAck | kTcpPsh, 101, snd, q);
  std::string got;
  RunUntil([&]() {
    for (auto& c : frames_) got.append(c->f.payload.begin(), c->f.payload.end());
    frames_.clear();
    return got.size() >= 12;
  });
  EXPECT_EQ(got, std::string("\0\x0a", 2) + "answer:abc");
}

TEST_F(StackTest, ZeroWindowDnsFlowsStopAtTheMemoryBudgetAndLeaveIt) {
  // Room for a few flows: each is charged kFlowCost plus its rings.
  MemoryBudget budget(64 * 1024);
  StackConfig cfg;
  cfg.budget = &budget;
  Start(cfg);
  std::string q = std::string("\0\x03", 2) + "abc";
  int accepted = 0, refused = 0;
  for (uint16_t port = 41000; port < 41100; ++port) {
    SendTcp(port, cfg_.gateway4, 53, kTcpSyn, 100, 0, "", 0);
    auto answer = NextTcp(port);
    ASSERT_TRUE(answer);
    if (answer->f.tcp->flags & kTcpRst) {
      ++refused;
      continue;
    }
    ++accepted;
    // The guest's window stays closed: the answer waits in the send ring.
    SendTcp(port, cfg_.gateway4, 53, kTcpAck | kTcpPsh, 101, answer->f.tcp->seq + 1, q, 0);
    RunUntil([&]() { return dns_queries_.size() == static_cast<size_t>(accepted); });
  }
  EXPECT_GT(accepted, 0);
  EXPECT_GT(refused, 0);
  EXPECT_EQ(stack_->tcp_flows(), static_cast<size_t>(accepted));
  EXPECT_EQ(stack_->stats().tcp_refused, static_cast<uint64_t>(refused));
  // Soft by at most one flow's growth.
  EXPECT_LE(budget.peak(), budget.limit() + 16 * 1024);
  // A new UDP flow is refused too, while the budget is spent.
  policy_ = [](const FlowKey&) { return FlowVerdict{FlowAction::kAllow}; };
  std::vector<uint8_t> out;
  BuildUdp(out, L2L3{cfg_.guest_mac, cfg_.gateway_mac, cfg_.guest4, IpAddress::V4(127, 0, 0, 1)}, 41200, 9,
           std::span<const uint8_t>(reinterpret_cast<const uint8_t*>("x"), 1));
  Inject(out);
  EXPECT_EQ(stack_->udp_flows(), 0u);
  // Every byte charged is given back with the stack.
  stack_.reset();
  EXPECT_EQ(budget.used(), 0u);
}

TEST_F(StackTest, FlowsHoldAtMostMaxFlowFdsHostSockets) {
  StackConfig cfg;
  cfg.max_flow_fds = 3;
  Start(cfg);
  policy_ = [](const FlowKey&) { return FlowVerdict{FlowAction::kAllow}; };
  for (uint16_t port = 42000; port < 42010; ++port) {
    std::vector<uint8_t> out;
    BuildUdp(out, L2L3{cfg_.guest_mac, cfg_.gateway_mac, cfg_.guest4, IpAddress::V4(127, 0, 0, 1)}, port, 9,
             std::span<const uint8_t>(reinterpret_cast<const uint8_t*>("x"), 1));
    Inject(out);
  }
  EXPECT_EQ(stack_->udp_flows(), 3u);
  EXPECT_EQ(stack_->stats().udp_dropped, 7u);
}

TEST_F(StackTest, InboundConnectionIsSplicedToTheGuest) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  UniqueFd outside(sv[0]);
  ASSERT_TRUE(stack_->OpenInbound(UniqueFd(sv[1]), 8080).ok());
  auto syn = NextTcp(8080);
  ASSERT_TRUE(syn);
  EXPECT_EQ(syn->f.tcp->flags, kTcpSyn);
  EXPECT_EQ(syn->f.ip_src, cfg_.gateway4);
  uint16_t gw_port = syn->f.sport;
  uint32_t snd = syn->f.tcp->seq + 1;
  // The guest answers SYN-ACK from port 8080.
  auto send_from_guest = [&](uint8_t flags, uint32_t seq, uint32_t ack, const std::string& data) {
    TcpHeader h;
    h.sport = 8080;
    h.dport = gw_port;
    h.seq = seq;
    h.ack = ack;
    h.flags = flags;
    h.window = 65535;
    std::vector<uint8_t> out;
    BuildTcp(out, L2L3{cfg_.guest_mac, cfg_.gateway_mac, cfg_.guest4, cfg_.gateway4}, h,
             {reinterpret_cast<const uint8_t*>(data.data()), data.size()});
    Inject(out);
  };
  send_from_guest(kTcpSyn | kTcpAck, 700, snd, "");
  auto ack = NextTcp(8080);
  ASSERT_TRUE(ack);
  EXPECT_EQ(ack->f.tcp->ack, 701u);
  ASSERT_EQ(send(outside.get(), "hello guest", 11, 0), 11);
  auto data = NextTcp(8080);
  ASSERT_TRUE(data);
  EXPECT_EQ(std::string(data->f.payload.begin(), data->f.payload.end()), "hello guest");
  send_from_guest(kTcpAck | kTcpPsh, 701, snd + 11, "hello host");
  EXPECT_EQ(ReadAll(outside.get(), 10), "hello host");
  EXPECT_EQ(stack_->stats().tcp_inbound, 1u);
}

TEST_F(StackTest, InboundRefusedByTheGuestClosesTheHostSide) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  UniqueFd outside(sv[0]);
  ASSERT_TRUE(stack_->OpenInbound(UniqueFd(sv[1]), 8081).ok());
  auto syn = NextTcp(8081);
  ASSERT_TRUE(syn);
  TcpHeader h;
  h.sport = 8081;
  h.dport = syn->f.sport;
  h.ack = syn->f.tcp->seq + 1;
  h.flags = kTcpRst | kTcpAck;
  std::vector<uint8_t> out;
  BuildTcp(out, L2L3{cfg_.guest_mac, cfg_.gateway_mac, cfg_.guest4, cfg_.gateway4}, h, {});
  Inject(out);
  char c;
  EXPECT_TRUE(RunUntil([&]() {
    ssize_t n = recv(outside.get(), &c, 1, MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN);
  }));
  EXPECT_EQ(stack_->tcp_flows(), 0u);
}

TEST_F(StackTest, UdpInboundForwardsAndRepliesToTheSender) {
  uint16_t pub;
  UniqueFd published = Listen(&pub, SOCK_DGRAM);
  ASSERT_TRUE(stack_->AddUdpInbound(std::move(published), 9999).ok());
  uint16_t cport;
  UniqueFd client = Listen(&cport, SOCK_DGRAM);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  to.sin_port = htons(pub);
  sendto(client.get(), "in", 2, 0, reinterpret_cast<sockaddr*>(&to), sizeof(to));
  ASSERT_TRUE(RunUntil([&]() { return !frames_.empty(); }));
  const ParsedFrame& f = frames_[0]->f;
  EXPECT_EQ(f.dport, 9999);
  EXPECT_EQ(f.ip_src, cfg_.gateway4);
  std::vector<uint8_t> out;
  std::string reply = "out";
  BuildUdp(out, L2L3{cfg_.guest_mac, cfg_.gateway_mac, cfg_.guest4, cfg_.gateway4}, 9999, f.sport,
           {reinterpret_cast<const uint8_t*>(reply.data()), reply.size()});
  Inject(out);
  char buf[16];
  ssize_t n = -1;
  ASSERT_TRUE(RunUntil([&]() { return (n = recv(client.get(), buf, sizeof(buf), MSG_DONTWAIT)) >= 0; }));
  EXPECT_EQ(std::string(buf, n), "out");
}

// A verdict allowing a flow to an embedded IPv6 form of the gateway (a
// policy that judged the canonical address) never opens a host socket: the
// stack recognises the gateway in every form.
TEST_F(StackTest, EmbeddedFormsOfTheGatewayNeverReachTheHost) {
  int asked = 0;
  policy_ = [&](const FlowKey&) {
    ++asked;
    return FlowVerdict{FlowAction::kAllow};
  };
  uint32_t gw = cfg_.gateway4.v4();
  std::array<uint8_t, 16> nat64{0x00, 0x64, 0xff, 0x9b};
  std::array<uint8_t, 16> mapped{};
  mapped[10] = mapped[11] = 0xff;
  for (auto* b : {&nat64, &mapped}) {
    for (int i = 0; i < 4; ++i) (*b)[12 + i] = static_cast<uint8_t>(gw >> (24 - 8 * i));
  }
  uint16_t sport = 41000;
  for (const auto& bytes : {nat64, mapped}) {
    IpAddress form = IpAddress::V6(bytes);
    ASSERT_EQ(Canonicalize(form), cfg_.gateway4);
    for (uint16_t dport : {uint16_t{53}, uint16_t{80}}) {
      TcpHeader h;
      h.sport = sport;
      h.dport = dport;
      h.seq = 1;
      h.flags = kTcpSyn;
      h.window = 65535;
      std::vector<uint8_t> out;
      BuildTcp(out, L2L3{cfg_.guest_mac, cfg_.gateway_mac, cfg_.guest6, form}, h, {});
      Inject(out);
      auto r = NextTcp(sport);
      ASSERT_TRUE(r) << form.ToString() << " port " << dport;
      EXPECT_EQ(r->f.tcp->flags, kTcpRst | kTcpAck);
      std::string payload = "x";
      BuildUdp(out, L2L3{cfg_.guest_mac, cfg_.gateway_mac, cfg_.guest6, form}, sport, dport,
               {reinterpret_cast<const uint8_t*>(payload.data()), payload.size()});
      Inject(out);
      ++sport;
    }
  }
  EXPECT_EQ(asked, 8);
  EXPECT_EQ(stack_->stats().tcp_denied, 4u);
  EXPECT_EQ(stack_->stats().udp_denied, 4u);
  EXPECT_EQ(stack_->stats().host_sockets, 0u);
  EXPECT_EQ(stack_->stats().dns_queries, 0u);
  EXPECT_EQ(stack_->tcp_flows(), 0u);
  EXPECT_EQ(stack_->udp_flows(), 0u);
}

// A published UDP port asks admit once per new sender; a refused sender's
// datagrams never reach the guest.
TEST_F(StackTest, UdpInboundAsksAdmitForEachNewSender) {
  uint16_t pub;
  UniqueFd published = Listen(&pub, SOCK_DGRAM);
  bool admit = false;
  std::vector<IpAddress> judged;
  ASSERT_TRUE(stack_
                  ->AddUdpInbound(std::move(published), 9999,
                                  [&](const IpAddress& source) {
                                    judged.push_back(source);
                                    return admit;
                                  })
                  .ok());
  uint16_t cport;
  UniqueFd client = Listen(&cport, SOCK_DGRAM);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  to.sin_port = htons(pub);
  sendto(client.get(), "no", 2, 0, reinterpret_cast<sockaddr*>(&to), sizeof(to));
  ASSERT_TRUE(RunUntil([&]() { return stack_->stats().udp_denied == 1; }));
  EXPECT_TRUE(frames_.empty());
  ASSERT_EQ(judged.size(), 1u);
  EXPECT_EQ(judged[0], IpAddress::V4(127, 0, 0, 1));
  admit = true;
  sendto(client.get(), "yes", 3, 0, reinterpret_cast<sockaddr*>(&to), sizeof(to));
  ASSERT_TRUE(RunUntil([&]() { return !frames_.empty(); }));
  EXPECT_EQ(std::string(frames_[0]->f.payload.begin(), frames_[0]->f.payload.end()), "yes");
  EXPECT_EQ(frames_[0]->f.dport, 9999);
  // The admitted sender is not asked again.
  sendto(client.get(), "again", 5, 0, reinterpret_cast<sockaddr*>(&to), sizeof(to));
  ASSERT_TRUE(RunUntil([&]() { return frames_.size() == 2; }));
  EXPECT_EQ(judged.size(), 2u);
  EXPECT_EQ(stack_->stats().udp_denied, 1u);
}

TEST_F(StackTest, SpoofedSourceAndGarbageAreDropped) {
  std::vector<uint8_t> out;
  BuildUdp(out, L2L3{cfg_.guest_mac, cfg_.gateway_mac, IpAddress::V4(0x0a0002ff), cfg_.gateway4}, 1, 53, {});
  Inject(out);
  Inject({1, 2, 3});
  EXPECT_TRUE(frames_.empty());
  EXPECT_EQ(stack_->stats().frames_dropped, 2u);
  EXPECT_TRUE(dns_queries_.empty());
}

}  // namespace
}  // namespace msb::net
