// Stack: see stack.h for the theory of operation. This file holds the frame
// demultiplexer, the gateway answers (ARP, NDP, ICMP echo, DNS), the UDP flow
// table and the TCP flow table that glues TcpEndpoint to host sockets.
#include "net/stack.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <random>
#include <unordered_map>
#include <vector>

#include "common/io.h"
#include "common/log.h"
#include "net/tcp.h"

namespace msb::net {

namespace {

constexpr const char* kProtoNames[] = {"tcp", "udp", "icmp"};
constexpr const char* kActionNames[] = {"deny", "allow", "allow-to-host-loopback"};
static_assert(std::size(kProtoNames) == static_cast<size_t>(FlowProto::kIcmp) + 1);
static_assert(std::size(kActionNames) == static_cast<size_t>(FlowAction::kAllowToHostLoopback) + 1);

constexpr uint16_t kEphemeralFirst = 49152;
constexpr size_t kMaxDnsTcpBuffer = 2 + 65535;
constexpr size_t kHostReadChunk = 64 * 1024;

using Clock = std::chrono::steady_clock;

// (family, guest address, guest port, remote address, remote port).
struct TupleKey {
  bool v6 = false;
  std::array<uint8_t, 16> guest{}, remote{};
  uint16_t guest_port = 0, remote_port = 0;
  bool operator==(const TupleKey&) const = default;
};
struct TupleHash {
  size_t operator()(const TupleKey& k) const {
    uint64_t h = 1469598103934665603ull;
    auto mix = [&h](const uint8_t* p, size_t n) {
      for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
    };
    size_t n = k.v6 ? 16 : 4;
    mix(k.guest.data(), n);
    mix(k.remote.data(), n);
    uint8_t ports[5] = {static_cast<uint8_t>(k.guest_port), static_cast<uint8_t>(k.guest_port >> 8),
                        static_cast<uint8_t>(k.remote_port),
                        static_cast<uint8_t>(k.remote_port >> 8), k.v6};
    mix(ports, sizeof(ports));
    return h;
  }
};

TupleKey MakeTuple(const InetAddr& guest, uint16_t gport, const InetAddr& remote, uint16_t rport) {
  return TupleKey{guest.v6, guest.b, remote.b, gport, rport};
}

void ToSockaddr(const InetAddr& a, uint16_t port, sockaddr_storage* ss, socklen_t* len) {
  std::memset(ss, 0, sizeof(*ss));
  if (a.v6) {
    auto* s6 = reinterpret_cast<sockaddr_in6*>(ss);
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(port);
    std::memcpy(&s6->sin6_addr, a.b.data(), 16);
    *len = sizeof(sockaddr_in6);
  } else {
    auto* s4 = reinterpret_cast<sockaddr_in*>(ss);
    s4->sin_family = AF_INET;
    s4->sin_port = htons(port);
    std::memcpy(&s4->sin_addr, a.b.data(), 4);
    *len = sizeof(sockaddr_in);
  }
}

}  // namespace

const char* ToString(FlowProto p) { return kProtoNames[static_cast<int>(p)]; }
const char* ToString(FlowAction a) { return kActionNames[static_cast<int>(a)]; }

struct TcpFlow {
  uint64_t id = 0;
  TupleKey tuple;
  InetAddr guest_ip, remote_ip;
  uint16_t guest_port = 0, remote_port = 0;
  std::unique_ptr<TcpEndpoint> ep;
  UniqueFd fd;
  EventHandle watch;
  short watch_flags = 0;
  EventHandle rto_timer;
  EventHandle aux_timer;  // connect timeout, then idle timeout
  EventHandle ack_timer;  // delayed ACK
  bool ack_armed = false;
  bool connecting = false;
  bool host_eof = false;
  bool host_wr_shut = false;
  bool dns = false;
  bool inbound = false;
  bool dead = false;
  int dns_pending = 0;
  std::string dns_in;
  Clock::time_point last;
};

struct UdpFlow {
  TupleKey tuple;
  InetAddr guest_ip, remote_ip;
  uint16_t guest_port = 0, remote_port = 0;
  UniqueFd fd;
  EventHandle watch;
  EventHandle idle_timer;
  Clock::time_point last;
};

struct UdpListener {
  UniqueFd fd;
  EventHandle watch;
  uint16_t guest_port = 0;
};

struct UdpPeer {
  UdpListener* listener = nullptr;
  sockaddr_storage addr{};
  socklen_t len = 0;
  uint16_t gw_port = 0;
  std::string key;
  EventHandle idle_timer;
  Clock::time_point last;
};

struct Stack::Impl {
  Impl(Dispatcher& d, StackConfig c, FrameSink s, PolicyFn p, DnsHandler h)
      : dispatcher(d), cfg(std::move(c)), sink(std::move(s)), policy(std::move(p)),
        dns(std::move(h)), rng(std::random_device{}()) {}

