// Network rule parsing and canonical printing (network_rule.h).
#include "schema/network_rule.h"

#include <arpa/inet.h>

#include <algorithm>
#include <array>
#include <optional>
#include <vector>

#include "schema/diagnostics.h"
#include "schema/values.h"

namespace msb::schema {
namespace {

constexpr std::array<std::string_view, 9> kGroups = {
    "public", "private", "loopback", "link-local", "meta", "multicast", "host", "group", "any"};

std::string Quote(std::string_view s) { return "\"" + std::string(s) + "\""; }

// "10.1.2.3/24" -> "10.1.2.0/24"; nullopt when malformed.
std::optional<std::string> CanonicalCidr(std::string_view text, bool bracketed) {
  size_t slash = text.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  std::string addr(text.substr(0, slash));
  std::string_view prefix_text = text.substr(slash + 1);
  unsigned char buf[16] = {};
  int family = bracketed ? AF_INET6 : AF_INET;
  if (inet_pton(family, addr.c_str(), buf) != 1) return std::nullopt;
  int bits = family == AF_INET ? 32 : 128;
  auto prefix = ParseInteger(prefix_text, 0, bits);
  if (!prefix.ok() || prefix_text.find_first_not_of("0123456789") != std::string_view::npos) {
    return std::nullopt;
  }
  int p = static_cast<int>(*prefix);
  for (int i = 0; i < bits / 8; ++i) {
    int keep = std::min(8, std::max(0, p - i * 8));
    buf[i] &= static_cast<unsigned char>(0xff00 >> keep);
  }
  char out[INET6_ADDRSTRLEN];
  inet_ntop(family, buf, out, sizeof out);
  return std::string(out) + "/" + std::to_string(p);
}

}  // namespace

Result<NetworkRule> ParseNetworkRule(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return Error(ErrorCode::kInvalidArgument,
                 "invalid rule " + Quote(text) + ": " + why +
                     " (expected <action>[:<direction>]@<target>[:<proto>[:<ports>]])");
  };
  NetworkRule rule;
  size_t at = text.find('@');
  if (at == std::string_view::npos) return bad("missing '@' before the target");
  std::string_view head = text.substr(0, at), tail = text.substr(at + 1);

  size_t colon = head.find(':');
  std::string_view action = head.substr(0, colon);
  if (action == "allow") rule.action = NetworkRule::Action::kAllow;
  else if (action == "deny") rule.action = NetworkRule::Action::kDeny;
  else return bad("action " + Quote(action) + " must be allow or deny" + DidYouMean(action, {"allow", "deny"}));
  if (colon != std::string_view::npos) {
    std::string_view dir = head.substr(colon + 1);
    if (dir == "egress") rule.direction = NetworkRule::Direction::kEgress;
    else if (dir == "ingress") rule.direction = NetworkRule::Direction::kIngress;
    else return bad("direction " + Quote(dir) + " must be egress or ingress" + DidYouMean(dir, {"egress", "ingress"}));
  }

  std::string_view target;
  bool bracketed = false;
  if (!tail.empty() && tail[0] == '[') {
    size_t close = tail.find(']');
    if (close == std::string_view::npos) return bad("target is missing its closing ']'");
    target = tail.substr(1, close - 1);
    tail = tail.substr(close + 1);
    bracketed = true;
    if (!tail.empty() && tail[0] != ':') return bad("expected ':' after the target's ']'");
  } else {
    size_t c = tail.find(':');
    target = tail.substr(0, c);
    tail = c == std::string_view::npos ? std::string_view() : tail.substr(c);
  }
  if (target.empty()) return bad("target is empty (IPv6 addresses go in brackets: [::1])");

  if (bracketed) {
    if (target.find('/') != std::string_view::npos) {
      auto cidr = CanonicalCidr(target, true);
      if (!cidr) return bad("target " + Quote(target) + " is not an IPv6 CIDR");
      rule.target_kind = NetworkRule::TargetKind::kCidr;
      rule.target = *cidr;
    } else {
      auto ip = CanonicalIp(target);
      if (!ip || target.find(':') == std::string_view::npos) {
        return bad("target " + Quote(target) + " in brackets is not an IPv6 address");
      }
      rule.target_kind = NetworkRule::TargetKind::kIp;
      rule.target = *ip;
    }
  } else if (std::find(kGroups.begin(), kGroups.end(), target) != kGroups.end()) {
    rule.target_kind = NetworkRule::TargetKind::kGroup;
    rule.target = std::string(target);
  } else if (target.find('/') != std::string_view::npos) {
    auto cidr = CanonicalCidr(target, false);
    if (!cidr) return bad("target " + Quote(target) + " is not an IPv4 CIDR (a.b.c.d/0-32)");
    rule.target_kind = NetworkRule::TargetKind::kCidr;
    rule.target = *cidr;
  } else if (auto ip = CanonicalIp(target)) {
    rule.target_kind = NetworkRule::TargetKind::kIp;
    rule.target = *ip;
  } else if (target.substr(0, 2) == "*.") {
    auto host = CanonicalHostName(target.substr(2));
    if (!host) return bad("target " + Quote(target) + ": " + Quote(target.substr(2)) + " is not a domain name");
    rule.target_kind = NetworkRule::TargetKind::kDomainSuffix;
    rule.target = *host;
  } else {
    auto host = CanonicalHostName(target);
    if (!host) {
      return bad("target " + Quote(target) +
                 " is not a group, IP address, CIDR, host name or *.domain");
    }
    std::vector<std::string_view> groups(kGroups.begin(), kGroups.end());
    // A one-label name next to a group's name is most likely a typo of it.
    if (target.find('.') == std::string_view::npos && !Suggest(target, groups).empty()) {
      return bad("target " + Quote(target) + " is not a group" + DidYouMean(target, groups) +
                 " (end a one-label host name with '.')");
    }
    rule.target_kind = NetworkRule::TargetKind::kHost;
    rule.target = *host;
  }

