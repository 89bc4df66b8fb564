// UDP: the guest's datagrams re-sent from one connected host socket per
// flow, DNS datagrams to gateway:53, and published UDP ports (a host
// socket's senders forwarded to a guest port). Not a NAT: the host's kernel
// picks the source ports, and only replies arriving on a flow's socket reach
// the guest.
//
// Theory of operation
//
// Outbound flows (UdpFlow in Impl::udp), keyed by (guest address, guest
// port, destination address, destination port). The first datagram of a
// key asks the policy once (FlowProto::kUdp): kDeny, or kAllow to the
// gateway in any form (Impl::IsGateway: its own address or an IPv6 form
// embedding it), drops it (stats.udp_denied); kAllow opens a socket
// connected to the destination; kAllowToHostLoopback one connected to
// 127.0.0.1 on the same port (stats.udp_opened). A datagram that would
// open more than StackConfig::max_udp_flows flows (or any while the stack's
// descriptor or memory limits are reached, stack.h), or whose socket cannot be
// made or connected, is dropped (stats.udp_dropped).
//
// Timeout: StackConfig::udp_idle. One timer per flow (FlowIdle, shared with
// the echo flows of icmp.cc) fires udp_idle after the flow opened; if a
// datagram went either way within the last udp_idle it re-arms for the
// remainder, else the flow leaves its table (its watch and timer released
// first, the flow deleted through Dispatcher::DeferDelete) and its socket
// closes.
//
// Data flow, guest → host: the payload is sent on the flow's socket
// (MSG_DONTWAIT; a full socket buffer drops it, stats.udp_dropped). Host →
// guest: each datagram read, at most kDatagramsPerWake per readiness, is
// built as UDP from destination:dport to guest:sport; one that would not fit
// StackConfig::mtu (FitsGuest) is dropped (stats.udp_dropped). ICMP errors
// the kernel reports on the socket end the reads for that readiness.
//
// DNS: datagrams to gateway:53 go to the DnsHandler whatever the policy
// (stats.dns_queries). Its reply may come later: it is dropped when the
// Stack is gone (Impl::alive) or when it would not fit the MTU (the DNS
// server truncates with TC, so the guest retries over TCP).
//
// Published ports (UdpListener, AddUdpInbound): a new sender to a listener
// (its address, port and the listener) is judged by the listener's admit
// (the ingress policy, asked again for each datagram of a refused sender,
// which is dropped: stats.udp_denied); an admitted one gets a gateway port
// (UdpPeer), handed
// out round robin from kEphemeralFirst, never 53 nor one in use; its
// datagrams reach guest4:guest_port from gateway4:<that port>, and the
// guest's datagrams from guest_port to that port go back to the sender from
// the listener's socket. IPv4 only. At most max_udp_flows senders; datagrams
// of more senders, or too large for the MTU, are dropped (stats.
// udp_dropped). A sender silent for udp_idle loses its port (UdpPeerIdle,
// the same re-arming rule). A datagram from the guest to another gateway
// port is an ordinary flow to the gateway, which only kAllowToHostLoopback
// lets through.
#include <sys/socket.h>

#include "net/stack_impl.h"

