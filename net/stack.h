// Stack: the user-mode network stack of one sandbox. Ethernet frames from the
// guest come in through OnFrame; frames to the guest leave through the sink.
// The stack plays the gateway (ARP/NDP, ICMP echo, DNS at gateway:53 through
// an injected handler) and terminates every guest TCP connection and UDP flow,
// re-originating the ones the injected policy allows as ordinary host sockets
// on the Dispatcher. Inbound (published ports) runs the other way: a host
// socket is spliced to a connection the stack opens towards the guest.
// Not a router: nothing is forwarded at the IP level, no TAP, no root.
//
// Theory of operation
//
// Addresses (StackConfig): the guest has one static IPv4 and one IPv6 address;
// the gateway (this stack) has one of each and one MAC. Every other address
// is reached through the gateway: ARP requests for any address but the
// guest's own are answered with the gateway MAC (arp.cc); neighbour
// solicitations are answered only for gateway6 (ndp.cc). Frames whose source
// IP is not the guest's are dropped.
//
// Flows: the policy is asked once per new flow with its FlowKey; the guest
// then sees:
//  - TCP (FlowProto::kTcp, stack_tcp.cc): kDeny → RST (stats.tcp_denied);
//    kAllow → a connection to the destination, or to the stream
//    FlowVerdict::connect returns; kAllowToHostLoopback → to 127.0.0.1:dport.
//    The SYN-ACK goes to the guest only when the host connect succeeded; a
//    failed or timed-out connect (StackConfig::tcp_connect_timeout) answers
//    RST, as the real destination would. With FlowVerdict::intercept the
//    connecting socket goes to the interceptor and the SYN-ACK waits for the
//    stream it hands back. Bytes are then spliced between the
//    TcpEndpoint (tcp.h) and the host socket, with flow control both ways;
//    FIN and RST are passed on. A flow idle for tcp_idle is reset both ways;
//    at most max_tcp_flows, beyond that new SYNs are refused.
//  - UDP (kUdp, udp.cc): one connected host socket per (guest port,
//    destination), dropped after udp_idle without traffic either way. At most
//    max_udp_flows; datagrams that would open more are dropped. Denied
//    datagrams are dropped (stats.udp_denied).
//  - ICMP echo (kIcmp, icmp.cc): answered by the gateway itself; echo to other
//    destinations the policy allows is relayed through unprivileged ICMP
//    sockets where the host permits them.
//
// Memory and descriptors: every flow is charged kFlowCost, and each TCP
// flow also the bytes its buffers hold (send and receive rings, the DNS
// message being assembled), to StackConfig::budget. While the budget is
// exhausted the stack opens no flow (TCP SYNs answered RST, stats.
// tcp_refused; datagrams that would open a flow dropped, stats.udp_dropped),
// takes no payload from the guest (its segments are acknowledged up to what
// was already taken, so the guest retransmits later), reads nothing more from
// host sockets and drops DNS replies; it resumes when the budget has room
// again (MemoryBudget::Watch). All flows together hold at most
// StackConfig::max_flow_fds host sockets.
//
// DNS: UDP datagrams to gateway:53 (udp.cc) and TCP connections to gateway:53
// (two-byte length-prefixed messages, stack_tcp.cc) are handed to the
// DnsHandler; its reply callback may run later and is ignored when the flow
// is gone.
//
// Inbound: OpenInbound(host_fd, guest_port) makes a TCP flow from
// gateway:<ephemeral port> to guest:guest_port and sends SYN to the guest; a
// RST from the guest closes host_fd. AddUdpInbound(socket, guest_port, admit)
// forwards each datagram arriving on a host UDP socket to guest:guest_port
// from gateway:<port chosen per sender>, and the guest's replies back to that
// sender; admit judges each new sender first (the ingress policy), and a
// refused sender's datagrams are dropped (stats.udp_denied).
//
// The gateway is recognised in every form: a flow to an IPv6 form embedding
// the gateway's IPv4 address (Canonicalize, address.h) is never sent to the
// host's network under that address; only kAllowToHostLoopback lets a flow to
// the gateway through, and DNS is answered at the literal gateway only.
//
// Each protocol's limits, states, timeouts and data flow per direction open
// its file: arp.cc, ndp.cc, icmp.cc, udp.cc, stack_tcp.cc. stack.cc
// demultiplexes the frames; the state they share is Stack::Impl
// (stack_impl.h, private to net/).
//
// Lifetime: all flows are owned by the Stack and die with it; host sockets are
// closed then. Flows are removed through Dispatcher::DeferDelete so a flow's
// own callback never frees it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "common/dispatcher.h"
#include "common/fd.h"
#include "common/memory_budget.h"
#include "common/result.h"
#include "net/packet.h"

