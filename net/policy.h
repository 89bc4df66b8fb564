// The network policy of one sandbox: a schema::Network (profile + rules)
// compiled into a Policy that decides flows, the pin set that ties DNS names
// to the addresses this sandbox's DNS answered, and the accounting of denied
// flows. Not the packet path: the stack asks Decide() once per new flow.
//
// Semantics (first matching rule wins, then the profile):
//  - Addresses are judged canonical (address.h): an IPv6 form that embeds an
//    IPv4 address is that IPv4 address. 0.0.0.0 and :: are never reachable,
//    whatever the rules say. Resolve() is the one place that classifies a
//    destination (gateway, group member, host, static class) and it does so
//    on the canonical address.
//  - The gateway and group members are reached only at their own addresses:
//    an embedded form of them (::ffff:10.0.2.2, 64:ff9b::a00:202, a 6to4 or
//    Teredo address carrying a group address) is refused, whatever the rules
//    say: the stack answers only the literal gateway and a group flow is
//    carried by the peer's supervisor, so such a form would otherwise reach
//    the host's own network under the embedded IPv4 address.
//  - DNS (udp/tcp 53) to the gateway's own address is always allowed, before
//    the rules: the stack answers it itself (dns_server.h).
//  - The class of a destination: the gateway (the address standing for the
//    host), a group member (the project's other sandboxes, set by the
//    supervisor), else the static class (address.h); a non-loopback address
//    of the host's own interfaces is class host.
//  - Guarded classes reach this machine or cloud credentials: gateway, host,
//    meta, loopback. Broad targets never allow them: the `any` group and
//    profile, CIDR and host-name rules do not match meta, host or gateway;
//    `any` and host-name rules do not match loopback either. Only their
//    group (`host`, `meta`, `loopback`) or an exact IP rule allows them (the
//    gateway only through `host`). Deny rules match broadly.
//  - A connection to the gateway allowed by a `host` rule is redirected to
//    the host's 127.0.0.1 on the same port (Decision::redirect_to_host_loopback).
//  - Host-name rules (`api.example.com`, `*.example.com`) match a flow only
//    when one of flow.names (the pin set's names for the address) matches.
//    For the DNS rebinding check (MayReach) they never vouch for a private
//    or link-local answer: such an answer is kept only when an IP, CIDR or
//    group rule (`allow@10.1.0.0/16`, `allow@private`) or the profile allows
//    its range.
//  - Which names the DNS server may forward upstream (MayResolve): under the
//    public and any profiles, every name; under none and group, only a name
//    some egress allow rule could allow (a host-name rule matching it, or an
//    IP, CIDR or group rule other than `group`, whose addresses any name may
//    resolve to). The rest is refused without a query leaving the host.
//  - Profiles: none = nothing (but DNS to the gateway); group = group
//    members only; public = the public class and group members; any =
//    everything except the guarded classes.
//  - Ingress (connections into the guest, matched on the source address):
//    rules with direction ingress, then: published ports are allowed, group
//    members are allowed unless the profile is none, the rest is denied.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "net/address.h"
#include "schema/model.h"

namespace msb::net {

// What a flow's destination is to this sandbox: the static classes plus the
// two the context decides.
enum class PeerKind : int { kStatic = 0, kGateway = 1, kGroup = 2 };

struct EgressFlow {
  IpAddress dest;
  schema::Protocol proto = schema::Protocol::kTcp;  // kTcp, kUdp or kIcmp
  uint16_t port = 0;                                // 0 for icmp
  // Names this sandbox's DNS resolved to dest (PinSet::NamesFor).
  std::vector<std::string> names;
};

struct IngressFlow {
  IpAddress source;
  schema::Protocol proto = schema::Protocol::kTcp;
  uint16_t port = 0;       // the guest port
  bool published = false;  // arrived through a published port's host listener
};

struct Decision {
  bool allow = false;
  // "rule 2 (deny:egress@10.0.0.0/8:any)" or "profile public: 10.1.2.3 is private".
  std::string reason;
  // The reason without the address, for counters: "rule 2", "profile public: private".
  std::string key;
  int rule = 0;  // 1-based index of the deciding rule; 0 when the profile or a fixed rule decided
  // The gateway, allowed by a `host` rule: connect to the host's 127.0.0.1.
  bool redirect_to_host_loopback = false;
  // Where the stack connects: the canonical destination, or 127.0.0.1.
  IpAddress connect_to;
  // What the destination is (egress) or the source (ingress), judged on the
  // canonical address: a kGroup flow is carried by the peer's supervisor.
  PeerKind kind = PeerKind::kStatic;
};

// The addresses the supervisor knows and the policy does not own.
struct PolicyContext {
  std::vector<IpAddress> gateways;           // the guest's gateway (v4 and v6)
  const HostAddresses* host = nullptr;       // must outlive the Policy; null: none
  std::vector<IpAddress> group_members;      // the project's other sandboxes
};

class Policy {
 public:
  // Errors: a rule target that does not parse as its kind (hand-built models).
  static Result<Policy> Compile(const schema::Network& network, PolicyContext context);