  Dispatcher& dispatcher;
  StackConfig cfg;
  FrameSink sink;
  PolicyFn policy;
  DnsHandler dns;
  StackStats stats;
  std::mt19937 rng;
  std::vector<uint8_t> out;
  std::vector<uint8_t> readbuf = std::vector<uint8_t>(kHostReadChunk);
  std::shared_ptr<bool> alive = std::make_shared<bool>(true);

  std::unordered_map<TupleKey, std::unique_ptr<TcpFlow>, TupleHash> tcp;
  std::unordered_map<uint64_t, TcpFlow*> tcp_by_id;
  std::unordered_map<TupleKey, std::unique_ptr<UdpFlow>, TupleHash> udp;
  // Echo flows to allowed destinations, keyed (guest, echo id, destination):
  // an unprivileged ICMP socket each (guest_port holds the guest's echo id).
  std::unordered_map<TupleKey, std::unique_ptr<UdpFlow>, TupleHash> icmp;
  bool icmp_sockets_refused = false;  // the host forbids them (ping_group_range)
  std::vector<std::unique_ptr<UdpListener>> udp_listeners;
  std::unordered_map<uint16_t, std::unique_ptr<UdpPeer>> udp_peers;  // by gateway port
  std::unordered_map<std::string, uint16_t> udp_peer_ports;           // sender → gateway port
  uint64_t next_id = 1;
  uint16_t next_tcp_port = kEphemeralFirst;
  uint16_t next_udp_port = kEphemeralFirst;

  // --- output ---
  void Emit() {
    ++stats.frames_out;
    sink(out);
  }
  const InetAddr& Gateway(bool v6) const { return v6 ? cfg.gateway6 : cfg.gateway4; }
  const InetAddr& Guest(bool v6) const { return v6 ? cfg.guest6 : cfg.guest4; }
  uint16_t Mss(bool v6) const {
    return static_cast<uint16_t>(cfg.mtu - (v6 ? kIpv6Header : kIpv4Header) - kTcpHeader);
  }
  L2L3 ToGuest(const InetAddr& from, const InetAddr& to) const {
    return L2L3{cfg.gateway_mac, cfg.guest_mac, from, to};
  }

  void EmitTcp(TcpFlow& f, TcpHeader h, std::span<const uint8_t> payload) {
    h.sport = f.remote_port;
    h.dport = f.guest_port;
    BuildTcp(out, ToGuest(f.remote_ip, f.guest_ip), h, payload);
    Emit();
  }

  // A RST for a segment that belongs to no flow (RFC 793 "reset generation").
  void SendStrayRst(const ParsedFrame& f) {
    const TcpHeader& in = *f.tcp;
    TcpHeader h;
    h.sport = in.dport;
    h.dport = in.sport;
    if (in.flags & kTcpAck) {
      h.seq = in.ack;
      h.flags = kTcpRst;
    } else {
      h.seq = 0;
      h.ack = in.seq + static_cast<uint32_t>(f.payload.size()) + ((in.flags & kTcpSyn) ? 1 : 0) +
              ((in.flags & kTcpFin) ? 1 : 0);
      h.flags = kTcpRst | kTcpAck;
    }
    BuildTcp(out, ToGuest(f.ip_dst, f.ip_src), h, {});
    Emit();
  }

  // --- frames ---
  void OnFrame(std::span<const uint8_t> bytes) {
    ++stats.frames_in;
    auto parsed = ParseFrame(bytes);
    if (!parsed) {
      ++stats.frames_dropped;
      return;
    }
    ParsedFrame& f = *parsed;
    if (f.arp) return OnArp(*f.arp);
    if (f.ip_src.v6 && f.proto == kProtoIcmp6) {
      if (auto target = NeighborSolicitTarget(f)) {
        if (*target == cfg.gateway6) {
          InetAddr to = f.ip_src;
          if (to == InetAddr::V6({})) to = *InetAddr::Parse("ff02::1");
          BuildNeighborAdvert(out, L2L3{cfg.gateway_mac, f.src, cfg.gateway6, to}, cfg.gateway6,
                              cfg.gateway_mac);
          Emit();
        }
        return;
      }
    }
    if (f.ip_src != Guest(f.ip_src.v6)) {
      ++stats.frames_dropped;  // spoofed or link-local source
      return;
    }
    switch (f.proto) {
      case kProtoIcmp:
      case kProtoIcmp6:
        return OnIcmp(f);
      case kProtoUdp:
        return OnUdp(f);
      case kProtoTcp:
        return OnTcp(f);
      default:
        ++stats.frames_dropped;
    }
  }

