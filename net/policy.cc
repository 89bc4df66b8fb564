// Policy compilation and decisions, the pin set and denial accounting
// (policy.h holds the semantics).
#include "net/policy.h"

#include <algorithm>

#include "common/log.h"
#include "schema/network_rule.h"

namespace msb::net {

using schema::NetworkRule;
using schema::Protocol;

namespace {

bool IsGuarded(PeerKind kind, AddressClass cls) {
  if (kind == PeerKind::kGateway) return true;
  if (kind == PeerKind::kGroup) return false;
  return cls == AddressClass::kHost || cls == AddressClass::kMeta || cls == AddressClass::kLoopback ||
         cls == AddressClass::kUnspecified;
}

bool NameMatches(const NetworkRule& r, const std::vector<std::string>& names) {
  for (const std::string& raw : names) {
    std::string n = NormalizeName(raw);
    if (r.target_kind == NetworkRule::TargetKind::kHost && n == r.target) return true;
    if (r.target_kind == NetworkRule::TargetKind::kDomainSuffix && n.size() > r.target.size() + 1 &&
        n.compare(n.size() - r.target.size(), r.target.size(), r.target) == 0 &&
        n[n.size() - r.target.size() - 1] == '.') {
      return true;
    }
  }
  return false;
}

bool ProtoPortMatch(const NetworkRule& r, Protocol proto, uint16_t port) {
  if (r.protocol != Protocol::kAny && r.protocol != proto) return false;
  if (r.ports.empty()) return true;
  if (proto == Protocol::kIcmp) return false;
  for (const auto& range : r.ports) {
    if (port >= range.first && port <= range.last) return true;
  }
  return false;
}

bool Sorted(const std::vector<IpAddress>& v, const IpAddress& ip) {
  return std::binary_search(v.begin(), v.end(), ip);
}

std::vector<IpAddress> CanonicalSorted(std::vector<IpAddress> v) {
  for (auto& a : v) a = Canonicalize(a);
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
  return v;
}

}  // namespace

std::string NormalizeName(std::string_view name) {
  std::string out(name);
  while (!out.empty() && out.back() == '.') out.pop_back();
  for (char& c : out) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return out;
}

std::string FlowText(const IpAddress& ip, Protocol proto, uint16_t port) {
  std::string out = std::string(schema::ToString(proto)) + " ";
  if (proto == Protocol::kIcmp) return out + ip.ToString();
  return out + (ip.is_v6() ? "[" + ip.ToString() + "]" : ip.ToString()) + ":" + std::to_string(port);
}

Result<Policy> Policy::Compile(const schema::Network& network, PolicyContext context) {
  Policy p;
  p.profile_ = network.policy;
  p.rebind_protection_ = network.rebind_protection;
  p.gateways_ = CanonicalSorted(std::move(context.gateways));
  p.group_ = CanonicalSorted(std::move(context.group_members));
  p.host_ = context.host;
  for (size_t i = 0; i < network.rules.size(); ++i) {
    Rule r;
    r.rule = network.rules[i];
    r.text = schema::ToString(r.rule);
    if (r.rule.target_kind == NetworkRule::TargetKind::kIp ||
        r.rule.target_kind == NetworkRule::TargetKind::kCidr) {
      auto cidr = Cidr::Parse(r.rule.target);
      if (!cidr) {
        return Error(ErrorCode::kInvalidArgument, "network rule " + std::to_string(i + 1) + " (" + r.text +
                                                      "): target " + r.rule.target +
                                                      " is not an IP address or CIDR");
      }
      // A bare IPv6 form of an IPv4 address is that IPv4 address.
      if (cidr->prefix_len() == (cidr->base().is_v4() ? 32 : 128)) {
        IpAddress c = Canonicalize(cidr->base());
        cidr = Cidr(c, c.is_v4() ? 32 : 128);
      }
      r.cidr = *cidr;
    } else if (r.rule.target_kind == NetworkRule::TargetKind::kHost ||
               r.rule.target_kind == NetworkRule::TargetKind::kDomainSuffix) {
      r.rule.target = NormalizeName(r.rule.target);
      if (r.rule.target.empty()) {
        return Error(ErrorCode::kInvalidArgument,
                     "network rule " + std::to_string(i + 1) + " (" + r.text + "): the host name is empty");
      }
    }
    p.rules_.push_back(std::move(r));
  }
  return p;
}

void Policy::SetGroupMembers(std::vector<IpAddress> members) { group_ = CanonicalSorted(std::move(members)); }

Policy::Peer Policy::Resolve(const IpAddress& ip) const {
  Classification c = Classify(ip);
  Peer peer;
  peer.canonical = c.canonical;
  peer.cls = c.cls;
  peer.range = c.range;
  peer.embedded = c.canonical != ip;
  if (c.cls == AddressClass::kUnspecified) return peer;
  if (Sorted(gateways_, c.canonical)) {
    peer.kind = PeerKind::kGateway;
  } else if (Sorted(group_, c.canonical)) {
    peer.kind = PeerKind::kGroup;
  } else if (c.cls != AddressClass::kMeta && c.cls != AddressClass::kLoopback && host_ != nullptr &&
             host_->Contains(c.canonical)) {
    peer.cls = AddressClass::kHost;
    peer.range = "an address of this host";
  }
  return peer;
}

std::string Policy::ClassName(const IpAddress& ip) const {
  Peer peer = Resolve(ip);
  if (peer.kind == PeerKind::kGateway) return "gateway";
  if (peer.kind == PeerKind::kGroup) return "group";
  return ToString(peer.cls);
}

bool Policy::TargetMatches(const Rule& r, const Peer& peer, const std::vector<std::string>& names) const {
  bool allow = r.rule.action == NetworkRule::Action::kAllow;
  bool guarded = IsGuarded(peer.kind, peer.cls);
  bool stat = peer.kind == PeerKind::kStatic;
  switch (r.rule.target_kind) {
    case NetworkRule::TargetKind::kGroup: {
      const std::string& g = r.rule.target;
      if (g == "any") return !allow || !guarded;
      if (g == "host") return peer.kind == PeerKind::kGateway || (stat && peer.cls == AddressClass::kHost);
      if (g == "group") return peer.kind == PeerKind::kGroup;
      if (!stat) return false;
      if (g == "public") return peer.cls == AddressClass::kPublic;
      if (g == "private") return peer.cls == AddressClass::kPrivate;
      if (g == "loopback") return peer.cls == AddressClass::kLoopback;
      if (g == "link-local") return peer.cls == AddressClass::kLinkLocal;
      if (g == "meta") return peer.cls == AddressClass::kMeta;
      if (g == "multicast") return peer.cls == AddressClass::kMulticast;
      return false;
    }
    case NetworkRule::TargetKind::kIp:
      if (!r.cidr.Contains(peer.canonical)) return false;
      return !allow || peer.kind != PeerKind::kGateway;
    case NetworkRule::TargetKind::kCidr:
      if (!r.cidr.Contains(peer.canonical)) return false;
      return !allow || !(peer.kind == PeerKind::kGateway || peer.cls == AddressClass::kHost ||
                         peer.cls == AddressClass::kMeta);
    case NetworkRule::TargetKind::kHost:
    case NetworkRule::TargetKind::kDomainSuffix:
      if (allow && guarded) return false;
      return NameMatches(r.rule, names);
  }
  return false;
}

std::string Policy::PeerText(const IpAddress& original, const Peer& peer) const {
  std::string out = original.ToString();
  if (peer.canonical != original) out += " (as " + peer.canonical.ToString() + ")";
  out += " is ";
  if (peer.kind == PeerKind::kGateway) return out + "the gateway";
  if (peer.kind == PeerKind::kGroup) return out + "a group member";
  return out + ToString(peer.cls);
}

std::optional<Decision> Policy::RefuseEmbedded(const IpAddress& original, const Peer& peer) const {
  if (!peer.embedded || (peer.kind != PeerKind::kGateway && peer.kind != PeerKind::kGroup)) return std::nullopt;
  Decision d;
  d.kind = peer.kind;
  d.connect_to = peer.canonical;
  bool gw = peer.kind == PeerKind::kGateway;
  d.key = gw ? "embedded gateway" : "embedded group";
  d.reason = PeerText(original, peer) + " in an embedded IPv6 form; only " + peer.canonical.ToString() +
             " itself reaches " + (gw ? "it" : "that sandbox");
  return d;
}

Decision Policy::FromRule(size_t index, const Peer& peer, NetworkRule::Direction dir) const {
  const Rule& r = rules_[index];
  Decision d;
  d.kind = peer.kind;
  d.allow = r.rule.action == NetworkRule::Action::kAllow;
  d.rule = static_cast<int>(index + 1);
  d.key = "rule " + std::to_string(index + 1);
  d.reason = d.key + " (" + r.text + ")";
  d.connect_to = peer.canonical;
  if (d.allow && dir == NetworkRule::Direction::kEgress && peer.kind == PeerKind::kGateway) {
    d.redirect_to_host_loopback = true;
    d.connect_to = IpAddress::V4(127, 0, 0, 1);
  }
  return d;
}

Decision Policy::FromProfile(bool allow, const IpAddress& original, const Peer& peer, bool ingress) const {
  Decision d;
  d.allow = allow;
  d.kind = peer.kind;
  d.connect_to = peer.canonical;
  std::string cls = peer.kind == PeerKind::kGateway ? "gateway"
                    : peer.kind == PeerKind::kGroup ? "group"
                                                    : ToString(peer.cls);
  std::string prefix = std::string("profile ") + schema::ToString(profile_) + ": ";
  d.key = prefix + (ingress ? "ingress from " : "") + cls;
  d.reason = prefix + (ingress ? "ingress from " : "") + PeerText(original, peer);
  return d;
}

Decision Policy::Decide(const EgressFlow& flow) const {
  Peer peer = Resolve(flow.dest);
  if (peer.cls == AddressClass::kUnspecified) {
    Decision d;
    d.key = "unspecified";
    d.reason = flow.dest.ToString() + " is the unspecified address, never reachable";
    d.connect_to = peer.canonical;
    return d;
  }
  if (auto refused = RefuseEmbedded(flow.dest, peer)) return *refused;
  if (peer.kind == PeerKind::kGateway && flow.port == 53 &&
      (flow.proto == Protocol::kUdp || flow.proto == Protocol::kTcp)) {
    Decision d;
    d.allow = true;
    d.kind = peer.kind;
    d.key = "dns";
    d.reason = "DNS to the gateway";
    d.connect_to = peer.canonical;
    return d;
  }
  for (size_t i = 0; i < rules_.size(); ++i) {
    const Rule& r = rules_[i];
    if (r.rule.direction != NetworkRule::Direction::kEgress) continue;
    if (!ProtoPortMatch(r.rule, flow.proto, flow.port)) continue;
    if (TargetMatches(r, peer, flow.names)) return FromRule(i, peer, NetworkRule::Direction::kEgress);
  }
  bool allow = false;
  switch (profile_) {
    case schema::NetworkPolicy::kNone: allow = false; break;
    case schema::NetworkPolicy::kGroup: allow = peer.kind == PeerKind::kGroup; break;
    case schema::NetworkPolicy::kPublic:
      allow = peer.kind == PeerKind::kGroup ||
              (peer.kind == PeerKind::kStatic && peer.cls == AddressClass::kPublic);
      break;
    case schema::NetworkPolicy::kAny: allow = !IsGuarded(peer.kind, peer.cls); break;
  }
  return FromProfile(allow, flow.dest, peer, false);
}

Decision Policy::MayReach(const IpAddress& ip, const std::vector<std::string>& names) const {
  Peer peer = Resolve(ip);
  if (peer.cls == AddressClass::kUnspecified) {
    Decision d;
    d.key = "unspecified";
    d.reason = ip.ToString() + " is the unspecified address, never reachable";
    return d;
  }
  if (auto refused = RefuseEmbedded(ip, peer)) return *refused;
  // A host-name rule does not vouch for a private or link-local answer: that
  // is what rebinding looks like. Only a rule naming the range does.
  bool name_rules_vouch = !(peer.kind == PeerKind::kStatic &&
                            (peer.cls == AddressClass::kPrivate || peer.cls == AddressClass::kLinkLocal));
  for (size_t i = 0; i < rules_.size(); ++i) {
    const Rule& r = rules_[i];
    if (r.rule.direction != NetworkRule::Direction::kEgress) continue;
    bool by_name = r.rule.target_kind == NetworkRule::TargetKind::kHost ||
                   r.rule.target_kind == NetworkRule::TargetKind::kDomainSuffix;
    if (by_name && r.rule.action == NetworkRule::Action::kAllow && !name_rules_vouch) continue;
    if (!TargetMatches(r, peer, names)) continue;
    // An allow rule allows some flow; a deny rule ends the search only when
    // it covers every protocol and port.
    if (r.rule.action == NetworkRule::Action::kAllow ||
        (r.rule.protocol == Protocol::kAny && r.rule.ports.empty())) {
      return FromRule(i, peer, NetworkRule::Direction::kEgress);
    }
  }
  // No DNS exception here: DNS to the gateway is no reason to hand out its address.
  bool allow = false;
  switch (profile_) {
    case schema::NetworkPolicy::kNone: allow = false; break;
    case schema::NetworkPolicy::kGroup: allow = peer.kind == PeerKind::kGroup; break;
    case schema::NetworkPolicy::kPublic:
      allow = peer.kind == PeerKind::kGroup ||
              (peer.kind == PeerKind::kStatic && peer.cls == AddressClass::kPublic);
      break;
    case schema::NetworkPolicy::kAny: allow = !IsGuarded(peer.kind, peer.cls); break;
  }
  return FromProfile(allow, ip, peer, false);
}

Decision Policy::MayResolve(std::string_view name) const {
  Decision d;
  std::string prefix = std::string("profile ") + schema::ToString(profile_);
  if (profile_ == schema::NetworkPolicy::kPublic || profile_ == schema::NetworkPolicy::kAny) {
    d.allow = true;
    d.key = prefix;
    d.reason = prefix + " forwards every name";
    return d;
  }
  const std::vector<std::string> names = {NormalizeName(name)};
  for (size_t i = 0; i < rules_.size(); ++i) {
    const Rule& r = rules_[i];
    if (r.rule.direction != NetworkRule::Direction::kEgress || r.rule.action != NetworkRule::Action::kAllow) {
      continue;
    }
    bool matches = false;
    switch (r.rule.target_kind) {
      case NetworkRule::TargetKind::kHost:
      case NetworkRule::TargetKind::kDomainSuffix: matches = NameMatches(r.rule, names); break;
      case NetworkRule::TargetKind::kIp:
      case NetworkRule::TargetKind::kCidr: matches = true; break;
      case NetworkRule::TargetKind::kGroup: matches = r.rule.target != "group"; break;
    }
    if (matches) {
      d.allow = true;
      d.rule = static_cast<int>(i + 1);
      d.key = "rule " + std::to_string(i + 1);
      d.reason = d.key + " (" + r.text + ") may allow an address of " + names[0];
      return d;
    }
  }
  d.key = prefix + ": dns";
  d.reason = prefix + ": no rule allows a flow to " + names[0] + ", so it is not resolved";
  return d;
}

Decision Policy::Decide(const IngressFlow& flow) const {
  Peer peer = Resolve(flow.source);
  for (size_t i = 0; i < rules_.size(); ++i) {
    const Rule& r = rules_[i];
    if (r.rule.direction != NetworkRule::Direction::kIngress) continue;
    if (!ProtoPortMatch(r.rule, flow.proto, flow.port)) continue;
    if (TargetMatches(r, peer, {})) return FromRule(i, peer, NetworkRule::Direction::kIngress);
  }
  if (flow.published) {
    Decision d;
    d.allow = true;
    d.key = "published";
    d.reason = "published port " + std::to_string(flow.port) + "/" + schema::ToString(flow.proto);
    d.connect_to = peer.canonical;
    d.kind = peer.kind;
    return d;
  }
  bool allow = peer.kind == PeerKind::kGroup && profile_ != schema::NetworkPolicy::kNone;
  return FromProfile(allow, flow.source, peer, true);
}

// ---- PinSet ----

void PinSet::Remove(Key key) {
  auto it = pins_.find(key);
  if (it == pins_.end()) return;
  by_expiry_.erase({it->second, key});
  auto ip = by_ip_.find(key.second);
  if (ip != by_ip_.end()) {
    ip->second.erase(key.first);
    if (ip->second.empty()) by_ip_.erase(ip);
  }
  pins_.erase(it);
}

void PinSet::Pin(std::string_view name, const IpAddress& ip, std::chrono::seconds ttl,
                 Clock::time_point now) {
  if (options_.max_pins == 0) return;
  std::string n = NormalizeName(name);
  if (n.empty()) return;
  Key key{n, Canonicalize(ip)};
  auto life = std::clamp(ttl, options_.min_ttl, std::max(options_.min_ttl, options_.max_ttl));
  Clock::time_point expiry = now + life;
  auto it = pins_.find(key);
  if (it != pins_.end()) {
    if (it->second >= expiry) return;
    Remove(key);
  } else if (pins_.size() >= options_.max_pins) {
    Remove(by_expiry_.begin()->second);
  }
  pins_.emplace(key, expiry);
  by_expiry_.insert({expiry, key});
  by_ip_[key.second].insert(key.first);
}

std::vector<std::string> PinSet::NamesFor(const IpAddress& ip, Clock::time_point now) const {
  std::vector<std::string> out;
  IpAddress c = Canonicalize(ip);
  auto it = by_ip_.find(c);
  if (it == by_ip_.end()) return out;
  for (const std::string& n : it->second) {
    auto p = pins_.find({n, c});
    if (p != pins_.end() && p->second > now) out.push_back(n);
  }
  return out;
}

std::vector<IpAddress> PinSet::AddressesFor(std::string_view name, Clock::time_point now) const {
  std::vector<IpAddress> out;
  std::string n = NormalizeName(name);
  for (auto it = pins_.lower_bound({n, IpAddress()}); it != pins_.end() && it->first.first == n; ++it) {
    if (it->second > now) out.push_back(it->first.second);
  }
  return out;
}

void PinSet::Expire(Clock::time_point now) {
  while (!by_expiry_.empty() && by_expiry_.begin()->first <= now) {
    Key key = by_expiry_.begin()->second;
    Remove(key);
  }
}

// ---- DenialLog ----

DenialLog::DenialLog(int max_lines_per_second, Sink sink)
    : max_lines_(std::max(1, max_lines_per_second)), sink_(std::move(sink)) {}

void DenialLog::Emit(const std::string& line) {
  if (sink_) {
    sink_(line);
  } else {
    MSB_LOG(kWarn, "net") << line;
  }
}

void DenialLog::Flush(Clock::time_point now) {
  if (now - window_start_ < std::chrono::seconds(1)) return;
  if (suppressed_ > 0) {
    Emit("suppressed " + std::to_string(suppressed_) + " denied flows");
    suppressed_ = 0;
  }
  window_start_ = now;
  lines_in_window_ = 0;
}

void DenialLog::Record(const Decision& decision, const std::string& flow_text, Clock::time_point now) {
  if (decision.allow) return;
  ++counts_[decision.key];
  ++total_;
  Flush(now);
  if (lines_in_window_ < max_lines_) {
    ++lines_in_window_;
    Emit("deny " + flow_text + ": " + decision.reason);
  } else {
    ++suppressed_;
  }
}

}  // namespace msb::net
