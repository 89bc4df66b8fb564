// msb net check: what a sandbox's network policy decides for a destination,
// without running anything. Reads the sandbox's recorded spec (or, with
// --file, the Sandboxfile), classifies the destination and prints the
// deciding rule or profile. Not a connectivity test: nothing is sent.
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

#include "net/address.h"
#include "net/policy.h"
#include "cli/cli.h"
#include "cli/json_output.h"
#include "orchestrator/launch.h"
#include "orchestrator/store.h"
#include "schema/network_rule.h"

namespace msb::cli {
namespace {

using json = nlohmann::json;

// Stands for the guest's gateway when DEST is `host`: the check needs some
// address for it, and the stack's real one is per sandbox.
const net::IpAddress kCheckGateway = net::IpAddress::V4(10, 0, 2, 2);
// Stands for a sibling sandbox when DEST names one: its address is chosen at
// run time, so the check uses one that no IP or CIDR rule names (rules that
// name the real address are not judged here).
net::IpAddress SiblingStandIn(const schema::Network& network) {
  for (uint32_t i = 1;; ++i) {
    net::IpAddress candidate = net::IpAddress::V4(0xc6120000u + i);  // 198.18.0.0/15
    bool named = false;
    for (const auto& r : network.rules) {
      if (r.target_kind != schema::NetworkRule::TargetKind::kIp &&
          r.target_kind != schema::NetworkRule::TargetKind::kCidr) {
        continue;
      }
      auto cidr = net::Cidr::Parse(r.target);
      if (cidr && cidr->Contains(candidate)) named = true;
    }
    if (!named || i == 0x1fffe) return candidate;
  }
}

void ReplaceAll(std::string* s, const std::string& from, const std::string& to) {
  for (size_t at = s->find(from); at != std::string::npos; at = s->find(from, at + to.size())) {
    s->replace(at, from.size(), to);
  }
}

struct CheckArgs {
  std::string sandbox;
  std::string dest;
  std::string port_proto;
  std::string file;
  std::string project;  // -p
  bool from_file = false;
  bool json = false;
};

// The network section of a recorded spec ({"canonical": {"network": ...}}),
// decoded as the supervisor decodes it (schema::NetworkFromCanonical). A
// record without a spec (msb run) has the default network.
Result<schema::Network> RecordedNetwork(const orchestrator::SandboxRecord& rec) {
  schema::Network n;
  if (rec.spec_json.empty()) return n;
  auto where = "sandbox " + rec.project + "/" + rec.name + ": recorded spec";
  json j = json::parse(rec.spec_json, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Error(ErrorCode::kProtocol, where + " is not JSON; recreate it with msb up");
  auto c = j.find("canonical");
  if (c == j.end() || !c->is_object()) return n;
  auto net = c->find("network");
  if (net == c->end() || !net->is_object()) return n;
  std::string policy = schema::ToString(n.policy);
  if (auto p = net->find("policy"); p != net->end()) {
    if (!p->is_string()) return Error(ErrorCode::kProtocol, where + ": network.policy is not none, group, public or any");
    policy = p->get<std::string>();
  }
  std::vector<std::string> rules;
  if (auto r = net->find("rules"); r != net->end() && r->is_array()) {
    for (const auto& rule : *r) {
      if (!rule.is_string()) return Error(ErrorCode::kProtocol, where + ": a network rule is not a string");
      rules.push_back(rule.get<std::string>());
    }
  }
  bool rebind_protection = n.rebind_protection;
  if (auto dns = net->find("dns"); dns != net->end() && dns->is_object()) {
    if (auto rb = dns->find("rebind_protection"); rb != dns->end() && rb->is_boolean()) {
      rebind_protection = rb->get<bool>();
    }
  }
  auto decoded = schema::NetworkFromCanonical(policy, rules, rebind_protection);
  if (!decoded.ok()) return decoded.error().Wrap(where);
  return std::move(*decoded);
}

struct PortProto {
  schema::Protocol proto = schema::Protocol::kAny;  // kAny: no PORT/PROTO given
  uint16_t port = 0;
};

Result<PortProto> ParsePortProto(const std::string& text) {
  PortProto pp;
  if (text.empty()) return pp;
  auto bad = [&] {
    return Error(ErrorCode::kInvalidArgument,
                 "PORT/PROTO \"" + text + "\": expected 443, 443/tcp, 53/udp or icmp");
  };
  if (text == "icmp") {
    pp.proto = schema::Protocol::kIcmp;
    return pp;
  }
  std::string port = text, proto = "tcp";
  if (size_t slash = text.find('/'); slash != std::string::npos) {
    port = text.substr(0, slash);
    proto = text.substr(slash + 1);
  }
  if (proto == "tcp") pp.proto = schema::Protocol::kTcp;
  else if (proto == "udp") pp.proto = schema::Protocol::kUdp;
  else return bad();
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos) return bad();
  int p = std::stoi(port);
  if (p < 1 || p > 65535) return bad();
  pp.port = static_cast<uint16_t>(p);
  return pp;
}

// DEST's addresses: itself when an IP, else the host's resolver's answer.
Result<std::vector<net::IpAddress>> Addresses(const std::string& dest) {
  std::string d = dest;
  if (d.size() > 2 && d.front() == '[' && d.back() == ']') d = d.substr(1, d.size() - 2);
  if (auto ip = net::IpAddress::Parse(d)) return std::vector<net::IpAddress>{*ip};
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(d.c_str(), nullptr, &hints, &res);
  if (rc != 0) {
    return Error(ErrorCode::kNotFound, "resolving " + dest + " on this host: " + gai_strerror(rc) +
                                           " (give an IP address to check it directly)");
  }
  std::vector<net::IpAddress> out;
  for (addrinfo* a = res; a != nullptr; a = a->ai_next) {
    if (auto ip = net::IpAddress::FromSockaddr(a->ai_addr)) out.push_back(*ip);
  }
  freeaddrinfo(res);
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  if (out.empty()) return Error(ErrorCode::kNotFound, "resolving " + dest + " on this host: no addresses");
  return out;
}

int Check(const CheckArgs& a) {
  constexpr int kError = 2;
  auto fail = [&](const std::string& msg) {
    Fail(msg);
    return kError;
  };
  auto ppr = ParsePortProto(a.port_proto);
  if (!ppr.ok()) return fail(ppr.error().message());
  PortProto port_proto = *ppr;

  schema::Network network;
  std::string source;
  std::set<std::string> siblings;  // the project's other sandboxes
  if (a.from_file) {
    auto project = LoadProjectOrReport(ProjectFlags{a.file, a.project});
    if (!project) return kError;
    auto sb = project->sandboxes.find(a.sandbox);
    if (sb == project->sandboxes.end()) {
      std::string names;
      for (const auto& [n, _] : project->sandboxes) names += (names.empty() ? "" : ", ") + n;
      return fail("no sandbox named " + a.sandbox + " in " + project->source_path + " (it declares: " + names + ")");
    }
    network = sb->second.network;
    source = project->source_path;
    for (const auto& [n, _] : project->sandboxes) siblings.insert(n);
  } else {
    auto store = orchestrator::Store::Open(orchestrator::Store::DefaultPath());
    if (!store.ok()) return fail(store.error().message());
    auto rec = orchestrator::FindSandbox(*store, a.sandbox, CurrentProject(a.project), "net check");
    if (!rec.ok()) return fail(rec.error().message() + "; or check a Sandboxfile's sandbox with --file");
    auto n = RecordedNetwork(*rec);
    if (!n.ok()) return fail(n.error().message());
    network = std::move(*n);
    source = "the recorded spec of " + rec->project + "/" + rec->name;
    if (rec->project != orchestrator::Store::kRunProject) {
      if (auto all = store->ListSandboxes(rec->project); all.ok()) {
        for (const auto& r : *all) siblings.insert(r.name);
      }
    }
  }

  net::HostAddresses host;
  if (auto st = host.Refresh(); !st.ok()) return fail(st.error().message());
  net::PolicyContext ctx;
  ctx.host = &host;
  bool is_host = a.dest == "host";
  if (is_host) ctx.gateways = {kCheckGateway};
  siblings.erase(a.sandbox);
  bool is_sibling = !is_host && siblings.count(a.dest) > 0;
  const net::IpAddress sibling = SiblingStandIn(network);
  if (is_sibling) ctx.group_members = {sibling};
  auto policy = net::Policy::Compile(network, ctx);
  if (!policy.ok()) return fail(source + ": " + policy.error().message());

  std::vector<net::IpAddress> addresses;
  bool by_name = false;
  if (is_host) {
    addresses = {kCheckGateway};
  } else if (is_sibling) {
    addresses = {sibling};
  } else {
    auto r = Addresses(a.dest);
    if (!r.ok()) return fail(r.error().message());
    addresses = std::move(*r);
    by_name = !net::IpAddress::Parse(a.dest) && a.dest.front() != '[';
  }
  NetCheckReport report;
  report.sandbox = a.sandbox;
  report.source = source;
  report.profile = schema::ToString(network.policy);
  report.rules = network.rules.size();
  report.destination = a.dest;
  if (port_proto.proto != schema::Protocol::kAny) report.protocol = schema::ToString(port_proto.proto);
  if (port_proto.proto == schema::Protocol::kTcp || port_proto.proto == schema::Protocol::kUdp) {
    report.port = port_proto.port;
  }
  report.by_name = by_name;
  if (!a.json) {
    std::printf("sandbox %s: profile %s, %zu rule%s (from %s)\n", a.sandbox.c_str(), report.profile.c_str(),
                report.rules, report.rules == 1 ? "" : "s", source.c_str());
  }
  if (by_name && !a.json) {
    std::printf("%s resolves here to %zu address%s; at run time name rules match an address only when the "
                "sandbox's own DNS answered it for that name\n",
                a.dest.c_str(), addresses.size(), addresses.size() == 1 ? "" : "es");
  }
  std::vector<std::string> names;
  if (by_name) names.push_back(a.dest);
  for (const net::IpAddress& ip : addresses) {
    net::Decision d;
    std::string what = is_host ? "host (the gateway)" : is_sibling ? a.dest : ip.ToString();
    std::string flow;
    if (port_proto.proto == schema::Protocol::kAny) {
      d = policy->MayReach(ip, names);
      flow = what + " (some port)";
    } else {
      net::EgressFlow f{ip, port_proto.proto, port_proto.port, names};
      d = policy->Decide(f);
      flow = port_proto.proto == schema::Protocol::kIcmp
                 ? "icmp " + what
                 : std::string(schema::ToString(port_proto.proto)) + " " + what + ":" +
                       std::to_string(port_proto.port);
    }
    if (is_sibling) ReplaceAll(&d.reason, sibling.ToString(), a.dest);
    NetCheckDecision decision;
    decision.address = is_sibling ? a.dest : ip.ToString();  // a sibling's address is chosen at run time
    decision.flow = flow;
    decision.allowed = d.allow;
    decision.reason = d.reason;
    decision.address_class = policy->ClassName(ip);
    decision.to_host_loopback = d.redirect_to_host_loopback;
    decision.dropped_from_dns = by_name && network.rebind_protection && !policy->MayReach(ip, names).allow;
    if (!a.json) {
      std::string extra;
      if (decision.to_host_loopback) extra = " (connects to the host's 127.0.0.1)";
      if (decision.dropped_from_dns) extra += " (the sandbox's DNS drops this address from its answers)";
      std::printf("%s %s: %s [%s]%s\n", d.allow ? "allow" : "deny", flow.c_str(), d.reason.c_str(),
                  decision.address_class.c_str(), extra.c_str());
    }
    report.decisions.push_back(std::move(decision));
  }
  if (a.json) std::fputs(JsonText(NetCheckJson(report)).c_str(), stdout);
  return report.AllAllowed() ? 0 : 1;
}

}  // namespace

void RegisterNetCommands(CLI::App& app) {
  auto* net = app.add_subcommand("net", "Network policy tools");
  net->require_subcommand(1);
  auto a = std::make_shared<CheckArgs>();
  auto* check = net->add_subcommand(
      "check",
      "Print whether a sandbox's network policy allows a destination, and why (exit 0 allow, 1 deny, 2 error)");
  check->add_option("sandbox", a->sandbox, "sandbox name, or PROJECT/NAME")->required();
  check->add_option("dest", a->dest, "destination: an IP address, a host name (resolved here), `host`, or another sandbox of the project")
      ->required();
  check->add_option("port", a->port_proto, "PORT[/tcp|udp] or icmp; default: any port");
  auto* file = check->add_option("-f,--file", a->file,
                                 "read the sandbox from a Sandboxfile (default ./Sandboxfile) instead of the "
                                 "state store")
                   ->expected(0, 1);
  AddProjectNameFlag(check, &a->project);
  AddJsonFlags(check, &a->json);
  OnRun(check, [a, file]() {
    a->from_file = file->count() > 0;
    return Check(*a);
  });
}

}  // namespace msb::cli