  void OnArp(const ArpPacket& a) {
    if (a.op != 1 || a.tpa == cfg.guest4.v4() || a.spa != cfg.guest4.v4()) return;
    BuildArpReply(out, cfg.gateway_mac, a.tpa, a.sha, a.spa);
    Emit();
  }

  void OnIcmp(const ParsedFrame& f) {
    bool v6 = f.ip_src.v6;
    uint8_t echo_req = v6 ? kIcmp6EchoRequest : kIcmpEchoRequest;
    if (f.icmp_type != echo_req || f.icmp_code != 0 || f.payload.size() < 4) {
      ++stats.frames_dropped;
      return;
    }
    if (f.ip_dst != Gateway(v6)) return RelayEcho(f);
    ++stats.icmp_echo;
    BuildIcmp(out, ToGuest(f.ip_dst, f.ip_src), v6 ? kIcmp6EchoReply : kIcmpEchoReply, 0,
              f.payload);
    Emit();
  }

  // Echo to another destination: when the policy allows it, re-sent from an
  // unprivileged ICMP socket (the host's kernel picks the echo id; replies
  // get the guest's id back). Dropped where the host forbids such sockets.
  void RelayEcho(const ParsedFrame& f) {
    bool v6 = f.ip_src.v6;
    uint16_t id = static_cast<uint16_t>(f.payload[0] << 8 | f.payload[1]);
    TupleKey tuple = MakeTuple(f.ip_src, id, f.ip_dst, 0);
    auto it = icmp.find(tuple);
    if (it == icmp.end()) {
      FlowVerdict v = policy ? policy(FlowKey{FlowProto::kIcmp, f.ip_src, f.ip_dst, 0, 0}) : FlowVerdict{};
      if (v.action != FlowAction::kAllow || icmp_sockets_refused || icmp.size() >= cfg.max_udp_flows) {
        ++stats.frames_dropped;
        return;
      }
      UniqueFd fd(socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                         v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP));
      sockaddr_storage ss;
      socklen_t len;
      ToSockaddr(f.ip_dst, 0, &ss, &len);
      if (!fd) {
        if (errno == EACCES || errno == EPERM) icmp_sockets_refused = true;
        ++stats.frames_dropped;
        return;
      }
      if (connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
        ++stats.frames_dropped;
        return;
      }
      auto flow = std::make_unique<UdpFlow>();
      UdpFlow* raw = flow.get();
      raw->tuple = tuple;
      raw->guest_ip = f.ip_src;
      raw->remote_ip = f.ip_dst;
      raw->guest_port = id;
      raw->fd = std::move(fd);
      raw->watch = dispatcher.WatchFd(raw->fd.get(), Dispatcher::kRead, [this, raw](short) { EchoReadable(raw); });
      raw->idle_timer = dispatcher.Timer([this, raw]() { FlowIdle(icmp, raw); });
      raw->idle_timer.Arm(cfg.udp_idle);
      it = icmp.emplace(tuple, std::move(flow)).first;
    }
    UdpFlow& flow = *it->second;
    flow.last = Clock::now();
    // type, code, checksum (the kernel fills it), then id, sequence and data.
    std::vector<uint8_t> msg(4 + f.payload.size(), 0);
    msg[0] = v6 ? kIcmp6EchoRequest : kIcmpEchoRequest;
    std::copy(f.payload.begin(), f.payload.end(), msg.begin() + 4);
    if (send(flow.fd.get(), msg.data(), msg.size(), MSG_DONTWAIT) < 0) ++stats.frames_dropped;
  }

  void EchoReadable(UdpFlow* flow) {
    bool v6 = flow->guest_ip.v6;
    for (int i = 0; i < 64; ++i) {
      ssize_t n = recv(flow->fd.get(), readbuf.data(), readbuf.size(), MSG_DONTWAIT);
      if (n < 0) return;
      // An echo reply: 8 bytes of header (type, code, checksum, id, seq), data.
      if (n < 8 || readbuf[0] != (v6 ? kIcmp6EchoReply : kIcmpEchoReply)) continue;
      if (static_cast<size_t>(n) - 4 + (v6 ? kIpv6Header : kIpv4Header) + 4 > cfg.mtu) continue;
      flow->last = Clock::now();
      readbuf[4] = static_cast<uint8_t>(flow->guest_port >> 8);
      readbuf[5] = static_cast<uint8_t>(flow->guest_port);
      ++stats.icmp_echo;
      BuildIcmp(out, ToGuest(flow->remote_ip, flow->guest_ip), v6 ? kIcmp6EchoReply : kIcmpEchoReply, 0,
                {readbuf.data() + 4, static_cast<size_t>(n) - 4});
      Emit();
    }
  }

