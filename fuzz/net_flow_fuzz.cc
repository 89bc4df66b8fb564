// libFuzzer target for the network stack with flow state kept across inputs:
// one net::Stack lives for kResetEvery inputs (or until it holds more than
// kMaxFlows flows, or the harness more than kMaxPeers host sockets), so TCP
// connections opened by one input are driven by the next, and after every
// frame the Dispatcher runs for a few non-blocking turns, so host sockets,
// deferred deletions and timers (short ones: kUdpIdle, kTcpConnectTimeout,
// kTcpIdle) happen between frames. net_frame_fuzz.cc is the stateless twin.
//
// Input: records of [control u8][length u16 BE][Ethernet frame from the
// guest]. Control bits: 0x01 sets the TCP segment's ack to the sequence
// number the stack sent up to on that flow, 0x02 its seq to what the stack
// acknowledged last (both learnt from the frames it sends the guest, since
// its initial sequence numbers are random); bits 4-6: dispatcher turns after
// the frame. net/stream.h's 4-byte framing is not used: the control byte is
// what lets a fuzzer finish a handshake.
//
// The policy allows flows without touching the host's network:
//  - TCP to port 7 (echo) and 9 (discard; the host side closes on 'Q', shuts
//    its write side on 'F') are handed a socket pair whose other end the
//    harness holds (FlowVerdict::connect); port 8 gets an invalid stream.
//  - TCP to port 443 is allowed to host loopback with an interceptor that
//    swaps the host socket for a socket pair, at once or on the next turn,
//    or refuses it (by source port).
//  - In a network namespace of its own (made at start-up; only lo, up):
//    TCP to 127.0.0.1:80 reaches a listener of the harness that echoes, UDP
//    to 127.0.0.1:7 an echoing socket, and every other flow is allowed to its
//    destination, which is unreachable there. Without the namespace those
//    are denied.
// DNS queries are answered with their own bytes, at once or on the next turn.
//
// Oracles: every frame the stack sends parses, fits the MTU, comes from the
// gateway's MAC to the guest's address, and carries correct IPv4 and
// transport checksums; flow counts stay within their caps; when the stack is
// destroyed the process holds the sockets it held before it (no host socket
// leaks). Reproducing: a crash may depend on the inputs before it;
// MSB_NET_FLOW_FRESH=1 makes every input start from a fresh stack.
#include <arpa/inet.h>
#include <dirent.h>
#include <event2/event.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <span>
#include <tuple>
#include <vector>

#include "common/dispatcher.h"
#include "common/fd.h"
#include "common/memory_budget.h"
#include "fuzz/private_network.h"
#include "net/packet.h"
#include "net/stack.h"

namespace {

using namespace msb::net;
using msb::Dispatcher;
using msb::EventHandle;
using msb::UniqueFd;

constexpr int kResetEvery = 256;
constexpr size_t kMaxFlows = 48;
constexpr size_t kMaxPeers = 64;
constexpr std::chrono::milliseconds kUdpIdle{20};
constexpr std::chrono::milliseconds kTcpConnectTimeout{20};
constexpr std::chrono::milliseconds kTcpIdle{200};

[[noreturn]] void Die(const char* what, const std::string& detail = {}) {
  std::fprintf(stderr, "net_flow_fuzz: %s\n%s\n", what, detail.c_str());
  std::abort();
}

void Check(bool cond, const char* what, const std::string& detail = {}) {
  if (!cond) Die(what, detail);
}

// The process's open sockets: the stack's host sockets and the harness's.
// (Other descriptors come and go with libFuzzer itself: the pipes to the
// symbolizer that names new functions.)
std::map<int, std::string> OpenSockets() {
  std::map<int, std::string> out;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      char target[256] = {};
      std::string path = std::string("/proc/self/fd/") + e->d_name;
      ssize_t n = ::readlink(path.c_str(), target, sizeof target - 1);
      std::string what = n > 0 ? std::string(target, static_cast<size_t>(n)) : "?";
      if (what.rfind("socket:", 0) == 0) out[std::atoi(e->d_name)] = what;
    }
    ::closedir(d);
  }
  return out;
}

