// ICMP echo: the stack answers echo requests to the gateway itself and
// relays echo to other destinations the policy allows through unprivileged
// ICMP sockets (SOCK_DGRAM with IPPROTO_ICMP / IPPROTO_ICMPV6). Not ICMP
// errors: nothing is forwarded or generated but echo replies.
//
// Theory of operation
//
// Scope: echo requests (kIcmpEchoRequest, kIcmp6EchoRequest; code 0, with
// at least the 4 bytes of id and sequence) from the guest's own address.
// Every other ICMP and ICMPv6 message is dropped (stats.frames_dropped),
// except the neighbour solicitations ndp.cc takes first.
//
// Goals: ping to the gateway always works (stats.icmp_echo). Ping elsewhere
// works when the policy answers FlowAction::kAllow for FlowProto::kIcmp and
// the host lets this process open ICMP sockets (net.ipv4.ping_group_range).
// Non-goals: no raw sockets and no privileges; kAllowToHostLoopback and
// FlowVerdict::connect do not apply to echo; the TTL is not carried over.
//
// Echo flows (UdpFlow in Impl::icmp), keyed (guest address, echo id,
// destination): one connected ICMP socket each, opened on the first allowed
// request. The host's kernel chooses the socket's echo id; UdpFlow::
// guest_port keeps the guest's, which replies get back. A request without a
// flow asks the policy; a denied one is dropped and asks again next time.
//
// Limits: at most StackConfig::max_udp_flows echo flows (a table apart from
// the UDP flows), and none while the stack's descriptor or memory limits are
// reached (stack.h); requests that would open more are dropped. Replies that
// would not fit StackConfig::mtu are dropped; at most kDatagramsPerWake
// replies are read per readiness.
//
// States: a flow exists (its socket connected) or not. Once socket()
// fails with EACCES or EPERM, Impl::icmp_sockets_refused is set for the
// Stack's life and every relayed request is dropped without trying again.
//
// Timeout: StackConfig::udp_idle, as for UDP flows. The flow's idle timer
// (FlowIdle, udp.cc) fires udp_idle after the flow opened; if a request or
// reply went by within the last udp_idle it re-arms for the remainder, else
// the flow leaves the table and its socket closes.
//
// Data flow, guest → host: the request's id, sequence and data are sent on
// the flow's socket as an echo request (the kernel fills in its id and the
// checksum); a full socket buffer drops it. Host → guest: each echo reply
// read gets the guest's id back and is built as an echo reply from the
// destination to the guest; other messages on the socket are skipped.
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>

#include "net/stack_impl.h"

namespace msb::net {

void Stack::Impl::OnIcmp(const ParsedFrame& f) {
  bool v6 = f.ip_src.is_v6();
  uint8_t echo_req = v6 ? kIcmp6EchoRequest : kIcmpEchoRequest;
  if (f.icmp_type != echo_req || f.icmp_code != 0 || f.payload.size() < 4) {
    ++stats.frames_dropped;
    return;
  }
  if (f.ip_dst != Gateway(v6)) return RelayEcho(f);
  ++stats.icmp_echo;
  BuildIcmp(out, ToGuest(f.ip_dst, f.ip_src), v6 ? kIcmp6EchoReply : kIcmpEchoReply, 0, f.payload);
  Emit();
}

void Stack::Impl::RelayEcho(const ParsedFrame& f) {
  bool v6 = f.ip_src.is_v6();
  uint16_t id = static_cast<uint16_t>(f.payload[0] << 8 | f.payload[1]);
  TupleKey tuple = MakeTuple(f.ip_src, id, f.ip_dst, 0);
  auto it = icmp.find(tuple);
  if (it == icmp.end()) {
    FlowVerdict v = policy ? policy(FlowKey{FlowProto::kIcmp, f.ip_src, f.ip_dst, 0, 0}) : FlowVerdict{};
    if (v.action != FlowAction::kAllow || icmp_sockets_refused || icmp.size() >= cfg.max_udp_flows ||
        FdsFull() || BudgetFull()) {
      ++stats.frames_dropped;
      return;
    }
    ++stats.host_sockets;
    UniqueFd fd(socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                       v6 ? int{IPPROTO_ICMPV6} : int{IPPROTO_ICMP}));
    sockaddr_storage ss;
    socklen_t len = f.ip_dst.ToSockaddr(0, &ss);
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
    ChargeFlow();
  }
  UdpFlow& flow = *it->second;
  flow.last = FlowClock::now();
  // type, code, checksum (the kernel fills it), then id, sequence and data.
  std::vector<uint8_t> msg(4 + f.payload.size(), 0);
  msg[0] = v6 ? kIcmp6EchoRequest : kIcmpEchoRequest;
  std::copy(f.payload.begin(), f.payload.end(), msg.begin() + 4);
  if (send(flow.fd.get(), msg.data(), msg.size(), MSG_DONTWAIT) < 0) ++stats.frames_dropped;
}

void Stack::Impl::EchoReadable(UdpFlow* flow) {
  bool v6 = flow->guest_ip.is_v6();
  for (int i = 0; i < kDatagramsPerWake; ++i) {
    ssize_t n = recv(flow->fd.get(), readbuf.data(), readbuf.size(), MSG_DONTWAIT);
    if (n < 0) return;
    // An echo reply: 8 bytes of header (type, code, checksum, id, seq), data.
    if (n < 8 || readbuf[0] != (v6 ? kIcmp6EchoReply : kIcmpEchoReply)) continue;
    if (static_cast<size_t>(n) - 4 + (v6 ? kIpv6Header : kIpv4Header) + 4 > cfg.mtu) continue;
    flow->last = FlowClock::now();
    readbuf[4] = static_cast<uint8_t>(flow->guest_port >> 8);
    readbuf[5] = static_cast<uint8_t>(flow->guest_port);
    ++stats.icmp_echo;
    BuildIcmp(out, ToGuest(flow->remote_ip, flow->guest_ip), v6 ? kIcmp6EchoReply : kIcmpEchoReply, 0,
              {readbuf.data() + 4, static_cast<size_t>(n) - 4});
    Emit();
  }
}

}  // namespace msb::net