  // --- UDP ---
  bool FitsGuest(size_t payload, bool v6) const {
    return payload + kUdpHeader + (v6 ? kIpv6Header : kIpv4Header) <= cfg.mtu;
  }

  void OnUdp(const ParsedFrame& f) {
    bool v6 = f.ip_src.v6;
    if (f.ip_dst == Gateway(v6)) {
      if (f.dport == 53) return DnsUdp(f);
      auto peer = udp_peers.find(f.dport);
      if (!v6 && peer != udp_peers.end() && f.sport == peer->second->listener->guest_port) {
        UdpPeer& p = *peer->second;
        p.last = Clock::now();
        sendto(p.listener->fd.get(), f.payload.data(), f.payload.size(), MSG_DONTWAIT,
               reinterpret_cast<const sockaddr*>(&p.addr), p.len);
        return;
      }
    }
    TupleKey tuple = MakeTuple(f.ip_src, f.sport, f.ip_dst, f.dport);
    auto it = udp.find(tuple);
    if (it == udp.end()) {
      UdpFlow* flow = OpenUdp(f, tuple);
      if (flow == nullptr) return;
      it = udp.find(tuple);
    }
    UdpFlow& flow = *it->second;
    flow.last = Clock::now();
    if (send(flow.fd.get(), f.payload.data(), f.payload.size(), MSG_DONTWAIT) < 0)
      ++stats.udp_dropped;
  }