namespace msb::net {

void Stack::Impl::OnUdp(const ParsedFrame& f) {
  bool v6 = f.ip_src.is_v6();
  if (f.ip_dst == Gateway(v6)) {
    if (f.dport == 53) return DnsUdp(f);
    auto peer = udp_peers.find(f.dport);
    if (!v6 && peer != udp_peers.end() && f.sport == peer->second->listener->guest_port) {
      UdpPeer& p = *peer->second;
      p.last = FlowClock::now();
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
  flow.last = FlowClock::now();
  if (send(flow.fd.get(), f.payload.data(), f.payload.size(), MSG_DONTWAIT) < 0) ++stats.udp_dropped;
}

UdpFlow* Stack::Impl::OpenUdp(const ParsedFrame& f, const TupleKey& tuple) {
  FlowKey key{FlowProto::kUdp, f.ip_src, f.ip_dst, f.sport, f.dport};
  FlowVerdict v = policy ? policy(key) : FlowVerdict{};
  bool to_gateway = IsGateway(f.ip_dst);
  if (v.action == FlowAction::kDeny || (v.action == FlowAction::kAllow && to_gateway)) {
    ++stats.udp_denied;
    return nullptr;
  }
  if (udp.size() >= cfg.max_udp_flows || FdsFull() || BudgetFull()) {
    ++stats.udp_dropped;
    return nullptr;
  }
  IpAddress dst = v.action == FlowAction::kAllowToHostLoopback ? IpAddress::V4(127, 0, 0, 1) : f.ip_dst;
  ++stats.host_sockets;
  UniqueFd fd(socket(dst.is_v6() ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  sockaddr_storage ss;
  socklen_t len = dst.ToSockaddr(f.dport, &ss);
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
  raw->last = FlowClock::now();
  raw->watch = dispatcher.WatchFd(raw->fd.get(), Dispatcher::kRead, [this, raw](short) { UdpReadable(raw); });
  raw->idle_timer = dispatcher.Timer([this, raw]() { FlowIdle(udp, raw); });
  raw->idle_timer.Arm(cfg.udp_idle);
  udp.emplace(tuple, std::move(flow));
  ChargeFlow();
  ++stats.udp_opened;
  return raw;
}

void Stack::Impl::UdpReadable(UdpFlow* flow) {
  for (int i = 0; i < kDatagramsPerWake; ++i) {
    ssize_t n = recv(flow->fd.get(), readbuf.data(), readbuf.size(), MSG_DONTWAIT);
    if (n < 0) return;  // EAGAIN, or an ICMP error reported on the socket
    flow->last = FlowClock::now();
    if (!FitsGuest(static_cast<size_t>(n), flow->guest_ip.is_v6())) {
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
void Stack::Impl::FlowIdle(UdpTable& table, UdpFlow* flow) {
  auto idle = FlowClock::now() - flow->last;
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
  ReleaseFlow();
}

void Stack::Impl::DnsUdp(const ParsedFrame& f) {
  ++stats.dns_queries;
  if (!dns) return;
  std::weak_ptr<bool> weak = alive;
  IpAddress guest = f.ip_src, gw = f.ip_dst;
  uint16_t port = f.sport;
  dns(std::string_view(reinterpret_cast<const char*>(f.payload.data()), f.payload.size()),
      [this, weak, guest, gw, port](std::string reply) {
        if (weak.expired()) return;
        if (!FitsGuest(reply.size(), guest.is_v6())) return;  // the server sets TC for us
        BuildUdp(out, ToGuest(gw, guest), 53, port,
                 {reinterpret_cast<const uint8_t*>(reply.data()), reply.size()});
        Emit();
      });
}

Status Stack::Impl::AddUdpInbound(UniqueFd sock, uint16_t guest_port, InboundAdmit admit) {
  if (!sock) return Error(ErrorCode::kInvalidArgument, "inbound UDP: no host socket");
  if (Status nb = SetNonBlocking(sock.get()); !nb.ok()) return nb.error().Wrap("inbound UDP");
  auto l = std::make_unique<UdpListener>();
  UdpListener* raw = l.get();
  raw->fd = std::move(sock);
  raw->guest_port = guest_port;
  raw->admit = std::move(admit);
  raw->watch = dispatcher.WatchFd(raw->fd.get(), Dispatcher::kRead, [this, raw](short) { UdpInboundReadable(raw); });
  udp_listeners.push_back(std::move(l));
  return OkStatus();
}

void Stack::Impl::UdpInboundReadable(UdpListener* l) {
  for (int i = 0; i < kDatagramsPerWake; ++i) {
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
      if (l->admit) {
        auto source = IpAddress::FromSockaddr(reinterpret_cast<const sockaddr*>(&from));
        if (!source || !l->admit(*source)) {
          ++stats.udp_denied;
          continue;
        }
      }
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
    peer->last = FlowClock::now();
    BuildUdp(out, ToGuest(cfg.gateway4, cfg.guest4), peer->gw_port, l->guest_port,
             {readbuf.data(), static_cast<size_t>(n)});
    Emit();
  }
}

void Stack::Impl::UdpPeerIdle(uint16_t port) {
  auto it = udp_peers.find(port);
  if (it == udp_peers.end()) return;
  UdpPeer* p = it->second.get();
  auto idle = FlowClock::now() - p->last;
  if (idle < cfg.udp_idle) {
    p->idle_timer.Arm(std::chrono::duration_cast<std::chrono::milliseconds>(cfg.udp_idle - idle) +
                      std::chrono::milliseconds(1));
    return;
  }
  udp_peer_ports.erase(p->key);
  dispatcher.DeferDelete(std::move(it->second));
  udp_peers.erase(it);
}

}  // namespace msb::net