std::string Describe(const std::map<int, std::string>& fds) {
  std::string out;
  for (const auto& [fd, what] : fds) out += std::to_string(fd) + " " + what + "\n";
  return out;
}

UniqueFd BindLoopback(int type, uint16_t port) {
  UniqueFd fd(::socket(AF_INET, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (!fd || ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return {};
  if (type == SOCK_STREAM && ::listen(fd.get(), 64) != 0) return {};
  return fd;
}

enum class PeerKind { kEcho, kDiscard };

// The host side of one allowed flow, held by the harness.
struct Peer {
  UniqueFd fd;
  PeerKind kind;
  EventHandle watch;
  bool dead = false;
};

// What the stack last sent on a TCP flow, by (guest port, remote address,
// remote port): for the control byte's fix-ups.
struct Sent {
  uint32_t seq_end = 0;  // seq + payload + SYN + FIN
  uint32_t ack = 0;
};
using SentKey = std::tuple<uint16_t, std::array<uint8_t, 16>, uint16_t>;

class Harness {
 public:
  Harness() {
    netns_ = msb::fuzz::EnterPrivateNetwork();
    if (netns_) {
      listener_ = BindLoopback(SOCK_STREAM, 80);
      udp_echo_ = BindLoopback(SOCK_DGRAM, 7);
      netns_ = listener_.valid() && udp_echo_.valid();
    }
    if (!netns_) std::fprintf(stderr, "net_flow_fuzz: no private network namespace; loopback flows are denied\n");
    if (netns_) {
      listen_watch_ = dispatcher_.WatchFd(listener_.get(), Dispatcher::kRead, [this](short) {
        for (int i = 0; i < 8; ++i) {
          UniqueFd c(::accept4(listener_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
          if (!c) return;
          AddPeer(std::move(c), PeerKind::kEcho);
        }
      });
      udp_watch_ = dispatcher_.WatchFd(udp_echo_.get(), Dispatcher::kRead, [this](short) {
        char buf[2048];
        for (int i = 0; i < 16; ++i) {
          sockaddr_storage from{};
          socklen_t len = sizeof from;
          ssize_t n = ::recvfrom(udp_echo_.get(), buf, sizeof buf, MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from), &len);
          if (n < 0) return;
          ::sendto(udp_echo_.get(), buf, static_cast<size_t>(n), MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from), len);
        }
      });
    }
    Turns(4);
    baseline_fds_ = OpenSockets();
  }

  void Run(const uint8_t* data, size_t size) {
    static const bool fresh = std::getenv("MSB_NET_FLOW_FRESH") != nullptr;
    if (!stack_ || fresh || ++inputs_ >= kResetEvery || stack_->tcp_flows() + stack_->udp_flows() > kMaxFlows ||
        peers_.size() > kMaxPeers) {
      Reset();
    }
    size_t pos = 0;
    while (pos + 3 <= size) {
      uint8_t ctl = data[pos];
      size_t len = (size_t{data[pos + 1]} << 8) | data[pos + 2];
      pos += 3;
      len = std::min(len, size - pos);
      std::vector<uint8_t> frame(data + pos, data + pos + len);
      pos += len;
      FixUp(frame, ctl);
      stack_->OnFrame(frame);
      Turns(1 + ((ctl >> 4) & 7));
      CheckCaps();
    }
    Turns(2);
    CheckCaps();
    std::erase_if(peers_, [](const std::unique_ptr<Peer>& p) { return p->dead; });
  }

 private:
  void Turns(int n) {
    for (int i = 0; i < n; ++i) event_base_loop(dispatcher_.base(), EVLOOP_NONBLOCK);
  }

  void CheckCaps() {
    Check(stack_->tcp_flows() <= config_.max_tcp_flows, "more TCP flows than max_tcp_flows");
    Check(stack_->udp_flows() <= config_.max_udp_flows, "more UDP flows than max_udp_flows");
  }

  void Reset() {
    inputs_ = 0;
    if (stack_) {
      if (std::getenv("MSB_FUZZ_VERBOSE") != nullptr) {
        const StackStats& st = stack_->stats();
        std::fprintf(stderr,
                     "net_flow_fuzz: frames in %lu out %lu; tcp opened %lu denied %lu refused %lu; "
                     "udp opened %lu denied %lu dropped %lu; dns %lu; echo %lu; peers %zu\n",
                     st.frames_in, st.frames_out, st.tcp_opened, st.tcp_denied, st.tcp_refused, st.udp_opened,
                     st.udp_denied, st.udp_dropped, st.dns_queries, st.icmp_echo, peers_.size());
      }
      stack_.reset();
      peers_.clear();
      Turns(4);  // deferred deletions, posted replies
      auto fds = OpenSockets();
      Check(fds == baseline_fds_, "sockets left open after the stack was destroyed",
            "now:\n" + Describe(fds) + "before:\n" + Describe(baseline_fds_));
    }
    sent_.clear();
    budget_ = std::make_unique<msb::MemoryBudget>(2 << 20);
    config_ = StackConfig{};
    config_.udp_idle = kUdpIdle;
    config_.tcp_connect_timeout = kTcpConnectTimeout;
    config_.tcp_idle = kTcpIdle;
    config_.max_tcp_flows = 32;
    config_.max_udp_flows = 16;
    config_.max_flow_fds = 40;
    config_.tcp_buffer = 64 << 10;
    config_.budget = budget_.get();
    stack_ = std::make_unique<Stack>(
        dispatcher_, config_, [this](std::span<const uint8_t> f) { OnGuestFrame(f); },
        [this](const FlowKey& k) { return Verdict(k); },
        [this](std::string_view query, DnsReply reply) {
          if (query.size() % 2 == 0) {
            reply(std::string(query));
          } else {
            dispatcher_.Post([q = std::string(query), reply] { reply(q); });
          }
        });
  }

  void AddPeer(UniqueFd fd, PeerKind kind) {
    auto p = std::make_unique<Peer>();
    Peer* raw = p.get();
    p->fd = std::move(fd);
    p->kind = kind;
    p->watch = dispatcher_.WatchFd(p->fd.get(), Dispatcher::kRead, [raw](short) {
      char buf[16 << 10];
      ssize_t n = ::read(raw->fd.get(), buf, sizeof buf);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
      if (n <= 0) {
        raw->watch.Reset();
        raw->fd.Reset();
        raw->dead = true;
        return;
      }
      std::string_view got(buf, static_cast<size_t>(n));
      if (raw->kind == PeerKind::kEcho) {
        (void)::send(raw->fd.get(), buf, static_cast<size_t>(n), MSG_DONTWAIT | MSG_NOSIGNAL);
      } else if (got.find('Q') != std::string_view::npos) {
        raw->watch.Reset();
        raw->fd.Reset();
        raw->dead = true;
      } else if (got.find('F') != std::string_view::npos) {
        ::shutdown(raw->fd.get(), SHUT_WR);
      }
    });
    peers_.push_back(std::move(p));
  }

  UniqueFd Pair(PeerKind kind) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0) return {};
    AddPeer(UniqueFd(sv[1]), kind);
    return UniqueFd(sv[0]);
  }

  FlowVerdict Verdict(const FlowKey& k) {
    FlowVerdict v;
    bool loopback = k.dst == IpAddress::V4(127, 0, 0, 1);
    if (k.proto == FlowProto::kTcp) {
      switch (k.dport) {
        case 7:
        case 9:
          v.action = FlowAction::kAllow;
          v.connect = [this, kind = k.dport == 7 ? PeerKind::kEcho : PeerKind::kDiscard] { return Pair(kind); };
          return v;
        case 8:
          v.action = FlowAction::kAllow;
          v.connect = [] { return UniqueFd(); };
          return v;
        case 443: {
          v.action = netns_ ? FlowAction::kAllowToHostLoopback : FlowAction::kAllow;
          if (!netns_) v.connect = [this] { return Pair(PeerKind::kEcho); };
          uint16_t how = k.sport % 4;
          v.intercept = [this, how](UniqueFd host, FlowVerdict::InterceptDone done) {
            host.Reset();
            if (how == 3) return done(UniqueFd());
            auto stream = std::make_shared<UniqueFd>(Pair(PeerKind::kEcho));
            if (how == 0) return done(std::move(*stream));
            dispatcher_.Post([stream, done] { done(std::move(*stream)); });
          };
          return v;
        }
        case 80:
          if (netns_ && loopback) v.action = FlowAction::kAllowToHostLoopback;
          return v;
        default:
          if (netns_) v.action = FlowAction::kAllow;
          return v;
      }
    }
    if (netns_) v.action = k.dport == 7 && loopback ? FlowAction::kAllowToHostLoopback : FlowAction::kAllow;
    return v;
  }

  // Oracles on a frame to the guest, and what it tells the fix-ups.
  void OnGuestFrame(std::span<const uint8_t> bytes) {
    auto f = ParseFrame(bytes);
    Check(f.has_value(), "the stack sent an unparsable frame");
    Check(bytes.size() <= config_.mtu + kEthHeader, "the stack sent a frame above the MTU");
    Check(f->src == config_.gateway_mac, "a frame not from the gateway's MAC");
    if (f->ethertype != kEthIpv4 && f->ethertype != kEthIpv6) return;
    Check(f->ip_dst == config_.guest4 || f->ip_dst == config_.guest6, "an IP frame not to the guest",
          f->ip_dst.ToString());
    if (f->ethertype == kEthIpv4) {
      Check(ChecksumFinish(ChecksumAdd(0, bytes.subspan(kEthHeader, (bytes[kEthHeader] & 0x0f) * 4))) == 0,
            "a bad IPv4 header checksum");
    }
    uint32_t sum = 0;
    bool pseudo = f->proto == kProtoTcp || f->proto == kProtoUdp || f->proto == kProtoIcmp6;
    if (pseudo) sum = PseudoHeaderSum(f->ip_src, f->ip_dst, f->proto, static_cast<uint32_t>(f->l4.size()));
    bool udp_unset = f->proto == kProtoUdp && f->l4.size() >= 8 && f->l4[6] == 0 && f->l4[7] == 0 &&
                     f->ethertype == kEthIpv4;
    if (!udp_unset) {
      Check(ChecksumFinish(ChecksumAdd(sum, f->l4)) == 0, "a bad transport checksum",
            "protocol " + std::to_string(f->proto));
    }
    if (f->tcp) {
      const TcpHeader& t = *f->tcp;
      Sent& s = sent_[SentKey{f->dport, f->ip_src.bytes(), f->sport}];
      s.seq_end = t.seq + static_cast<uint32_t>(f->payload.size()) + ((t.flags & kTcpSyn) ? 1 : 0) +
                  ((t.flags & kTcpFin) ? 1 : 0);
      if (t.flags & kTcpAck) s.ack = t.ack;
      if (sent_.size() > 4096) sent_.clear();
    }
  }

  void FixUp(std::vector<uint8_t>& frame, uint8_t ctl) {
    if ((ctl & 3) == 0) return;
    auto f = ParseFrame(frame);
    if (!f || !f->tcp) return;
    auto it = sent_.find(SentKey{f->sport, f->ip_dst.bytes(), f->dport});
    if (it == sent_.end()) return;
    size_t l4 = static_cast<size_t>(f->l4.data() - frame.data());
    auto put32 = [&](size_t at, uint32_t v) {
      frame[at] = static_cast<uint8_t>(v >> 24);
      frame[at + 1] = static_cast<uint8_t>(v >> 16);
      frame[at + 2] = static_cast<uint8_t>(v >> 8);
      frame[at + 3] = static_cast<uint8_t>(v);
    };
    if (ctl & 2) put32(l4 + 4, it->second.ack);
    if (ctl & 1) put32(l4 + 8, it->second.seq_end);
  }

  Dispatcher dispatcher_;
  bool netns_ = false;
  UniqueFd listener_, udp_echo_;
  EventHandle listen_watch_, udp_watch_;
  std::map<int, std::string> baseline_fds_;
  std::unique_ptr<msb::MemoryBudget> budget_;
  StackConfig config_;
  std::unique_ptr<Stack> stack_;
  std::vector<std::unique_ptr<Peer>> peers_;
  std::map<SentKey, Sent> sent_;
  int inputs_ = 0;
};

Harness* g_harness = nullptr;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  g_harness = new Harness();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  g_harness->Run(data, size);
  return 0;
}