  if (tail.empty()) return rule;
  tail.remove_prefix(1);  // ':'
  size_t c = tail.find(':');
  std::string_view proto = tail.substr(0, c);
  if (proto == "tcp") rule.protocol = Protocol::kTcp;
  else if (proto == "udp") rule.protocol = Protocol::kUdp;
  else if (proto == "icmp") rule.protocol = Protocol::kIcmp;
  else if (proto == "any") rule.protocol = Protocol::kAny;
  else return bad("proto " + Quote(proto) + " must be tcp, udp, icmp or any" + DidYouMean(proto, {"tcp", "udp", "icmp", "any"}));
  if (c == std::string_view::npos) return rule;

  std::string_view ports = tail.substr(c + 1);
  if (rule.protocol == Protocol::kIcmp) return bad("ports: icmp has no ports");
  if (ports.empty()) return bad("ports are empty (expected 443, 8000-8100 or 80,443)");
  size_t start = 0;
  for (;;) {
    size_t comma = ports.find(',', start);
    std::string_view item = ports.substr(start, comma == std::string_view::npos ? comma : comma - start);
    size_t dash = item.find('-');
    std::string_view lo = item.substr(0, dash);
    std::string_view hi = dash == std::string_view::npos ? lo : item.substr(dash + 1);
    auto first = ParseInteger(lo, 1, 65535);
    auto last = ParseInteger(hi, 1, 65535);
    auto digits = [](std::string_view s) {
      return !s.empty() && s.find_first_not_of("0123456789") == std::string_view::npos;
    };
    bool digits_only = digits(lo) && digits(hi);
    if (!first.ok() || !last.ok() || !digits_only) {
      return bad("ports " + Quote(item) + " must be a port from 1 to 65535 or a range like 8000-8100");
    }
    if (*first > *last) return bad("ports range " + Quote(item) + " runs backwards");
    rule.ports.push_back({static_cast<uint16_t>(*first), static_cast<uint16_t>(*last)});
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return rule;
}

std::string ToString(const NetworkRule& rule) {
  std::string out = std::string(ToString(rule.action)) + ":" + ToString(rule.direction) + "@";
  bool v6 = rule.target.find(':') != std::string::npos;
  switch (rule.target_kind) {
    case NetworkRule::TargetKind::kDomainSuffix: out += "*." + rule.target; break;
    case NetworkRule::TargetKind::kIp:
    case NetworkRule::TargetKind::kCidr: out += v6 ? "[" + rule.target + "]" : rule.target; break;
    case NetworkRule::TargetKind::kGroup:
    case NetworkRule::TargetKind::kHost:
      out += rule.target;
      // A one-label host that could read as a group keeps its explicit dot.
      if (rule.target_kind == NetworkRule::TargetKind::kHost && rule.target.find('.') == std::string::npos) {
        out += '.';
      }
      break;
  }
  out += ":";
  out += ToString(rule.protocol);
  for (size_t i = 0; i < rule.ports.size(); ++i) {
    out += i == 0 ? ":" : ",";
    out += std::to_string(rule.ports[i].first);
    if (rule.ports[i].last != rule.ports[i].first) out += "-" + std::to_string(rule.ports[i].last);
  }
  return out;
}

std::optional<NetworkPolicy> ParseNetworkPolicy(std::string_view name) {
  for (auto p : {NetworkPolicy::kNone, NetworkPolicy::kGroup, NetworkPolicy::kPublic, NetworkPolicy::kAny}) {
    if (name == ToString(p)) return p;
  }
  return std::nullopt;
}

Result<Network> NetworkFromCanonical(std::string_view policy, const std::vector<std::string>& rules,
                                     bool rebind_protection) {
  Network n;
  auto profile = ParseNetworkPolicy(policy);
  if (!profile) {
    return Error(ErrorCode::kInvalidArgument,
                 "network.policy " + Quote(policy) + " is not none, group, public or any");
  }
  n.policy = *profile;
  for (size_t i = 0; i < rules.size(); ++i) {
    auto rule = ParseNetworkRule(rules[i]);
    if (!rule.ok()) return rule.error().Wrap("network rule " + std::to_string(i + 1));
    n.rules.push_back(std::move(*rule));
  }
  n.rebind_protection = rebind_protection;
  return n;
}

}  // namespace msb::schema