namespace msb::net {

struct StackConfig {
  Mac guest_mac{0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
  Mac gateway_mac{0x52, 0x54, 0x00, 0x12, 0x34, 0x01};
  IpAddress guest4 = IpAddress::V4(10, 0, 2, 2);
  IpAddress gateway4 = IpAddress::V4(10, 0, 2, 1);
  int prefix4 = 24;
  IpAddress guest6 = *IpAddress::Parse("fd00:6d73:62::2");
  IpAddress gateway6 = *IpAddress::Parse("fd00:6d73:62::1");
  int prefix6 = 64;
  uint16_t mtu = 1500;
  std::chrono::milliseconds udp_idle{60000};
  std::chrono::milliseconds tcp_connect_timeout{10000};
  std::chrono::milliseconds tcp_idle{7200 * 1000};
  size_t max_tcp_flows = 8192;
  size_t max_udp_flows = 1024;
  size_t tcp_buffer = 512 * 1024;  // per direction, per flow
  // Host sockets the flows may hold together (TCP, UDP and echo flows);
  // 0: only the per-protocol caps. The supervisor sets it from its
  // descriptor limit, less a reserve for its own sockets.
  size_t max_flow_fds = 0;
  // The memory budget the stack's buffers and flows are charged to (must
  // outlive the stack); null: unbounded but for the caps above.
  MemoryBudget* budget = nullptr;
  // Delay of an ACK the guest's data does not need at once (TcpParams::
  // delay_acks); 0 acknowledges every segment at once.
  std::chrono::milliseconds delayed_ack{1};
};

enum class FlowProto : int { kTcp = 0, kUdp = 1, kIcmp = 2 };
const char* ToString(FlowProto p);

// A flow as the guest sees it: src is the guest, dst the destination it asked for.
struct FlowKey {
  FlowProto proto = FlowProto::kTcp;
  IpAddress src, dst;
  uint16_t sport = 0, dport = 0;
};

enum class FlowAction : int { kDeny = 0, kAllow = 1, kAllowToHostLoopback = 2 };
const char* ToString(FlowAction a);
struct FlowVerdict {
  FlowAction action = FlowAction::kDeny;
  // kAllow of a TCP flow: when set, the flow's host side is the stream this
  // returns (non-blocking, connected or connecting) instead of a connection to
  // the destination: a sandbox of the same project, reached through its
  // supervisor. An invalid fd refuses the flow (RST).
  std::function<UniqueFd()> connect;
  // kAllow or kAllowToHostLoopback of a TCP flow: when set, the host side
  // the stack opened (connecting, non-blocking) is handed to intercept with a
  // completion; the flow waits, as while connecting, until the completion
  // gets the stream that stands for the host side from then on (connected,
  // non-blocking), or an invalid fd, which refuses the flow (RST). The
  // completion may run inside intercept or later on the loop, and does
  // nothing once the flow is gone (its fd is then closed). The sandbox's
  // secrets proxy (secrets/proxy.h) sits here.
  using InterceptDone = std::function<void(UniqueFd)>;
  std::function<void(UniqueFd host, InterceptDone done)> intercept;
};

using PolicyFn = std::function<FlowVerdict(const FlowKey&)>;
using DnsReply = std::function<void(std::string)>;
using DnsHandler = std::function<void(std::string_view query, DnsReply reply)>;
using FrameSink = std::function<void(std::span<const uint8_t>)>;
// Whether a sender to a published UDP port may reach the guest.
using InboundAdmit = std::function<bool(const IpAddress& source)>;

struct StackStats {
  uint64_t frames_in = 0, frames_out = 0, frames_dropped = 0;
  uint64_t tcp_opened = 0, tcp_denied = 0, tcp_refused = 0, tcp_inbound = 0;
  uint64_t udp_opened = 0, udp_denied = 0, udp_dropped = 0;
  uint64_t dns_queries = 0, icmp_echo = 0;
  // Host sockets opened or asked for (FlowVerdict::connect) for guest flows:
  // TCP, UDP and echo. Not inbound ones.
  uint64_t host_sockets = 0;
};

class Stack {
 public:
  // dispatcher must outlive the stack; sink is called on the dispatcher's
  // thread for every frame to the guest.
  Stack(Dispatcher& dispatcher, StackConfig config, FrameSink sink, PolicyFn policy,
        DnsHandler dns);
  ~Stack();
  Stack(const Stack&) = delete;
  Stack& operator=(const Stack&) = delete;

  // One Ethernet frame from the guest (hostile; any bytes).
  void OnFrame(std::span<const uint8_t> frame);

  // Opens a TCP connection towards guest:guest_port and splices it to
  // host_fd (a connected stream socket; ownership taken).
  Status OpenInbound(UniqueFd host_fd, uint16_t guest_port, bool ipv6 = false);
  // Forwards datagrams from a bound host UDP socket (ownership taken) to
  // guest:guest_port, and the guest's replies back to each sender.
  Status AddUdpInbound(UniqueFd udp_socket, uint16_t guest_port, InboundAdmit admit = {});

  const StackStats& stats() const;
  size_t tcp_flows() const;
  size_t udp_flows() const;
  const StackConfig& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace msb::net
