// Stack::Impl: the state one Stack shares between the files that implement
// it — stack.cc (the frame demultiplexer), arp.cc, ndp.cc, icmp.cc, udp.cc
// and stack_tcp.cc — the flow tables, the output buffer and each protocol's
// handlers. Private to net/: nothing outside this folder includes it; the
// contract is stack.h, and each protocol's theory of operation opens its file.
#pragma once

#include <fcntl.h>
#include <sys/socket.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/io.h"
#include "net/stack.h"
#include "net/tcp.h"

namespace msb::net {

// Gateway ports of inbound TCP flows and of published UDP ports' senders:
// kEphemeralFirst..65535, handed out round robin.
inline constexpr uint16_t kEphemeralFirst = 49152;
// A DNS-over-TCP connection's unconsumed bytes: one length prefix and the
// largest message; more is a protocol violation.
inline constexpr size_t kMaxDnsTcpBuffer = 2 + 65535;
// One read from a host socket.
inline constexpr size_t kHostReadChunk = 64 * 1024;
// Reads per readiness callback before the loop serves others: datagrams
// (UDP flows, echo flows, published UDP ports) and TCP stream reads.
inline constexpr int kDatagramsPerWake = 64;
inline constexpr int kTcpReadsPerWake = 8;

// What one flow is charged against StackConfig::budget besides its buffered
// bytes: the flow's own state, its timers and the table entries.
inline constexpr size_t kFlowCost = 2048;

using FlowClock = std::chrono::steady_clock;

// (family, guest address, guest port, remote address, remote port).
struct TupleKey {
  bool v6 = false;
  std::array<uint8_t, 16> guest{}, remote{};
  uint16_t guest_port = 0, remote_port = 0;
  bool operator==(const TupleKey&) const = default;
};

struct TupleHash {
  size_t operator()(const TupleKey& k) const {
    uint64_t h = 1469598103934665603ull;  // FNV-1a
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

inline TupleKey MakeTuple(const IpAddress& guest, uint16_t gport, const IpAddress& remote,
                          uint16_t rport) {
  return TupleKey{guest.is_v6(), guest.bytes(), remote.bytes(), gport, rport};
}

// A guest TCP connection and its host side (stack_tcp.cc).
struct TcpFlow {
  uint64_t id = 0;
  TupleKey tuple;
  IpAddress guest_ip, remote_ip;
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
  size_t charged = 0;  // against StackConfig::budget
  FlowClock::time_point last;
};

// A UDP flow (udp.cc) or an echo flow (icmp.cc): one connected host socket.
struct UdpFlow {
  TupleKey tuple;
  IpAddress guest_ip, remote_ip;
  uint16_t guest_port = 0, remote_port = 0;  // echo flows: guest_port is the guest's echo id
  UniqueFd fd;
  EventHandle watch;
  EventHandle idle_timer;
  FlowClock::time_point last;
};
using UdpTable = std::unordered_map<TupleKey, std::unique_ptr<UdpFlow>, TupleHash>;

// A published UDP port's host socket (udp.cc).
struct UdpListener {
  UniqueFd fd;
  EventHandle watch;
  uint16_t guest_port = 0;
  InboundAdmit admit;  // asked once per new sender; empty admits all
};

// One sender to a published UDP port and the gateway port it appears from.
struct UdpPeer {
  UdpListener* listener = nullptr;
  sockaddr_storage addr{};
  socklen_t len = 0;
  uint16_t gw_port = 0;
  std::string key;
  EventHandle idle_timer;
  FlowClock::time_point last;
};

struct Stack::Impl {
  Impl(Dispatcher& d, StackConfig c, FrameSink s, PolicyFn p, DnsHandler h)
      : dispatcher(d), cfg(std::move(c)), sink(std::move(s)), policy(std::move(p)),
        dns(std::move(h)), rng(std::random_device{}()) {
    if (cfg.budget != nullptr) {
      std::weak_ptr<bool> weak = alive;
      budget_watch = cfg.budget->Watch([this, weak]() {
        dispatcher.Post([this, weak]() {
          if (!weak.expired()) OnBudgetRoom();
        });
      });
    }
  }
  ~Impl() {
    if (cfg.budget == nullptr) return;
    cfg.budget->Unwatch(budget_watch);
    size_t held = 0;
    for (auto& [k, f] : tcp) held += f->charged;
    held += (udp.size() + icmp.size()) * kFlowCost;
    cfg.budget->Release(held);
  }

  Dispatcher& dispatcher;
  StackConfig cfg;
  FrameSink sink;
  PolicyFn policy;
  DnsHandler dns;
  StackStats stats;
  std::mt19937 rng;
  std::vector<uint8_t> out;  // the frame being built; Emit() sends it
  std::vector<uint8_t> readbuf = std::vector<uint8_t>(kHostReadChunk);
  // Expires with the Stack: late DNS replies check it.
  std::shared_ptr<bool> alive = std::make_shared<bool>(true);

  std::unordered_map<TupleKey, std::unique_ptr<TcpFlow>, TupleHash> tcp;
  std::unordered_map<uint64_t, TcpFlow*> tcp_by_id;
  UdpTable udp;
  // Echo flows to allowed destinations, keyed (guest, echo id, destination).
  UdpTable icmp;
  bool icmp_sockets_refused = false;  // the host forbids them (ping_group_range)
  std::vector<std::unique_ptr<UdpListener>> udp_listeners;
  std::unordered_map<uint16_t, std::unique_ptr<UdpPeer>> udp_peers;  // by gateway port
  std::unordered_map<std::string, uint16_t> udp_peer_ports;           // sender → gateway port
  uint64_t next_id = 1;
  uint16_t next_tcp_port = kEphemeralFirst;
  uint16_t next_udp_port = kEphemeralFirst;
  int budget_watch = 0;

  // --- limits (stack_tcp.cc) ---
  // The budget is exhausted: no new flow, no payload from the guest.
  bool BudgetFull() const { return cfg.budget != nullptr && cfg.budget->Exhausted(); }
  // The flows hold as many host sockets as they may.
  bool FdsFull() const {
    return cfg.max_flow_fds != 0 && tcp.size() + udp.size() + icmp.size() >= cfg.max_flow_fds;
  }
  void ChargeFlow() {
    if (cfg.budget != nullptr) cfg.budget->Charge(kFlowCost);
  }
  void ReleaseFlow() {
    if (cfg.budget != nullptr) cfg.budget->Release(kFlowCost);
  }
  // Brings a TCP flow's charge up to date with its buffers.
  void Recharge(TcpFlow* f);
  void OnBudgetRoom();

  // --- output and addresses (here) ---
  void Emit() {
    ++stats.frames_out;
    sink(out);
  }
  const IpAddress& Gateway(bool v6) const { return v6 ? cfg.gateway6 : cfg.gateway4; }
  // Whether ip is the gateway in any form: compared canonical (address.h),
  // so ::ffff:10.0.2.2 and 64:ff9b::a00:202 are the gateway too.
  bool IsGateway(const IpAddress& ip) const {
    IpAddress c = Canonicalize(ip);
    return c == Canonicalize(cfg.gateway4) || c == Canonicalize(cfg.gateway6);
  }
  const IpAddress& Guest(bool v6) const { return v6 ? cfg.guest6 : cfg.guest4; }
  uint16_t Mss(bool v6) const {
    return static_cast<uint16_t>(cfg.mtu - (v6 ? kIpv6Header : kIpv4Header) - kTcpHeader);
  }
  L2L3 ToGuest(const IpAddress& from, const IpAddress& to) const {
    return L2L3{cfg.gateway_mac, cfg.guest_mac, from, to};
  }
  // Whether a UDP payload of this size fits the guest's MTU.
  bool FitsGuest(size_t payload, bool v6) const {
    return payload + kUdpHeader + (v6 ? kIpv6Header : kIpv4Header) <= cfg.mtu;
  }

  // --- stack.cc ---
  void OnFrame(std::span<const uint8_t> bytes);

  // --- arp.cc ---
  void OnArp(const ArpPacket& a);

  // --- ndp.cc ---
  // True when f is a neighbour solicitation (answered or not).
  bool OnNeighborSolicit(const ParsedFrame& f);

  // --- icmp.cc ---
  void OnIcmp(const ParsedFrame& f);
  void RelayEcho(const ParsedFrame& f);
  void EchoReadable(UdpFlow* flow);

  // --- udp.cc ---
  void OnUdp(const ParsedFrame& f);
  UdpFlow* OpenUdp(const ParsedFrame& f, const TupleKey& tuple);
  void UdpReadable(UdpFlow* flow);
  void FlowIdle(UdpTable& table, UdpFlow* flow);
  void DnsUdp(const ParsedFrame& f);
  Status AddUdpInbound(UniqueFd sock, uint16_t guest_port, InboundAdmit admit);
  void UdpInboundReadable(UdpListener* l);
  void UdpPeerIdle(uint16_t port);

  // --- stack_tcp.cc ---
  void EmitTcp(TcpFlow& f, TcpHeader h, std::span<const uint8_t> payload);
  void SendStrayRst(const ParsedFrame& f);
  TcpFlow* NewTcpFlow(const TupleKey& tuple, const IpAddress& guest, uint16_t gport,
                      const IpAddress& remote, uint16_t rport);
  void RemoveTcp(TcpFlow* f);
  void ResetHost(TcpFlow* f);
  void OnTcp(const ParsedFrame& fr);
  void AuxTimer(TcpFlow* f);
  void UpdateWatch(TcpFlow* f);
  void HostReady(TcpFlow* f, short ready);
  void ReadHost(TcpFlow* f);
  void FlushToHost(TcpFlow* f);
  void HandleEvents(TcpFlow* f, uint32_t ev);
  void DnsTcp(TcpFlow* f);
  void InterceptReady(uint64_t id, UniqueFd stream);
  Status OpenInbound(UniqueFd host_fd, uint16_t guest_port, bool v6);
};

}  // namespace msb::net