  UdpFlow* OpenUdp(const ParsedFrame& f, const TupleKey& tuple) {
    FlowKey key{FlowProto::kUdp, f.ip_src, f.ip_dst, f.sport, f.dport};
    FlowVerdict v = policy ? policy(key) : FlowVerdict{};
    bool to_gateway = f.ip_dst == Gateway(f.ip_src.v6);
    if (v.action == FlowAction::kDeny || (v.action == FlowAction::kAllow && to_gateway)) {
      ++stats.udp_denied;
      return nullptr;
    }
    if (udp.size() >= cfg.max_udp_flows) {
      ++stats.udp_dropped;
      return nullptr;
    }
    InetAddr dst = v.action == FlowAction::kAllowToHostLoopback ? InetAddr::V4(0x7f000001) : f.ip_dst;
    UniqueFd fd(socket(dst.v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    sockaddr_storage ss;
    socklen_t len;
    ToSockaddr(dst, f.dport, &ss, &len);
    if (!fd || connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) {
      ++stats.udp_dropped;
      return nullptr;
    }
    auto flow = std::make_unique<UdpFlow>();
    UdpFlow* raw = flow.get();
    raw->tuple = tuple;
    raw->guest_ip = f.ip_src;
    raw->remote_ip = f.ip_dst;
    raw->guest_port = f.sport;
    raw->remote_port = f.dport;
    raw->fd = std::move(fd);
    raw->last = Clock::now();
    raw->watch = dispatcher.WatchFd(raw->fd.get(), Dispatcher::kRead, [this, raw](short) { UdpReadable(raw); });
    raw->idle_timer = dispatcher.Timer([this, raw]() { FlowIdle(udp, raw); });
    raw->idle_timer.Arm(cfg.udp_idle);
    udp.emplace(tuple, std::move(flow));
    ++stats.udp_opened;
    return raw;
  }

  void UdpReadable(UdpFlow* flow) {
    for (int i = 0; i < 64; ++i) {
      ssize_t n = recv(flow->fd.get(), readbuf.data(), readbuf.size(), MSG_DONTWAIT);
      if (n < 0) return;  // EAGAIN, or an ICMP error reported on the socket
      flow->last = Clock::now();
      if (!FitsGuest(static_cast<size_t>(n), flow->guest_ip.v6)) {
        ++stats.udp_dropped;
        continue;
      }
      BuildUdp(out, ToGuest(flow->remote_ip, flow->guest_ip), flow->remote_port, flow->guest_port,
               {readbuf.data(), static_cast<size_t>(n)});
      Emit();
    }
  }

  // A UDP or echo flow's idle timer: re-armed while the flow is in use, else
  // the flow leaves its table.
  void FlowIdle(std::unordered_map<TupleKey, std::unique_ptr<UdpFlow>, TupleHash>& table, UdpFlow* flow) {
    auto idle = Clock::now() - flow->last;
    if (idle < cfg.udp_idle) {
      flow->idle_timer.Arm(std::chrono::duration_cast<std::chrono::milliseconds>(cfg.udp_idle - idle) +
                           std::chrono::milliseconds(1));
      return;
    }
    auto it = table.find(flow->tuple);
    if (it == table.end()) return;
    flow->watch.Reset();
    flow->idle_timer.Reset();  // frees this callback's closure: copy made by the trampoline
    dispatcher.DeferDelete(std::move(it->second));
    table.erase(it);
  }

  void DnsUdp(const ParsedFrame& f) {
    ++stats.dns_queries;
    if (!dns) return;
    std::weak_ptr<bool> weak = alive;
    InetAddr guest = f.ip_src, gw = f.ip_dst;
    uint16_t port = f.sport;
    dns(std::string_view(reinterpret_cast<const char*>(f.payload.data()), f.payload.size()),
        [this, weak, guest, gw, port](std::string reply) {
          if (weak.expired()) return;
          if (!FitsGuest(reply.size(), guest.v6)) return;  // the server sets TC for us
          BuildUdp(out, ToGuest(gw, guest), 53, port,
                   {reinterpret_cast<const uint8_t*>(reply.data()), reply.size()});
          Emit();
        });
  }

  // --- TCP ---
  TcpFlow* NewTcpFlow(const TupleKey& tuple, const InetAddr& guest, uint16_t gport,
                      const InetAddr& remote, uint16_t rport) {
    auto flow = std::make_unique<TcpFlow>();
    TcpFlow* f = flow.get();
    f->id = next_id++;
    f->tuple = tuple;
    f->guest_ip = guest;
    f->guest_port = gport;
    f->remote_ip = remote;
    f->remote_port = rport;
    f->last = Clock::now();
    TcpParams params;
    params.mss = Mss(guest.v6);
    params.snd_buf = params.rcv_buf = cfg.tcp_buffer;
    params.delay_acks = cfg.delayed_ack.count() > 0;
    f->rto_timer = dispatcher.Timer([this, f]() {
      if (!f->dead) HandleEvents(f, f->ep->OnTimer());
    });
    f->aux_timer = dispatcher.Timer([this, f]() { AuxTimer(f); });
    f->ack_timer = dispatcher.Timer([f]() {
      f->ack_armed = false;
      if (!f->dead) f->ep->FlushAck();
    });
    f->ep = std::make_unique<TcpEndpoint>(
        params, static_cast<uint32_t>(rng()),
        [this, f](const TcpHeader& h, std::span<const uint8_t> p) { EmitTcp(*f, h, p); },
        [f](std::chrono::milliseconds d) {
          if (d.count() == 0) {
            f->rto_timer.Disarm();
          } else {
            f->rto_timer.Arm(d);
          }
        });
    tcp.emplace(tuple, std::move(flow));
    tcp_by_id.emplace(f->id, f);
    return f;
  }

  void RemoveTcp(TcpFlow* f) {
    if (f->dead) return;
    f->dead = true;
    f->watch.Reset();
    f->rto_timer.Disarm();
    f->aux_timer.Disarm();
    f->ack_timer.Disarm();
    tcp_by_id.erase(f->id);
    auto it = tcp.find(f->tuple);
    if (it == tcp.end()) return;
    dispatcher.DeferDelete(std::move(it->second));
    tcp.erase(it);
  }

  // Closes the host side with a RST (SO_LINGER 0) and forgets the flow.
  void ResetHost(TcpFlow* f) {
    if (f->fd) {
      linger l{1, 0};
      setsockopt(f->fd.get(), SOL_SOCKET, SO_LINGER, &l, sizeof(l));
      f->fd.Reset();
    }
    RemoveTcp(f);
  }

  void OnTcp(const ParsedFrame& fr) {
    const TcpHeader& h = *fr.tcp;
    TupleKey tuple = MakeTuple(fr.ip_src, fr.sport, fr.ip_dst, fr.dport);
    auto it = tcp.find(tuple);
    if (it != tcp.end()) {
      TcpFlow* f = it->second.get();
      f->last = Clock::now();
      HandleEvents(f, f->ep->OnSegment(h, fr.payload));
      return;
    }
    if (h.flags & kTcpRst) return;
    if (!(h.flags & kTcpSyn) || (h.flags & kTcpAck)) return SendStrayRst(fr);
    bool v6 = fr.ip_src.v6;
    bool to_gateway = fr.ip_dst == Gateway(v6);
    if (tcp.size() >= cfg.max_tcp_flows) {
      ++stats.tcp_refused;
      return SendStrayRst(fr);
    }
    if (to_gateway && fr.dport == 53) {
      TcpFlow* f = NewTcpFlow(tuple, fr.ip_src, fr.sport, fr.ip_dst, fr.dport);
      f->dns = true;
      f->ep->OnGuestSyn(h);
      f->ep->AcceptSyn();
      f->aux_timer.Arm(cfg.tcp_idle);
      return;
    }
    FlowKey key{FlowProto::kTcp, fr.ip_src, fr.ip_dst, fr.sport, fr.dport};
    FlowVerdict v = policy ? policy(key) : FlowVerdict{};
    if (v.action == FlowAction::kDeny || (v.action == FlowAction::kAllow && to_gateway)) {
      ++stats.tcp_denied;
      MSB_LOG(kDebug, "net") << "tcp " << fr.ip_src.ToString() << ":" << fr.sport << " -> "
                             << fr.ip_dst.ToString() << ":" << fr.dport << " denied";
      return SendStrayRst(fr);
    }
    UniqueFd fd;
    if (v.connect) {
      fd = v.connect();
      if (!fd) {
        ++stats.tcp_refused;
        return SendStrayRst(fr);
      }
    } else {
      InetAddr dst = v.action == FlowAction::kAllowToHostLoopback ? InetAddr::V4(0x7f000001) : fr.ip_dst;
      fd = UniqueFd(socket(dst.v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
      sockaddr_storage ss;
      socklen_t len;
      ToSockaddr(dst, fr.dport, &ss, &len);
      if (!fd || (connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0 && errno != EINPROGRESS)) {
        ++stats.tcp_refused;
        return SendStrayRst(fr);
      }
    }
    int one = 1;
    setsockopt(fd.get(), IPPROTO_TCP, 1 /* TCP_NODELAY */, &one, sizeof(one));
    // Bounds the kernel's buffering too, so a slow host peer closes the
    // guest's window instead of queueing megabytes per flow.
    int sndbuf = static_cast<int>(cfg.tcp_buffer);
    setsockopt(fd.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    TcpFlow* f = NewTcpFlow(tuple, fr.ip_src, fr.sport, fr.ip_dst, fr.dport);
    f->fd = std::move(fd);
    f->connecting = true;
    f->ep->OnGuestSyn(h);
    f->aux_timer.Arm(cfg.tcp_connect_timeout);
    UpdateWatch(f);
  }

  void AuxTimer(TcpFlow* f) {
    if (f->dead) return;
    if (f->connecting) {
      ++stats.tcp_refused;
      f->ep->Refuse();
      RemoveTcp(f);
      return;
    }
    auto idle = Clock::now() - f->last;
    if (idle >= cfg.tcp_idle) {
      f->ep->Abort();
      ResetHost(f);
      return;
    }
    f->aux_timer.Arm(std::chrono::duration_cast<std::chrono::milliseconds>(cfg.tcp_idle - idle) +
                     std::chrono::milliseconds(1));
  }

  void UpdateWatch(TcpFlow* f) {
    if (f->dead || !f->fd) return;
    short want = 0;
    if (f->connecting) {
      want = Dispatcher::kWrite;
    } else {
      bool started = !f->inbound || f->ep->state() == TcpEndpoint::State::kEstablished;
      if (started && !f->host_eof && f->ep->SendSpace() > 0) want |= Dispatcher::kRead;
      if (f->ep->RecvSize() > 0) want |= Dispatcher::kWrite;
    }
    if (want == f->watch_flags && (want == 0 || f->watch.active())) return;
    f->watch.Reset();
    f->watch_flags = want;
    if (want != 0) {
      f->watch = dispatcher.WatchFd(f->fd.get(), want, [this, f](short ready) { HostReady(f, ready); });
    }
  }

  void HostReady(TcpFlow* f, short ready) {
    if (f->dead) return;
    if (f->connecting) {
      int err = 0;
      socklen_t len = sizeof(err);
      getsockopt(f->fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        ++stats.tcp_refused;
        f->ep->Refuse();
        RemoveTcp(f);
        return;
      }
      f->connecting = false;
      ++stats.tcp_opened;
      f->ep->AcceptSyn();
      f->aux_timer.Arm(cfg.tcp_idle);
      UpdateWatch(f);
      return;
    }
    if (ready & Dispatcher::kRead) ReadHost(f);
    if (f->dead) return;
    if (ready & Dispatcher::kWrite) FlushToHost(f);
    if (f->dead) return;
    UpdateWatch(f);
  }

  void ReadHost(TcpFlow* f) {
    for (int i = 0; i < 8; ++i) {
      size_t space = f->ep->SendSpace();
      if (space == 0 || f->host_eof) return;
      ssize_t n = recv(f->fd.get(), readbuf.data(), std::min(space, readbuf.size()), MSG_DONTWAIT);
      if (n > 0) {
        f->last = Clock::now();
        f->ep->Send({readbuf.data(), static_cast<size_t>(n)});
        continue;
      }
      if (n == 0) {
        f->host_eof = true;
        f->ep->Shutdown();
        return;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
      f->ep->Abort();  // the host peer reset: pass it on
      ResetHost(f);
      return;
    }
  }

  void FlushToHost(TcpFlow* f) {
    while (f->ep->RecvSize() > 0) {
      auto data = f->ep->PeekRecv();
      ssize_t n = send(f->fd.get(), data.data(), data.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
        f->ep->Abort();
        ResetHost(f);
        return;
      }
      f->ep->ConsumeRecv(static_cast<size_t>(n));
    }
    if (f->ep->RecvSize() == 0 && f->ep->guest_fin() && !f->host_wr_shut) {
      shutdown(f->fd.get(), SHUT_WR);
      f->host_wr_shut = true;
    }
    if (f->ep->closed() && f->ep->RecvSize() == 0) RemoveTcp(f);
  }

  void HandleEvents(TcpFlow* f, uint32_t ev) {
    if (f->dead) return;
    if ((ev & TcpEndpoint::kAckDelayed) && !f->ack_armed) {
      f->ack_armed = true;
      f->ack_timer.Arm(cfg.delayed_ack);
    }
    if (ev & TcpEndpoint::kReset) {
      ResetHost(f);
      return;
    }
    if (f->dns) {
      DnsTcp(f);
      if (f->ep->closed()) RemoveTcp(f);
      return;
    }
    if ((ev & (TcpEndpoint::kData | TcpEndpoint::kGuestFin)) && !f->connecting) FlushToHost(f);
    if (f->dead) return;
    if ((ev & TcpEndpoint::kEstablishedEvent) && f->inbound) ++stats.tcp_opened;
    if ((ev & TcpEndpoint::kSendSpace) && !f->connecting) ReadHost(f);
    if (f->dead) return;
    if (f->ep->closed() && f->ep->RecvSize() == 0) {
      RemoveTcp(f);
      return;
    }
    UpdateWatch(f);
  }

  void DnsTcp(TcpFlow* f) {
    while (f->ep->RecvSize() > 0) {
      auto data = f->ep->PeekRecv();
      size_t n = std::min(data.size(), kMaxDnsTcpBuffer - f->dns_in.size());
      if (n == 0) {
        f->ep->Abort();  // a message larger than any DNS message
        RemoveTcp(f);
        return;
      }
      f->dns_in.append(reinterpret_cast<const char*>(data.data()), n);
      f->ep->ConsumeRecv(n);
    }
    while (f->dns_in.size() >= 2) {
      size_t len = static_cast<uint8_t>(f->dns_in[0]) << 8 | static_cast<uint8_t>(f->dns_in[1]);
      if (f->dns_in.size() < 2 + len) break;
      std::string query = f->dns_in.substr(2, len);
      f->dns_in.erase(0, 2 + len);
      ++stats.dns_queries;
      if (!dns) continue;
      ++f->dns_pending;
      std::weak_ptr<bool> weak = alive;
      uint64_t id = f->id;
      dns(query, [this, weak, id](std::string reply) {
        if (weak.expired()) return;
        auto it = tcp_by_id.find(id);
        if (it == tcp_by_id.end() || it->second->dead) return;
        TcpFlow* fl = it->second;
        --fl->dns_pending;
        if (reply.size() <= 65535) {
          std::string framed;
          framed.push_back(static_cast<char>(reply.size() >> 8));
          framed.push_back(static_cast<char>(reply.size()));
          framed += reply;
          fl->ep->Send({reinterpret_cast<const uint8_t*>(framed.data()), framed.size()});
        }
        if (fl->ep->guest_fin() && fl->dns_pending == 0) fl->ep->Shutdown();
      });
      if (f->dead) return;
    }
    if (f->ep->guest_fin() && f->dns_pending == 0) f->ep->Shutdown();
  }

  // --- inbound ---
  Status OpenInbound(UniqueFd host_fd, uint16_t guest_port, bool v6) {
    if (!host_fd) return Error(ErrorCode::kInvalidArgument, "inbound connection: no host socket");
    if (tcp.size() >= cfg.max_tcp_flows)
      return Error(ErrorCode::kUnavailable, "inbound connection to guest port " +
                                                std::to_string(guest_port) +
                                                ": the flow table is full (max_tcp_flows)");
    if (Status nb = SetNonBlocking(host_fd.get()); !nb.ok()) return nb.error().Wrap("inbound connection");
    const InetAddr& guest = Guest(v6);
    const InetAddr& gw = Gateway(v6);
    for (int tries = 0; tries < 65536 - kEphemeralFirst; ++tries) {
      uint16_t port = next_tcp_port;
      next_tcp_port = next_tcp_port == 65535 ? kEphemeralFirst : next_tcp_port + 1;
      TupleKey tuple = MakeTuple(guest, guest_port, gw, port);
      if (tcp.count(tuple)) continue;
      TcpFlow* f = NewTcpFlow(tuple, guest, guest_port, gw, port);
      f->fd = std::move(host_fd);
      f->inbound = true;
      ++stats.tcp_inbound;
      f->ep->Connect();
      f->aux_timer.Arm(cfg.tcp_idle);
      return OkStatus();
    }
    return Error(ErrorCode::kUnavailable, "inbound connection: no free gateway port");
  }

  Status AddUdpInbound(UniqueFd sock, uint16_t guest_port) {
    if (!sock) return Error(ErrorCode::kInvalidArgument, "inbound UDP: no host socket");
    if (Status nb = SetNonBlocking(sock.get()); !nb.ok()) return nb.error().Wrap("inbound UDP");
    auto l = std::make_unique<UdpListener>();
    UdpListener* raw = l.get();
    raw->fd = std::move(sock);
    raw->guest_port = guest_port;
    raw->watch = dispatcher.WatchFd(raw->fd.get(), Dispatcher::kRead, [this, raw](short) { UdpInboundReadable(raw); });
    udp_listeners.push_back(std::move(l));
    return OkStatus();
  }

  void UdpInboundReadable(UdpListener* l) {
    for (int i = 0; i < 64; ++i) {
      sockaddr_storage from{};
      socklen_t len = sizeof(from);
      ssize_t n = recvfrom(l->fd.get(), readbuf.data(), readbuf.size(), MSG_DONTWAIT,
                           reinterpret_cast<sockaddr*>(&from), &len);
      if (n < 0) return;
      if (!FitsGuest(static_cast<size_t>(n), false)) {
        ++stats.udp_dropped;
        continue;
      }
      std::string key(reinterpret_cast<const char*>(&from), len);
      key += std::to_string(reinterpret_cast<uintptr_t>(l));
      UdpPeer* peer = nullptr;
      auto it = udp_peer_ports.find(key);
      if (it != udp_peer_ports.end()) {
        peer = udp_peers[it->second].get();
      } else {
        if (udp_peers.size() >= cfg.max_udp_flows) {
          ++stats.udp_dropped;
          continue;
        }
        uint16_t port = 0;
        for (int tries = 0; tries < 65536 - kEphemeralFirst; ++tries) {
          uint16_t p = next_udp_port;
          next_udp_port = next_udp_port == 65535 ? kEphemeralFirst : next_udp_port + 1;
          if (!udp_peers.count(p) && p != 53) {
            port = p;
            break;
          }
        }
        if (port == 0) {
          ++stats.udp_dropped;
          continue;
        }
        auto p = std::make_unique<UdpPeer>();
        peer = p.get();
        peer->listener = l;
        peer->addr = from;
        peer->len = len;
        peer->gw_port = port;
        peer->key = key;
        peer->idle_timer = dispatcher.Timer([this, port]() { UdpPeerIdle(port); });
        peer->idle_timer.Arm(cfg.udp_idle);
        udp_peers.emplace(port, std::move(p));
        udp_peer_ports.emplace(key, port);
      }
      peer->last = Clock::now();
      BuildUdp(out, ToGuest(cfg.gateway4, cfg.guest4), peer->gw_port, l->guest_port,
               {readbuf.data(), static_cast<size_t>(n)});
      Emit();
    }
  }

  void UdpPeerIdle(uint16_t port) {
    auto it = udp_peers.find(port);
    if (it == udp_peers.end()) return;
    UdpPeer* p = it->second.get();
    auto idle = Clock::now() - p->last;
    if (idle < cfg.udp_idle) {
      p->idle_timer.Arm(std::chrono::duration_cast<std::chrono::milliseconds>(cfg.udp_idle - idle) +
                        std::chrono::milliseconds(1));
      return;
    }
    udp_peer_ports.erase(p->key);
    dispatcher.DeferDelete(std::move(it->second));
    udp_peers.erase(it);
  }
};

Stack::Stack(Dispatcher& dispatcher, StackConfig config, FrameSink sink, PolicyFn policy,
             DnsHandler dns)
    : impl_(std::make_unique<Impl>(dispatcher, std::move(config), std::move(sink),
                                   std::move(policy), std::move(dns))) {}

Stack::~Stack() = default;

void Stack::OnFrame(std::span<const uint8_t> frame) { impl_->OnFrame(frame); }
Status Stack::OpenInbound(UniqueFd host_fd, uint16_t guest_port, bool ipv6) {
  return impl_->OpenInbound(std::move(host_fd), guest_port, ipv6);
}
Status Stack::AddUdpInbound(UniqueFd udp_socket, uint16_t guest_port) {
  return impl_->AddUdpInbound(std::move(udp_socket), guest_port);
}
const StackStats& Stack::stats() const { return impl_->stats; }
size_t Stack::tcp_flows() const { return impl_->tcp.size(); }
size_t Stack::udp_flows() const { return impl_->udp.size(); }
const StackConfig& Stack::config() const { return impl_->cfg; }

}  // namespace msb::net
