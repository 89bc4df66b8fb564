// Tests of net/policy: profile and rule decisions with their reason text,
// the guarded classes, the gateway redirect, name rules through the pin
// set, ingress, the rebinding check, PinSet expiry and bounds, DenialLog
// rate limiting, and properties over random flows.
#include "net/policy.h"

#include <cstdio>

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include "schema/network_rule.h"

namespace msb::net {
namespace {

using schema::NetworkPolicy;
using schema::Protocol;

IpAddress Ip(const char* text) { return *IpAddress::Parse(text); }

const IpAddress kGateway = IpAddress::V4(10, 0, 2, 2);
const IpAddress kHostLan = IpAddress::V4(192, 168, 7, 20);
const IpAddress kPeer = IpAddress::V4(10, 0, 3, 15);  // another sandbox of the project

Policy Make(NetworkPolicy profile, std::vector<std::string> rules, const HostAddresses* host,
            bool rebind = true) {
  schema::Network n;
  n.policy = profile;
  n.rebind_protection = rebind;
  for (const auto& r : rules) {
    auto parsed = schema::ParseNetworkRule(r);
    EXPECT_TRUE(parsed.ok()) << r << ": " << (parsed.ok() ? "" : parsed.error().message());
    if (parsed.ok()) n.rules.push_back(*parsed);
  }
  PolicyContext ctx;
  ctx.gateways = {kGateway, Ip("fd00::2")};
  ctx.host = host;
  ctx.group_members = {kPeer};
  auto p = Policy::Compile(n, ctx);
  EXPECT_TRUE(p.ok());
  return std::move(*p);
}

EgressFlow Tcp(const char* ip, uint16_t port, std::vector<std::string> names = {}) {
  return EgressFlow{Ip(ip), Protocol::kTcp, port, std::move(names)};
}
EgressFlow Tcp(const IpAddress& ip, uint16_t port) { return EgressFlow{ip, Protocol::kTcp, port, {}}; }

TEST(Policy, PublicProfileAllowsOnlyPublicAndSaysWhy) {
  HostAddresses host({kHostLan});
  Policy p = Make(NetworkPolicy::kPublic, {}, &host);
  Decision d = p.Decide(Tcp("93.184.216.34", 443));
  EXPECT_TRUE(d.allow);
  EXPECT_EQ(d.reason, "profile public: 93.184.216.34 is public");
  EXPECT_EQ(d.connect_to, Ip("93.184.216.34"));

  d = p.Decide(Tcp("10.1.2.3", 80));
  EXPECT_FALSE(d.allow);
  EXPECT_EQ(d.reason, "profile public: 10.1.2.3 is private");
  EXPECT_EQ(d.key, "profile public: private");
  EXPECT_EQ(d.rule, 0);

  const char* denied[] = {"100.64.1.1",      "127.0.0.1",   "169.254.1.1", "224.0.0.1",   "255.255.255.255",
                          "240.1.1.1",       "192.0.2.1",   "198.18.0.1",  "169.254.169.254",
                          "168.63.129.16",   "fd00:ec2::254", "::1",       "fe80::1",     "fc00::5",
                          "2001:db8::1",     "ff02::1",     "::ffff:10.0.0.1", "64:ff9b::127.0.0.1",
                          "2002:a9fe:a9fe::1", "192.168.7.20"};
  for (const char* ip : denied) EXPECT_FALSE(p.Decide(Tcp(ip, 80)).allow) << ip;
  EXPECT_EQ(p.Decide(Tcp("::ffff:192.168.7.20", 22)).reason,
            "profile public: ::ffff:192.168.7.20 (as 192.168.7.20) is host");
  // The gateway is the host: denied, but DNS to it always goes through.
  EXPECT_EQ(p.Decide(Tcp(kGateway, 22)).reason, "profile public: 10.0.2.2 is the gateway");
  EXPECT_TRUE(p.Decide(EgressFlow{kGateway, Protocol::kUdp, 53, {}}).allow);
  EXPECT_TRUE(p.Decide(EgressFlow{Ip("fd00::2"), Protocol::kTcp, 53, {}}).allow);
  EXPECT_FALSE(p.Decide(EgressFlow{Ip("10.0.2.3"), Protocol::kUdp, 53, {}}).allow);
  // Group members are allowed under public.
  EXPECT_TRUE(p.Decide(Tcp(kPeer, 5432)).allow);
  EXPECT_EQ(p.ClassName(kPeer), "group");
  EXPECT_EQ(p.ClassName(kGateway), "gateway");
  EXPECT_EQ(p.ClassName(kHostLan), "host");
}

TEST(Policy, UnspecifiedIsNeverReachable) {
  Policy p = Make(NetworkPolicy::kAny, {"allow@any", "allow@0.0.0.0", "allow@[::]"}, nullptr);
  for (const char* ip : {"0.0.0.0", "::", "::ffff:0.0.0.0"}) {
    Decision d = p.Decide(Tcp(ip, 80));
    EXPECT_FALSE(d.allow) << ip;
    EXPECT_EQ(d.key, "unspecified");
  }
}

TEST(Policy, FirstMatchingRuleWins) {
  Policy p = Make(NetworkPolicy::kPublic,
                  {"allow@10.1.2.0/24:tcp:5432", "deny@10.0.0.0/8", "allow@private", "deny@8.8.8.8:udp:53"},
                  nullptr);
  Decision d = p.Decide(Tcp("10.1.2.3", 5432));
  EXPECT_TRUE(d.allow);
  EXPECT_EQ(d.reason, "rule 1 (allow:egress@10.1.2.0/24:tcp:5432)");
  EXPECT_EQ(d.rule, 1);
  d = p.Decide(Tcp("10.1.2.3", 5433));
  EXPECT_FALSE(d.allow);
  EXPECT_EQ(d.reason, "rule 2 (deny:egress@10.0.0.0/8:any)");
  EXPECT_EQ(d.key, "rule 2");
  EXPECT_TRUE(p.Decide(Tcp("192.168.0.1", 1)).allow);  // rule 3
  EXPECT_FALSE(p.Decide(EgressFlow{Ip("8.8.8.8"), Protocol::kUdp, 53, {}}).allow);
  EXPECT_TRUE(p.Decide(EgressFlow{Ip("8.8.8.8"), Protocol::kTcp, 53, {}}).allow);  // profile
  // The v6 forms of a rule's IPv4 match it.
  EXPECT_EQ(p.Decide(Tcp("::ffff:10.9.9.9", 1)).rule, 2);
  // ICMP never matches a rule with ports.
  EXPECT_EQ(p.Decide(EgressFlow{Ip("10.1.2.3"), Protocol::kIcmp, 0, {}}).rule, 2);
  // Ingress rules do not apply to egress.
  Policy q = Make(NetworkPolicy::kPublic, {"allow:ingress@private"}, nullptr);
  EXPECT_FALSE(q.Decide(Tcp("10.0.0.1", 80)).allow);
}

TEST(Policy, PortRangesAndProtocols) {
  Policy p = Make(NetworkPolicy::kNone, {"allow@93.184.216.34:tcp:80,8000-8100", "allow@1.1.1.1:icmp"}, nullptr);
  EXPECT_TRUE(p.Decide(Tcp("93.184.216.34", 80)).allow);
  EXPECT_TRUE(p.Decide(Tcp("93.184.216.34", 8000)).allow);
  EXPECT_TRUE(p.Decide(Tcp("93.184.216.34", 8100)).allow);
  EXPECT_FALSE(p.Decide(Tcp("93.184.216.34", 8101)).allow);
  EXPECT_FALSE(p.Decide(EgressFlow{Ip("93.184.216.34"), Protocol::kUdp, 80, {}}).allow);
  EXPECT_TRUE(p.Decide(EgressFlow{Ip("1.1.1.1"), Protocol::kIcmp, 0, {}}).allow);
  EXPECT_FALSE(p.Decide(Tcp("1.1.1.1", 80)).allow);
  EXPECT_EQ(p.Decide(Tcp("1.1.1.1", 80)).reason, "profile none: 1.1.1.1 is public");
}

TEST(Policy, NoneAllowsOnlyDnsToTheGateway) {
  Policy p = Make(NetworkPolicy::kNone, {}, nullptr);
  EXPECT_FALSE(p.Decide(Tcp("93.184.216.34", 443)).allow);
  EXPECT_FALSE(p.Decide(Tcp(kPeer, 80)).allow);
  Decision dns = p.Decide(EgressFlow{kGateway, Protocol::kUdp, 53, {}});
  EXPECT_TRUE(dns.allow);
  EXPECT_EQ(dns.reason, "DNS to the gateway");
  EXPECT_FALSE(dns.redirect_to_host_loopback);
}

TEST(Policy, GroupProfileAllowsOnlyTheProjectsSandboxes) {
  Policy p = Make(NetworkPolicy::kGroup, {}, nullptr);
  EXPECT_TRUE(p.Decide(Tcp(kPeer, 80)).allow);
  EXPECT_EQ(p.Decide(Tcp(kPeer, 80)).reason, "profile group: 10.0.3.15 is a group member");
  EXPECT_FALSE(p.Decide(Tcp("93.184.216.34", 443)).allow);
  EXPECT_FALSE(p.Decide(Tcp("10.0.3.16", 80)).allow);
  p.SetGroupMembers({Ip("10.0.3.16")});
  EXPECT_TRUE(p.Decide(Tcp("10.0.3.16", 80)).allow);
  EXPECT_FALSE(p.Decide(Tcp(kPeer, 80)).allow);
}

TEST(Policy, AnyKeepsTheGuardedClassesOut) {
  HostAddresses host({kHostLan});
  Policy p = Make(NetworkPolicy::kAny, {}, &host);
  for (const char* ip : {"10.1.2.3", "192.0.2.1", "224.0.0.1", "169.254.1.1", "93.184.216.34", "fe80::1"}) {
    EXPECT_TRUE(p.Decide(Tcp(ip, 80)).allow) << ip;
  }
  for (const char* ip : {"169.254.169.254", "127.0.0.1", "::1", "192.168.7.20", "10.0.2.2", "fd00:ec2::254"}) {
    EXPECT_FALSE(p.Decide(Tcp(ip, 80)).allow) << ip;
  }
  // A broad allow rule does not reach them either; their group or exact IP does.
  Policy q = Make(NetworkPolicy::kNone,
                  {"allow@any", "allow@169.254.0.0/16", "allow@192.168.0.0/16"}, &host);
  EXPECT_TRUE(q.Decide(Tcp("8.8.8.8", 80)).allow);
  EXPECT_FALSE(q.Decide(Tcp("169.254.169.254", 80)).allow);
  EXPECT_FALSE(q.Decide(Tcp("192.168.7.20", 80)).allow);
  EXPECT_FALSE(q.Decide(Tcp(kGateway, 80)).allow);
  Policy r = Make(NetworkPolicy::kPublic, {"allow@meta", "allow@192.168.7.20:tcp:22", "allow@loopback:tcp:80"},
                  &host);
  EXPECT_TRUE(r.Decide(Tcp("169.254.169.254", 80)).allow);
  EXPECT_TRUE(r.Decide(Tcp("::ffff:169.254.169.254", 80)).allow);
  EXPECT_TRUE(r.Decide(Tcp("192.168.7.20", 22)).allow);
  EXPECT_TRUE(r.Decide(Tcp("127.0.0.1", 80)).allow);
  EXPECT_FALSE(r.Decide(Tcp(kGateway, 22)).allow);  // the gateway only through `host`
  // Deny rules match broadly.
  Policy s = Make(NetworkPolicy::kPublic, {"deny@169.254.0.0/16", "allow@meta"}, &host);
  EXPECT_FALSE(s.Decide(Tcp("169.254.169.254", 80)).allow);
}

TEST(Policy, HostRuleRedirectsTheGatewayToHostLoopback) {
  HostAddresses host({kHostLan});
  Policy p = Make(NetworkPolicy::kPublic, {"allow@host:tcp:5432"}, &host);
  Decision d = p.Decide(Tcp(kGateway, 5432));
  EXPECT_TRUE(d.allow);
  EXPECT_TRUE(d.redirect_to_host_loopback);
  EXPECT_EQ(d.connect_to, Ip("127.0.0.1"));
  EXPECT_EQ(d.reason, "rule 1 (allow:egress@host:tcp:5432)");
  EXPECT_FALSE(p.Decide(Tcp(kGateway, 5433)).allow);
  // The host's own address: allowed by `host`, not redirected.
  Decision lan = p.Decide(Tcp(kHostLan, 5432));
  EXPECT_TRUE(lan.allow);
  EXPECT_FALSE(lan.redirect_to_host_loopback);
  EXPECT_EQ(lan.connect_to, kHostLan);
}

TEST(Policy, NameRulesMatchOnlyPinnedNames) {
  Policy p = Make(NetworkPolicy::kNone, {"allow@api.example.com:tcp:443", "deny@*.ads.example.com",
                                         "allow@*.example.com"},
                  nullptr);
  EXPECT_FALSE(p.Decide(Tcp("93.184.216.34", 443)).allow);  // never resolved through our DNS
  EXPECT_TRUE(p.Decide(Tcp("93.184.216.34", 443, {"api.example.com"})).allow);
  EXPECT_TRUE(p.Decide(Tcp("93.184.216.34", 443, {"API.Example.COM."})).allow);
  EXPECT_EQ(p.Decide(Tcp("93.184.216.34", 80, {"api.example.com"})).rule, 3);  // not port 443: falls to *.
  EXPECT_EQ(p.Decide(Tcp("93.184.216.34", 80, {"x.ads.example.com"})).rule, 2);
  EXPECT_EQ(p.Decide(Tcp("93.184.216.34", 80, {"cdn.example.com"})).rule, 3);
  EXPECT_FALSE(p.Decide(Tcp("93.184.216.34", 80, {"example.com"})).allow);  // *. is subdomains only
  EXPECT_FALSE(p.Decide(Tcp("93.184.216.34", 80, {"badexample.com"})).allow);
  // A name never lets the guest reach a guarded address.
  Policy q = Make(NetworkPolicy::kNone, {"allow@internal.example.com"}, nullptr);
  EXPECT_TRUE(q.Decide(Tcp("10.0.0.5", 80, {"internal.example.com"})).allow);
  EXPECT_FALSE(q.Decide(Tcp("127.0.0.1", 80, {"internal.example.com"})).allow);
  EXPECT_FALSE(q.Decide(Tcp("169.254.169.254", 80, {"internal.example.com"})).allow);
  EXPECT_FALSE(q.Decide(Tcp(kGateway, 80)).allow);
}

TEST(Policy, Ingress) {
  Policy p = Make(NetworkPolicy::kPublic, {"deny:ingress@10.0.3.15:tcp:22", "allow:ingress@192.0.2.0/24:tcp:80"},
                  nullptr);
  EXPECT_TRUE(p.Decide(IngressFlow{kPeer, Protocol::kTcp, 80, false}).allow);
  EXPECT_FALSE(p.Decide(IngressFlow{kPeer, Protocol::kTcp, 22, false}).allow);
  EXPECT_TRUE(p.Decide(IngressFlow{Ip("192.0.2.9"), Protocol::kTcp, 80, false}).allow);
  Decision d = p.Decide(IngressFlow{Ip("93.184.216.34"), Protocol::kTcp, 80, false});
  EXPECT_FALSE(d.allow);
  EXPECT_EQ(d.reason, "profile public: ingress from 93.184.216.34 is public");
  Decision pub = p.Decide(IngressFlow{Ip("127.0.0.1"), Protocol::kTcp, 8080, true});
  EXPECT_TRUE(pub.allow);
  EXPECT_EQ(pub.reason, "published port 8080/tcp");
  Policy none = Make(NetworkPolicy::kNone, {}, nullptr);
  EXPECT_FALSE(none.Decide(IngressFlow{kPeer, Protocol::kTcp, 80, false}).allow);
}

TEST(Policy, MayReachIsTheRebindingCheck) {
  Policy p = Make(NetworkPolicy::kPublic,
                  {"deny@93.184.216.0/24:tcp:25", "deny@1.2.3.4", "allow@10.1.2.0/24:tcp:5432",
                   "allow@private.test"},
                  nullptr);
  EXPECT_TRUE(p.MayReach(Ip("93.184.216.34"), {}).allow);  // a port-limited deny leaves other ports
  EXPECT_FALSE(p.MayReach(Ip("1.2.3.4"), {}).allow);
  EXPECT_TRUE(p.MayReach(Ip("10.1.2.9"), {}).allow);
  EXPECT_FALSE(p.MayReach(Ip("10.1.3.9"), {}).allow);
  // A host-name rule never vouches for a private or link-local answer.
  EXPECT_FALSE(p.MayReach(Ip("10.1.3.9"), {"private.test"}).allow);
  EXPECT_FALSE(p.MayReach(Ip("169.254.3.9"), {"private.test"}).allow);
  EXPECT_TRUE(p.MayReach(Ip("93.184.216.34"), {"private.test"}).allow);
  EXPECT_FALSE(p.MayReach(Ip("127.0.0.1"), {"private.test"}).allow);
  EXPECT_FALSE(p.MayReach(kGateway, {}).allow);  // DNS to the gateway is no reason
  EXPECT_TRUE(p.MayReach(kPeer, {}).allow);
  EXPECT_FALSE(p.MayReach(Ip("0.0.0.0"), {}).allow);
}

// Every IPv6 form embedding the gateway or a group member: mapped,
// translated, compatible, NAT64 (both prefixes), 6to4 and Teredo.
std::vector<IpAddress> EmbeddedForms(const IpAddress& v4) {
  uint32_t a = v4.v4();
  auto hex = [](uint32_t v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%x:%x", v >> 16, v & 0xffff);
    return std::string(buf);
  };
  std::vector<std::string> texts = {"::ffff:" + hex(a),          "::ffff:0:" + hex(a), "::" + hex(a),
                                    "64:ff9b::" + hex(a),        "64:ff9b:1::" + hex(a),
                                    "2002:" + hex(a) + "::1",    "2001:0:4136:e378:8000:63bf:" + hex(~a)};
  std::vector<IpAddress> out;
  for (const auto& t : texts) {
    auto ip = IpAddress::Parse(t);
    EXPECT_TRUE(ip.has_value()) << t;
    if (ip) {
      EXPECT_EQ(Canonicalize(*ip), v4) << t;
      out.push_back(*ip);
    }
  }
  return out;
}

TEST(Policy, EmbeddedFormsOfTheGatewayAndGroupMembersAreRefused) {
  for (NetworkPolicy profile : {NetworkPolicy::kNone, NetworkPolicy::kGroup, NetworkPolicy::kAny}) {
    Policy p = Make(profile, {"allow@host", "allow@group", "allow@10.0.0.0/8", "allow@any"}, nullptr);
    for (const IpAddress& form : EmbeddedForms(kGateway)) {
      for (Protocol proto : {Protocol::kTcp, Protocol::kUdp}) {
        Decision d = p.Decide(EgressFlow{form, proto, 53, {}});
        EXPECT_FALSE(d.allow) << form.ToString();
        EXPECT_EQ(d.key, "embedded gateway") << form.ToString();
        EXPECT_EQ(d.kind, PeerKind::kGateway);
        EXPECT_FALSE(d.redirect_to_host_loopback);
      }
      EXPECT_FALSE(p.Decide(Tcp(form, 80)).allow) << form.ToString();
      EXPECT_FALSE(p.MayReach(form, {}).allow) << form.ToString();
    }
    for (const IpAddress& form : EmbeddedForms(kPeer)) {
      Decision d = p.Decide(Tcp(form, 80));
      EXPECT_FALSE(d.allow) << form.ToString();
      EXPECT_EQ(d.key, "embedded group") << form.ToString();
      EXPECT_NE(d.reason.find("only 10.0.3.15 itself reaches that sandbox"), std::string::npos) << d.reason;
    }
    // The literal addresses keep their meaning.
    EXPECT_TRUE(p.Decide(EgressFlow{kGateway, Protocol::kUdp, 53, {}}).allow);
    EXPECT_TRUE(p.Decide(EgressFlow{Ip("fd00::2"), Protocol::kTcp, 53, {}}).allow);
    Decision peer = p.Decide(Tcp(kPeer, 80));
    EXPECT_TRUE(peer.allow);
    EXPECT_EQ(peer.kind, PeerKind::kGroup);
  }
}

TEST(Policy, MayResolveKeepsNamesHomeUnderNoneAndGroup) {
  for (NetworkPolicy profile : {NetworkPolicy::kNone, NetworkPolicy::kGroup}) {
    Policy bare = Make(profile, {}, nullptr);
    Decision d = bare.MayResolve("exfil.example.com");
    EXPECT_FALSE(d.allow);
    EXPECT_NE(d.reason.find("no rule allows a flow to exfil.example.com"), std::string::npos) << d.reason;
    // Only the group rule and deny or ingress rules: still nothing leaves.
    Policy group_only = Make(profile, {"allow@group", "deny@*.example.com", "allow:ingress@any"}, nullptr);
    EXPECT_FALSE(group_only.MayResolve("api.example.com").allow);

    Policy names = Make(profile, {"allow@api.example.com:tcp:443", "allow@*.corp.example"}, nullptr);
    EXPECT_TRUE(names.MayResolve("API.example.com.").allow);
    EXPECT_EQ(names.MayResolve("api.example.com").rule, 1);
    EXPECT_TRUE(names.MayResolve("db.corp.example").allow);
    EXPECT_FALSE(names.MayResolve("corp.example").allow);
    EXPECT_FALSE(names.MayResolve("other.example.com").allow);

    // An address rule may be reached under any name.
    Policy cidr = Make(profile, {"allow@203.0.113.0/24:tcp:443"}, nullptr);
    EXPECT_TRUE(cidr.MayResolve("anything.example").allow);
  }
  for (NetworkPolicy profile : {NetworkPolicy::kPublic, NetworkPolicy::kAny}) {
    EXPECT_TRUE(Make(profile, {}, nullptr).MayResolve("anything.example").allow);
  }
}

TEST(Policy, CloudCredentialEndpointsAreMeta) {
  Policy p = Make(NetworkPolicy::kAny, {"allow@private", "allow@link-local", "allow@169.254.0.0/16",
                                         "allow@[fd00::/8]", "allow@192.0.0.0/24"},
                  nullptr);
  for (const char* ip : {"169.254.169.254", "169.254.170.2", "169.254.170.23", "100.100.100.200",
                         "168.63.129.16", "192.0.0.192", "fd00:ec2::254", "fd00:ec2::23", "fd20:ce::254",
                         "::ffff:169.254.170.23", "64:ff9b::a9fe:aa17"}) {
    EXPECT_EQ(p.ClassName(Ip(ip)), "meta") << ip;
    Decision d = p.Decide(Tcp(ip, 80));
    EXPECT_FALSE(d.allow) << ip << ": " << d.reason;
    EXPECT_FALSE(p.MayReach(Ip(ip), {"metadata.example"}).allow) << ip;
  }
  // Only the meta group or the exact address opens one.
  EXPECT_TRUE(Make(NetworkPolicy::kNone, {"allow@meta"}, nullptr).Decide(Tcp("169.254.170.23", 80)).allow);
  EXPECT_TRUE(Make(NetworkPolicy::kNone, {"allow@[fd00:ec2::23]"}, nullptr).Decide(Tcp("fd00:ec2::23", 80)).allow);
  // Their neighbours keep their static class.
  EXPECT_EQ(p.ClassName(Ip("169.254.170.24")), "link-local");
  EXPECT_EQ(p.ClassName(Ip("fd00:ec2::24")), "private");
}

TEST(Policy, CompileRefusesAMalformedTarget) {
  schema::Network n;
  schema::NetworkRule r;
  r.target_kind = schema::NetworkRule::TargetKind::kCidr;
  r.target = "10.0.0.0/99";
  n.rules.push_back(r);
  auto p = Policy::Compile(n, {});
  ASSERT_FALSE(p.ok());
  EXPECT_NE(p.error().message().find("network rule 1"), std::string::npos) << p.error().message();
}

// ---- PinSet ----

TEST(PinSet, PinsBothWaysWithAMinimumLifetime) {
  PinSet pins;
  auto t0 = PinSet::Clock::time_point{} + std::chrono::hours(1);
  pins.Pin("API.example.com.", Ip("93.184.216.34"), std::chrono::seconds(5), t0);
  pins.Pin("cdn.example.net", Ip("93.184.216.34"), std::chrono::seconds(300), t0);
  pins.Pin("api.example.com", Ip("::ffff:93.184.216.35"), std::chrono::seconds(300), t0);
  EXPECT_EQ(pins.NamesFor(Ip("93.184.216.34"), t0),
            (std::vector<std::string>{"api.example.com", "cdn.example.net"}));
  EXPECT_EQ(pins.AddressesFor("api.example.com", t0),
            (std::vector<IpAddress>{Ip("93.184.216.34"), Ip("93.184.216.35")}));
  // TTL 5 s is held for the 60 s minimum.
  auto t59 = t0 + std::chrono::seconds(59);
  EXPECT_EQ(pins.NamesFor(Ip("93.184.216.34"), t59).size(), 2u);
  auto t61 = t0 + std::chrono::seconds(61);
  EXPECT_EQ(pins.NamesFor(Ip("93.184.216.34"), t61), (std::vector<std::string>{"cdn.example.net"}));
  pins.Expire(t61);
  EXPECT_EQ(pins.size(), 2u);
  // Re-pinning extends, never shortens.
  pins.Pin("cdn.example.net", Ip("93.184.216.34"), std::chrono::seconds(1), t61);
  EXPECT_EQ(pins.NamesFor(Ip("93.184.216.34"), t0 + std::chrono::seconds(299)).size(), 1u);
  // The maximum lifetime caps a huge TTL.
  pins.Pin("long.example", Ip("8.8.8.8"), std::chrono::seconds(86400 * 7), t0);
  EXPECT_TRUE(pins.NamesFor(Ip("8.8.8.8"), t0 + std::chrono::seconds(3601)).empty());
}

TEST(PinSet, IsBoundedAndEvictsTheFirstToExpire) {
  PinSet pins(PinSet::Options{3, std::chrono::seconds(60), std::chrono::seconds(3600)});
  auto t0 = PinSet::Clock::time_point{} + std::chrono::hours(1);
  pins.Pin("a.test", Ip("8.8.8.1"), std::chrono::seconds(600), t0);
  pins.Pin("b.test", Ip("8.8.8.2"), std::chrono::seconds(100), t0);
  pins.Pin("c.test", Ip("8.8.8.3"), std::chrono::seconds(900), t0);
  pins.Pin("d.test", Ip("8.8.8.4"), std::chrono::seconds(900), t0);
  EXPECT_EQ(pins.size(), 3u);
  EXPECT_TRUE(pins.NamesFor(Ip("8.8.8.2"), t0).empty());
  EXPECT_EQ(pins.NamesFor(Ip("8.8.8.4"), t0).size(), 1u);
  for (int i = 0; i < 1000; ++i) {
    pins.Pin("n" + std::to_string(i) + ".test", IpAddress::V4(0x08080000u + i), std::chrono::seconds(60 + i), t0);
  }
  EXPECT_EQ(pins.size(), 3u);
}

// ---- DenialLog ----

TEST(DenialLog, CountsPerReasonAndRateLimitsTheLog) {
  std::vector<std::string> lines;
  DenialLog log(2, [&](const std::string& l) { lines.push_back(l); });
  Policy p = Make(NetworkPolicy::kPublic, {"deny@8.8.8.8"}, nullptr);
  auto t0 = DenialLog::Clock::time_point{} + std::chrono::hours(1);
  for (int i = 0; i < 5; ++i) {
    std::string ip = "10.0.0." + std::to_string(i + 1);
    Decision d = p.Decide(Tcp(ip.c_str(), 80));
    log.Record(d, FlowText(*IpAddress::Parse(ip), Protocol::kTcp, 80), t0);
  }
  log.Record(p.Decide(Tcp("8.8.8.8", 80)), "tcp 8.8.8.8:80", t0 + std::chrono::milliseconds(10));
  log.Record(p.Decide(Tcp("93.184.216.34", 80)), "tcp 93.184.216.34:80", t0);  // allowed: ignored
  EXPECT_EQ(lines, (std::vector<std::string>{"deny tcp 10.0.0.1:80: profile public: 10.0.0.1 is private",
                                             "deny tcp 10.0.0.2:80: profile public: 10.0.0.2 is private"}));
  log.Flush(t0 + std::chrono::milliseconds(500));  // same window: still quiet
  EXPECT_EQ(lines.size(), 2u);
  log.Flush(t0 + std::chrono::milliseconds(1000));
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[2], "suppressed 4 denied flows");
  log.Flush(t0 + std::chrono::milliseconds(2500));
  EXPECT_EQ(lines.size(), 3u);
  EXPECT_EQ(log.total(), 6u);
  EXPECT_EQ(log.counts().at("profile public: private"), 5u);
  EXPECT_EQ(log.counts().at("rule 1"), 1u);
  EXPECT_EQ(FlowText(Ip("2001:db8::1"), Protocol::kUdp, 53), "udp [2001:db8::1]:53");
  EXPECT_EQ(FlowText(Ip("1.2.3.4"), Protocol::kIcmp, 0), "icmp 1.2.3.4");
}

// ---- properties ----

rc::Gen<IpAddress> AnyAddress() {
  return rc::gen::oneOf(
      rc::gen::map(rc::gen::arbitrary<uint32_t>(), [](uint32_t v) { return IpAddress::V4(v); }),
      rc::gen::map(rc::gen::arbitrary<std::array<uint8_t, 16>>(), [](std::array<uint8_t, 16> b) {
        return IpAddress::V6(b);
      }),
      rc::gen::element(kGateway, kPeer, kHostLan, IpAddress::V4(169, 254, 169, 254), IpAddress::V4(127, 0, 0, 1),
                       IpAddress::V4(10, 1, 2, 3), IpAddress::V4(0, 0, 0, 0)));
}

rc::Gen<EgressFlow> AnyFlow() {
  return rc::gen::build<EgressFlow>(
      rc::gen::set(&EgressFlow::dest, AnyAddress()),
      rc::gen::set(&EgressFlow::proto, rc::gen::element(Protocol::kTcp, Protocol::kUdp, Protocol::kIcmp)),
      rc::gen::set(&EgressFlow::port, rc::gen::oneOf(rc::gen::just<uint16_t>(53), rc::gen::arbitrary<uint16_t>())),
      rc::gen::set(&EgressFlow::names,
                   rc::gen::container<std::vector<std::string>>(
                       rc::gen::element<std::string>("api.example.com", "x.example.com", "evil.test"))));
}

const char* const kRulePool[] = {
    "allow@any",         "allow@public",       "allow@private:tcp:5432", "allow@host:tcp:22",
    "allow@meta",        "allow@loopback",     "allow@group",            "allow@10.0.0.0/8",
    "allow@*.example.com", "allow@api.example.com:tcp:443", "deny@1.2.3.4", "allow@[::/0]:udp",
    "allow@link-local",  "allow@multicast",    "deny@private:udp",       "allow@0.0.0.0/0:icmp",
};

RC_GTEST_PROP(PolicyProperties, LeadingDenyAllDeniesEveryFlow, ()) {
  HostAddresses host({kHostLan});
  auto profile = *rc::gen::element(NetworkPolicy::kNone, NetworkPolicy::kGroup, NetworkPolicy::kPublic,
                                   NetworkPolicy::kAny);
  std::vector<std::string> rules = {"deny@any"};
  for (size_t i : *rc::gen::container<std::vector<size_t>>(rc::gen::inRange<size_t>(0, std::size(kRulePool)))) {
    rules.push_back(kRulePool[i]);
  }
  Policy p = Make(profile, rules, &host);
  EgressFlow flow = *AnyFlow();
  Decision d = p.Decide(flow);
  bool dns_to_gateway = (flow.dest == kGateway || flow.dest == Ip("fd00::2")) && flow.port == 53 &&
                        (flow.proto == Protocol::kUdp || flow.proto == Protocol::kTcp);
  // DNS to the gateway's own address is the one flow no rule stops.
  RC_ASSERT(d.allow == dns_to_gateway);
  RC_ASSERT(p.MayReach(flow.dest, flow.names).allow == false);
}

// An embedded form decides like its IPv4 address, except for the gateway and
// group members, which only their own addresses reach.
RC_GTEST_PROP(PolicyProperties, EmbeddedFormsDecideLikeTheirIpv4, (uint32_t raw)) {
  HostAddresses host({kHostLan});
  auto profile = *rc::gen::element(NetworkPolicy::kNone, NetworkPolicy::kGroup, NetworkPolicy::kPublic,
                                   NetworkPolicy::kAny);
  std::vector<std::string> rules;
  for (size_t i : *rc::gen::container<std::vector<size_t>>(rc::gen::inRange<size_t>(0, std::size(kRulePool)))) {
    rules.push_back(kRulePool[i]);
  }
  Policy p = Make(profile, rules, &host);
  IpAddress v4 = *rc::gen::oneOf(rc::gen::just(IpAddress::V4(raw)),
                                 rc::gen::element(kGateway, kPeer, kHostLan, IpAddress::V4(169, 254, 169, 254)));
  std::array<uint8_t, 16> mapped{};
  mapped[10] = mapped[11] = 0xff;
  std::copy(v4.bytes().begin(), v4.bytes().begin() + 4, mapped.begin() + 12);
  std::array<uint8_t, 16> nat64 = {0x00, 0x64, 0xff, 0x9b};
  std::copy(v4.bytes().begin(), v4.bytes().begin() + 4, nat64.begin() + 12);
  uint16_t port = *rc::gen::arbitrary<uint16_t>();
  Decision want = p.Decide(Tcp(v4, port));
  for (const auto& b : {mapped, nat64}) {
    Decision got = p.Decide(Tcp(IpAddress::V6(b), port));
    if (v4 == kGateway || v4 == kPeer) {
      RC_ASSERT(!got.allow);
      RC_ASSERT(got.key == (v4 == kGateway ? "embedded gateway" : "embedded group"));
      continue;
    }
    RC_ASSERT(got.allow == want.allow);
    RC_ASSERT(got.key == want.key);
    RC_ASSERT(got.redirect_to_host_loopback == want.redirect_to_host_loopback);
  }
}

}  // namespace
}  // namespace msb::net