  Decision Decide(const EgressFlow& flow) const;
  Decision Decide(const IngressFlow& flow) const;
  // Whether some egress flow (any proto and port) to ip may be allowed, given
  // the names it was resolved from: the DNS rebinding check. The Decision
  // names the rule or profile that made it so.
  Decision MayReach(const IpAddress& ip, const std::vector<std::string>& names) const;
  // Whether the DNS server may forward a query for name upstream (see the
  // semantics above); the Decision says which rule or profile decided.
  Decision MayResolve(std::string_view name) const;

  // The class of ip in this context, e.g. "private", "gateway", "group".
  std::string ClassName(const IpAddress& ip) const;

  void SetGroupMembers(std::vector<IpAddress> members);
  schema::NetworkPolicy profile() const { return profile_; }
  bool rebind_protection() const { return rebind_protection_; }

 private:
  struct Rule {
    schema::NetworkRule rule;
    Cidr cidr;  // kIp and kCidr targets, canonicalised
    std::string text;
  };
  struct Peer {
    IpAddress canonical;
    PeerKind kind = PeerKind::kStatic;
    AddressClass cls = AddressClass::kPublic;  // kStatic only (kHost included)
    std::string_view range;
    bool embedded = false;  // the address was an IPv6 form of canonical
  };
  Peer Resolve(const IpAddress& ip) const;
  // The refusal of an embedded form of the gateway or a group member, if it is one.
  std::optional<Decision> RefuseEmbedded(const IpAddress& original, const Peer& peer) const;
  bool TargetMatches(const Rule& r, const Peer& peer, const std::vector<std::string>& names) const;
  std::string PeerText(const IpAddress& original, const Peer& peer) const;
  Decision FromRule(size_t index, const Peer& peer, schema::NetworkRule::Direction dir) const;
  Decision FromProfile(bool allow, const IpAddress& original, const Peer& peer, bool ingress) const;

  schema::NetworkPolicy profile_ = schema::NetworkPolicy::kPublic;
  bool rebind_protection_ = true;
  std::vector<Rule> rules_;
  std::vector<IpAddress> gateways_;  // canonical, sorted
  std::vector<IpAddress> group_;     // canonical, sorted
  const HostAddresses* host_ = nullptr;
};

// Lower-case name without a trailing dot; the form PinSet and rules compare.
std::string NormalizeName(std::string_view name);

// Names resolved by this sandbox's DNS, both ways: name -> addresses and
// address -> names, each pin expiring after max(ttl, min_ttl) (capped at
// max_ttl). Bounded: at max_pins the pin expiring first is evicted. Times
// are passed in (a fake clock in tests). Not thread-safe.
class PinSet {
 public:
  using Clock = std::chrono::steady_clock;
  struct Options {
    size_t max_pins = 8192;
    std::chrono::seconds min_ttl{60};
    std::chrono::seconds max_ttl{3600};
  };
  PinSet() : PinSet(Options{}) {}
  explicit PinSet(Options options) : options_(options) {}

  // Pins (name, ip) until now + clamp(ttl); re-pinning extends, never shortens.
  void Pin(std::string_view name, const IpAddress& ip, std::chrono::seconds ttl, Clock::time_point now);
  std::vector<std::string> NamesFor(const IpAddress& ip, Clock::time_point now) const;
  std::vector<IpAddress> AddressesFor(std::string_view name, Clock::time_point now) const;
  // Drops expired pins.
  void Expire(Clock::time_point now);
  size_t size() const { return pins_.size(); }
  const Options& options() const { return options_; }

 private:
  using Key = std::pair<std::string, IpAddress>;
  Options options_;
  std::map<Key, Clock::time_point> pins_;
  std::map<IpAddress, std::set<std::string>> by_ip_;
  std::set<std::pair<Clock::time_point, Key>> by_expiry_;
  void Remove(Key key);  // by value: callers pass keys stored in the maps it erases from
};

// Counters of denied flows per Decision::key, and a rate-limited log: at most
// max_lines_per_second lines per one-second window; the rest are counted and
// reported as one "suppressed K denied flows" line when the next line is
// written or Flush() is called in a later window. The sink defaults to
// MSB_LOG(kWarn, "net").
class DenialLog {
 public:
  using Clock = std::chrono::steady_clock;
  using Sink = std::function<void(const std::string& line)>;
  explicit DenialLog(int max_lines_per_second = 10, Sink sink = {});

  // flow_text: "tcp 10.1.2.3:5432"; the line is "deny tcp 10.1.2.3:5432: <reason>".
  void Record(const Decision& decision, const std::string& flow_text, Clock::time_point now);
  void Flush(Clock::time_point now);
  const std::map<std::string, uint64_t>& counts() const { return counts_; }
  uint64_t total() const { return total_; }

 private:
  void Emit(const std::string& line);
  int max_lines_;
  Sink sink_;
  std::map<std::string, uint64_t> counts_;
  uint64_t total_ = 0;
  Clock::time_point window_start_{};
  int lines_in_window_ = 0;
  uint64_t suppressed_ = 0;
};

// "tcp 10.1.2.3:5432", "udp [2001:db8::1]:53", "icmp 10.1.2.3".
std::string FlowText(const IpAddress& ip, schema::Protocol proto, uint16_t port);

}  // namespace msb::net
