// NetworkAttachment: the supervisor's end of a sandbox's network. It listens
// on <sandbox dir>/net.sock before QEMU starts, accepts QEMU's stream netdev
// connection and runs a net::Stack on the supervisor's Dispatcher, fed by a
// net::StreamLink. Around the stack it holds what decides and answers:
//   - the policy (net/policy.h) compiled from the spec, asked at every new
//     flow; host-name rules see the names of this sandbox's own DNS answers
//     (its PinSet); denied flows are counted and logged, rate-limited;
//   - the DNS server at the gateway (net/dns_server.h);
//   - published ports: a host listener per port, each connection or datagram
//     opened towards the guest;
//   - the group: sandboxes of one project reach each other by name through
//     their supervisors. Each supervisor listens on <group dir>/<name>.sock;
//     a peer's flow arrives there with a one-line header ("tcp PORT FROM\n"),
//     is judged by this sandbox's ingress policy, answered "+" or "-", and
//     opened towards the guest. Both ends of that exchange run on the loop
//     (PeerHandshake): the connecting side's flow waits, as while a host
//     connect is in progress (net::FlowVerdict::intercept), for the answer;
//     the listening side reads the header as it arrives. Each side gives up
//     after kPeerHandshakeTimeout, so two supervisors connecting to each
//     other at once both get their answers. A sandbox's group address (GroupAddress) is
//     what its name resolves to for the others; no L2 segment is shared, and
//     another project's directory is never consulted.
// With secrets (vm/sandbox_secrets.h), every TCP flow the policy allows to
// the destination or the host is handed to the interception proxy
// (InterceptWith, net::FlowVerdict::intercept), which relays it untouched
// unless it is TLS to one of the secrets' hosts. Flows to group peers are
// not: they never leave the project.
// One attachment per VM start: a restarted VM gets a fresh stack (the old
// flows die with the old guest).
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>

#include "common/acceptor.h"
#include "common/memory_budget.h"

#include "net/address.h"
#include "net/dns_server.h"
#include "net/policy.h"

#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "common/dispatcher.h"
#include "common/fd.h"
#include "common/result.h"
#include "net/stack.h"
#include "net/stream.h"
#include "vm/secret_proxy.h"
#include "vm/spec.h"

namespace msb::vm {

// The stack's addresses from the spec; the error names the bad field.
Result<net::StackConfig> StackConfigFor(const VmNetwork& n);

// spec.boot with its "network" object filled from spec.network (the guest's
// addresses, the gateway as router and DNS server), or spec.boot unchanged.
nlohmann::json BootWithNetwork(const VmSpec& spec);

// The address a sandbox's name resolves to for the rest of its project:
// 10.201.x.y from a hash of the name (x, y in 1..254).
net::IpAddress GroupAddress(const std::string& name);

// Checks that every published port can be bound now: the error names the
// first one taken ("127.0.0.1:8000/tcp is already in use ...").
Status CheckPortsFree(const std::vector<VmNetwork::Port>& ports);

class NetworkAttachment {
 public:
  // dispatcher must outlive the attachment.
  NetworkAttachment(Dispatcher& dispatcher, VmNetwork network, std::string socket_path);
  ~NetworkAttachment();

  // Compiles the policy, starts the DNS server, binds the published ports and
  // the group socket, builds the stack and listens on the socket path
  // (replacing a stale one). Fails, naming what, when a port is taken.
  Status Start();
  // Before Start: the budget the stack's flows are charged to (must outlive
  // the attachment) and the most host sockets its flows may hold.
  void Limit(MemoryBudget* budget, size_t max_flow_fds) {
    budget_ = budget;
    max_flow_fds_ = max_flow_fds;
  }
  net::Stack* stack() { return stack_.get(); }
  bool connected() const { return link_ != nullptr && link_->open(); }
  // {"denied": N, "denied_by": {reason: N}, "tcp_flows": N, "udp_flows": N, "dns_queries": N}
  nlohmann::json StatusJson() const;

  // TCP flows the policy allows (but group flows) go through proxy from
  // now on; null: none do. The proxy must outlive the attachment's flows.
  void InterceptWith(SecretProxy* proxy) { proxy_ = proxy; }
  // Gate 2 of secret substitution: whether this sandbox's DNS answered
  // dest_ip (text) for name, and the pin is still valid.
  bool Pinned(std::string_view name, std::string_view dest_ip) const;

 private:
  struct Listener {
    UniqueFd fd;
    std::unique_ptr<Acceptor> accept;
    VmNetwork::Port port;
  };
  // One group exchange in progress: a header being read (incoming) or an
  // answer awaited (outgoing).
  struct PeerHandshake {
    uint64_t id = 0;
    UniqueFd fd;
    EventHandle watch, timeout;
    std::string line;  // incoming: the header so far
    net::FlowVerdict::InterceptDone done;  // outgoing: the flow's completion
  };
  static constexpr std::chrono::milliseconds kPeerHandshakeTimeout{2000};
  void OnAccept(UniqueFd fd);
  void OnGroupReadable(PeerHandshake* h);
  void AnswerGroup(PeerHandshake* h);
  void OnPeerAnswer(PeerHandshake* h, short ready);
  void EndHandshake(PeerHandshake* h);
  PeerHandshake* NewHandshake(UniqueFd fd);
  net::FlowVerdict Decide(const net::FlowKey& key);
  void Intercept(net::FlowVerdict* v, const net::IpAddress& judged, const net::FlowKey& key);
  void RefreshGroup();
  UniqueFd ConnectPeer(const std::string& peer);
  void OnPublishedAccept(Listener* l, UniqueFd fd);
  void OnGroupAccept(UniqueFd fd);
  Status BindPorts();
  Status ListenGroup();

  Dispatcher& dispatcher_;
  VmNetwork network_;
  std::string socket_path_;
  UniqueFd listen_;
  std::unique_ptr<Acceptor> accept_;
  MemoryBudget* budget_ = nullptr;
  size_t max_flow_fds_ = 0;
  std::unique_ptr<net::StreamLink> link_;
  std::unique_ptr<net::Stack> stack_;

  net::HostAddresses host_;
  EventHandle host_watch_;  // its address changes
  std::unique_ptr<net::Policy> policy_;
  net::PinSet pins_;
  std::unique_ptr<net::DenialLog> denials_;
  EventHandle denial_flush_;
  std::unique_ptr<net::DnsServer> dns_;
  std::vector<std::unique_ptr<Listener>> listeners_;
  UniqueFd group_listen_;
  std::unique_ptr<Acceptor> group_accept_;
  std::map<uint64_t, std::unique_ptr<PeerHandshake>> handshakes_;
  uint64_t next_handshake_ = 1;
  std::string group_socket_;
  std::map<std::string, net::IpAddress> group_;  // peers by name
  SecretProxy* proxy_ = nullptr;
};

}  // namespace msb::vm
