// A sandbox's network policy as a NetworkPolicy and a CiliumNetworkPolicy
// (kube_network.h has the rules of the translation). The address ranges
// come from net/address.h's table, never a copy of it.
#include "orchestrator/kube_network.h"

#include <algorithm>
#include <optional>
#include <set>

#include "net/address.h"
#include "schema/network_rule.h"

namespace msb::orchestrator {
namespace {

using nlohmann::json;
using net::AddressClass;
using net::Cidr;
using schema::NetworkRule;

// Whether inner lies within outer (equal included).
bool Within(const Cidr& inner, const Cidr& outer) {
  return outer.base().family() == inner.base().family() && outer.prefix_len() <= inner.prefix_len() &&
         outer.Contains(inner.base());
}

struct Block {
  Cidr cidr;
  std::vector<Cidr> except;

  // Adds d to except when it lies strictly inside the block and in no
  // exception already there.
  void Except(const Cidr& d) {
    if (!Within(d, cidr) || d.prefix_len() == cidr.prefix_len()) return;
    for (const Cidr& e : except) {
      if (Within(d, e)) return;
    }
    except.push_back(d);
  }
};

// A NetworkPolicy peer: the project's pods, or an ipBlock.
struct Peer {
  bool group = false;
  Block block;
};

struct Entry {
  std::vector<Peer> peers;
  bool everywhere = false;  // no `to`/`from`: every peer (published ports)
  json ports;               // null: every port
};

std::vector<Cidr> RangesOf(const std::set<AddressClass>& classes, net::IpAddress::Family family) {
  std::vector<Cidr> out;
  for (const auto& r : net::SpecialRanges()) {
    if (classes.count(r.cls) && r.cidr.base().family() == family) out.push_back(r.cidr);
  }
  return out;
}

// 0.0.0.0/0 and ::/0 except the ranges of classes (in the table's order) and,
// for IPv6, the prefixes that embed an IPv4 address: NetworkPolicy cannot
// look inside them as msb's policy does.
std::vector<Peer> AllExcept(const std::set<AddressClass>& classes) {
  std::vector<Peer> out;
  for (auto family : {net::IpAddress::Family::kV4, net::IpAddress::Family::kV6}) {
    Peer p;
    p.block.cidr = family == net::IpAddress::Family::kV4 ? *Cidr::Parse("0.0.0.0/0") : *Cidr::Parse("::/0");
    for (const Cidr& c : RangesOf(classes, family)) p.block.except.push_back(c);
    if (family == net::IpAddress::Family::kV6) {
      // Not ::ffff:0:0/96: a mapped address never leaves a host as an IPv6
      // destination (the kernel sends IPv4), and the API server, reading it
      // as IPv4, refuses it as an exception of ::/0.
      const Cidr mapped = *Cidr::Parse("::ffff:0:0/96");
      for (const Cidr& c : net::Ipv4EmbeddingPrefixes()) {
        if (c != mapped) p.block.Except(c);
      }
    }
    out.push_back(p);
  }
  return out;
}

std::set<AddressClass> NonPublicClasses() {
  std::set<AddressClass> out;
  for (const auto& r : net::SpecialRanges()) out.insert(r.cls);
  return out;
}

// What msb never lets a broad target reach (net/policy.h "guarded").
const std::set<AddressClass> kGuarded = {AddressClass::kUnspecified, AddressClass::kLoopback, AddressClass::kMeta};

Peer GroupPeer() {
  Peer p;
  p.group = true;
  return p;
}

json BlockJson(const Block& b) {
  json j = {{"cidr", b.cidr.ToString()}};
  if (!b.except.empty()) {
    json e = json::array();
    for (const Cidr& c : b.except) e.push_back(c.ToString());
    j["except"] = e;
  }
  return j;
}

// An expressible deny rule, taken out of the entries after it.
struct Deny {
  bool group = false;       // the project's pods
  std::vector<Cidr> cidrs;  // address ranges
  bool egress = true;
};

void ApplyDeny(const Deny& d, bool is_egress, Entry* e) {
  if (d.egress != is_egress) return;
  std::vector<Peer> kept;
  for (Peer& p : e->peers) {
    if (p.group) {
      if (!d.group) kept.push_back(std::move(p));
      continue;
    }
    bool gone = false;
    for (const Cidr& c : d.cidrs) gone |= Within(p.block.cidr, c);
    if (gone) continue;
    for (const Cidr& c : d.cidrs) p.block.Except(c);
    kept.push_back(std::move(p));
  }
  e->peers = std::move(kept);
}

std::optional<AddressClass> ClassNamed(const std::string& name) {
  for (int i = 0; i <= static_cast<int>(AddressClass::kPublic); ++i) {
    auto cls = static_cast<AddressClass>(i);
    if (name == net::ToString(cls)) return cls;
  }
  return std::nullopt;
}

}  // namespace

nlohmann::json PublicIpBlocks() {
  json out = json::array();
  for (const Peer& p : AllExcept(NonPublicClasses())) out.push_back(BlockJson(p.block));
  return out;
}

KubeNetwork::KubeNetwork(const schema::Project& project, const schema::Sandbox& sandbox,
                         const KubeExportOptions& options)
    : project_(project), sb_(sandbox), options_(options) {}

std::vector<KubeObject> KubeNetwork::Objects() {
  const schema::Network& net = sb_.network;
  json group_labels = {{kPartOfLabel, project_.name}};
  auto warn = [this](const std::string& text) { warnings_.push_back(text); };

  // The peers a rule's target stands for; nullopt: no form (warned).
  auto peers_for = [&](const NetworkRule& r, const std::string& text) -> std::optional<std::vector<Peer>> {
    switch (r.target_kind) {
      case NetworkRule::TargetKind::kGroup: {
        if (r.target == "group") return std::vector<Peer>{GroupPeer()};
        if (r.target == "public") return AllExcept(NonPublicClasses());
        if (r.target == "any") {
          auto peers = AllExcept(kGuarded);
          peers.insert(peers.begin(), GroupPeer());
          return peers;
        }
        auto cls = ClassNamed(r.target);
        if (!cls || *cls == AddressClass::kHost) {
          warn("rule " + text + ": the host msb runs on has no counterpart in a cluster; not exported");
          return std::nullopt;
        }
        std::vector<Peer> peers;
        for (auto family : {net::IpAddress::Family::kV4, net::IpAddress::Family::kV6}) {
          for (const Cidr& c : RangesOf({*cls}, family)) peers.push_back(Peer{false, Block{c, {}}});
        }
        return peers;
      }
      case NetworkRule::TargetKind::kIp:
      case NetworkRule::TargetKind::kCidr: {
        auto c = Cidr::Parse(r.target);
        if (!c) return std::nullopt;  // the loader canonicalised it: cannot happen for a loaded file
        Peer p{false, Block{*c, {}}};
        if (r.target_kind == NetworkRule::TargetKind::kCidr) {
          for (auto family : {net::IpAddress::Family::kV4, net::IpAddress::Family::kV6}) {
            for (const Cidr& m : RangesOf({AddressClass::kMeta}, family)) p.block.Except(m);
          }
        }
        return std::vector<Peer>{p};
      }
      default:
        return std::nullopt;
    }
  };

  // The ports of a rule; nullopt: no form (ICMP).
  auto ports_for = [&](const NetworkRule& r, const std::string& text) -> std::optional<json> {
    if (r.protocol == schema::Protocol::kIcmp) {
      warn("rule " + text + ": NetworkPolicy has no ICMP; not exported");
      return std::nullopt;
    }
    if (r.protocol == schema::Protocol::kAny && r.ports.empty()) return json();
    std::vector<std::string> protos;
    if (r.protocol != schema::Protocol::kUdp) protos.push_back("TCP");
    if (r.protocol != schema::Protocol::kTcp) protos.push_back("UDP");
    json out = json::array();
    for (const auto& proto : protos) {
      if (r.ports.empty()) out.push_back({{"protocol", proto}});
      for (const auto& range : r.ports) {
        json p = {{"protocol", proto}, {"port", range.first}};
        if (range.last > range.first) p["endPort"] = range.last;
        out.push_back(p);
      }
    }
    return out;
  };

  struct Fqdn {
    NetworkRule rule;
    std::string text;
  };
  std::vector<Fqdn> fqdns;
  std::vector<Entry> egress, ingress;
  std::vector<Deny> denies;
  auto is_egress_list = [&](const std::vector<Entry>* entries) { return entries == &egress; };
  // Deny rules that can be expressed, applied to the entries after them.
  auto apply_deny = [&](const NetworkRule& r, const std::string& text, std::vector<Entry>* entries) {
    if (r.protocol != schema::Protocol::kAny || !r.ports.empty() ||
        r.target_kind == NetworkRule::TargetKind::kHost || r.target_kind == NetworkRule::TargetKind::kDomainSuffix) {
      warn("rule " + text + ": a NetworkPolicy only allows; this deny is not exported, so what a later rule " +
           "or the profile allows of it stays allowed");
      return;
    }
    bool all = r.target_kind == NetworkRule::TargetKind::kGroup && r.target == "any";
    bool group = all || (r.target_kind == NetworkRule::TargetKind::kGroup && r.target == "group");
    std::vector<Cidr> denied;
    if (r.target_kind == NetworkRule::TargetKind::kGroup && r.target == "public") {
      warn("rule " + text + ": a NetworkPolicy cannot take the public addresses out of a later allow; this deny " +
           "is not exported");
      return;
    }
    if (all) {
      denied = {*Cidr::Parse("0.0.0.0/0"), *Cidr::Parse("::/0")};
    } else if (!group) {
      auto peers = peers_for(r, text);
      if (!peers) return;
      for (const Peer& p : *peers) denied.push_back(p.block.cidr);
    }
    if (!is_egress_list(entries) && !sb_.ports.empty()) {
      warn("rule " + text + ": the published ports stay open to every source here");
    }
    denies.push_back({group, denied, entries == &egress});
  };

  for (size_t i = 0; i < net.rules.size(); ++i) {
    const NetworkRule& r = net.rules[i];
    std::string text = std::to_string(i + 1) + " (" + schema::ToString(r) + ")";
    bool is_egress = r.direction == NetworkRule::Direction::kEgress;
    auto* entries = is_egress ? &egress : &ingress;
    if (r.action == NetworkRule::Action::kDeny) {
      apply_deny(r, text, entries);
      continue;
    }
    if (r.target_kind == NetworkRule::TargetKind::kHost || r.target_kind == NetworkRule::TargetKind::kDomainSuffix) {
      if (!is_egress) {
        warn("rule " + text + ": an ingress rule naming a host has no form; not exported");
      } else {
        fqdns.push_back({r, text});
      }
      continue;
    }
    auto peers = peers_for(r, text);
    auto ports = ports_for(r, text);
    if (!peers || !ports) continue;
    Entry e;
    e.peers = *peers;
    e.ports = *ports;
    for (const auto& d : denies) ApplyDeny(d, is_egress, &e);
    if (!e.peers.empty()) entries->push_back(std::move(e));
  }

  // The profile.
  auto profile_entry = [&](std::vector<Peer> peers, bool is_egress, std::vector<Entry>* entries) {
    Entry e;
    e.peers = std::move(peers);
    for (const auto& d : denies) ApplyDeny(d, is_egress, &e);
    if (!e.peers.empty()) entries->push_back(std::move(e));
  };
  switch (net.policy) {
    case schema::NetworkPolicy::kNone:
      break;
    case schema::NetworkPolicy::kGroup:
      profile_entry({GroupPeer()}, true, &egress);
      break;
    case schema::NetworkPolicy::kPublic: {
      auto peers = AllExcept(NonPublicClasses());
      peers.insert(peers.begin(), GroupPeer());
      profile_entry(peers, true, &egress);
      break;
    }
    case schema::NetworkPolicy::kAny: {
      auto peers = AllExcept(kGuarded);
      peers.insert(peers.begin(), GroupPeer());
      profile_entry(peers, true, &egress);
      warn("network policy any: the node's own addresses (msb's class host) cannot be told apart here; the pod "
           "may reach them");
      break;
    }
  }
  if (!sb_.ports.empty()) {
    Entry e;
    e.everywhere = true;
    e.ports = json::array();
    std::set<std::pair<int, std::string>> seen;
    for (const auto& p : sb_.ports) {
      std::string proto = p.protocol == schema::Protocol::kUdp ? "UDP" : "TCP";
      if (seen.insert({p.guest_port, proto}).second) e.ports.push_back({{"protocol", proto}, {"port", p.guest_port}});
    }
    ingress.push_back(std::move(e));
  }
  if (net.policy != schema::NetworkPolicy::kNone) profile_entry({GroupPeer()}, false, &ingress);
  if (!net.dns_servers.empty()) {
    warn("network.dns.servers: the pod asks the cluster's DNS; the servers are not exported");
  }

  auto peers_json = [&](const Entry& e) {
    json out = json::array();
    for (const Peer& p : e.peers) {
      if (p.group) {
        out.push_back({{"podSelector", {{"matchLabels", group_labels}}}});
      } else {
        out.push_back({{"ipBlock", BlockJson(p.block)}});
      }
    }
    return out;
  };
  auto entries_json = [&](const std::vector<Entry>& entries, const char* peer_key) {
    json out = json::array();
    for (const Entry& e : entries) {
      json j = json::object();
      if (!e.everywhere) j[peer_key] = peers_json(e);
      if (!e.ports.is_null()) j["ports"] = e.ports;
      out.push_back(j);
    }
    return out;
  };
  json dns = {{"to", {{{"namespaceSelector", json::object()}, {"podSelector", {{"matchLabels", {{"k8s-app", "kube-dns"}}}}}}}},
              {"ports", {{{"protocol", "UDP"}, {"port", 53}}, {{"protocol", "TCP"}, {"port", 53}}}}};
  json egress_json = entries_json(egress, "to");
  egress_json.insert(egress_json.begin(), dns);
  json spec = {{"podSelector", {{"matchLabels", {{kPartOfLabel, project_.name}, {kNameLabel, sb_.name}}}}},
               {"policyTypes", {"Ingress", "Egress"}},
               {"egress", egress_json},
               {"ingress", entries_json(ingress, "from")}};

  std::vector<KubeObject> out;
  KubeObject np;
  np.kind = "NetworkPolicy";
  np.name = sb_.name;
  np.sandbox = sb_.name;
  np.body = {{"apiVersion", "networking.k8s.io/v1"}, {"kind", "NetworkPolicy"}, {"spec", spec}};
  if (fqdns.empty()) {
    out.push_back(std::move(np));
    return out;
  }
  if (options_.fqdn_policy == FqdnPolicy::kComment) {
    np.comments.push_back("Host-name rules have no form in a NetworkPolicy and are not applied");
    np.comments.push_back("(msb export kubernetes --fqdn-policy cilium writes them as a CiliumNetworkPolicy):");
    for (const auto& f : fqdns) {
      np.comments.push_back("  rule " + f.text);
      warn("rule " + f.text + ": host-name rules have no form in a NetworkPolicy; written as a comment only " +
           "(--fqdn-policy cilium writes a CiliumNetworkPolicy)");
    }
    out.push_back(std::move(np));
    return out;
  }
  out.push_back(std::move(np));
  json cilium_egress = json::array();
  cilium_egress.push_back(
      {{"toEndpoints",
        {{{"matchLabels", {{"k8s:io.kubernetes.pod.namespace", "kube-system"}, {"k8s:k8s-app", "kube-dns"}}}}}},
       {"toPorts", {{{"ports", {{{"port", "53"}, {"protocol", "ANY"}}}}, {"rules", {{"dns", {{{"matchPattern", "*"}}}}}}}}}});
  for (const auto& f : fqdns) {
    const NetworkRule& r = f.rule;
    json selector = r.target_kind == NetworkRule::TargetKind::kHost ? json{{"matchName", r.target}}
                                                                    : json{{"matchPattern", "*." + r.target}};
    json entry = {{"toFQDNs", {selector}}};
    if (r.protocol == schema::Protocol::kIcmp) {
      warn("rule " + f.text + ": ICMP to a host name is not exported");
      continue;
    }
    if (r.protocol != schema::Protocol::kAny || !r.ports.empty()) {
      std::string proto = r.protocol == schema::Protocol::kTcp   ? "TCP"
                          : r.protocol == schema::Protocol::kUdp ? "UDP"
                                                                 : "ANY";
      json ports = json::array();
      if (r.ports.empty()) ports.push_back({{"port", "0"}, {"protocol", proto}});
      for (const auto& range : r.ports) {
        json p = {{"port", std::to_string(range.first)}, {"protocol", proto}};
        if (range.last > range.first) p["endPort"] = range.last;
        ports.push_back(p);
      }
      entry["toPorts"] = {{{"ports", ports}}};
    }
    cilium_egress.push_back(entry);
  }
  KubeObject cnp;
  cnp.kind = "CiliumNetworkPolicy";
  cnp.name = sb_.name + "-fqdn";
  cnp.sandbox = sb_.name;
  cnp.comments.push_back("Host-name rules (" + std::string(ToString(options_.fqdn_policy)) +
                         "): Cilium resolves the names and allows the answers; the NetworkPolicy " + sb_.name +
                         " holds the rest");
  cnp.body = {{"apiVersion", "cilium.io/v2"},
              {"kind", "CiliumNetworkPolicy"},
              {"spec", {{"endpointSelector", {{"matchLabels", {{kPartOfLabel, project_.name}, {kNameLabel, sb_.name}}}}},
                        {"egress", cilium_egress}}}};
  out.push_back(std::move(cnp));
  return out;
}

}  // namespace msb::orchestrator
