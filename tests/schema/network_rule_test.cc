// Tests for the network rule grammar (schema/network_rule.h): every part of
// <action>[:<direction>]@<target>[:<proto>[:<ports>]] accepted and refused,
// the refusal naming the part.
#include "schema/network_rule.h"

#include <gtest/gtest.h>

namespace msb::schema {
namespace {

std::string Canon(std::string_view text) {
  auto r = ParseNetworkRule(text);
  EXPECT_TRUE(r.ok()) << text << ": " << (r.ok() ? "" : r.error().message());
  return r.ok() ? ToString(*r) : "";
}

std::string Why(std::string_view text) {
  auto r = ParseNetworkRule(text);
  EXPECT_FALSE(r.ok()) << text;
  return r.ok() ? "" : r.error().message();
}

TEST(NetworkRuleTest, AcceptsTheExamplesOfTheFormat) {
  EXPECT_EQ(Canon("allow@api.github.com:tcp:443"), "allow:egress@api.github.com:tcp:443");
  EXPECT_EQ(Canon("deny@*.ads.example.com"), "deny:egress@*.ads.example.com:any");
  EXPECT_EQ(Canon("allow@10.1.2.0/24:tcp:5432"), "allow:egress@10.1.2.0/24:tcp:5432");
  EXPECT_EQ(Canon("allow:ingress@group:tcp:80"), "allow:ingress@group:tcp:80");
}

TEST(NetworkRuleTest, ParsesEveryTargetKind) {
  auto r = ParseNetworkRule("deny:egress@private");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->action, NetworkRule::Action::kDeny);
  EXPECT_EQ(r->target_kind, NetworkRule::TargetKind::kGroup);
  for (const char* g : {"public", "private", "loopback", "link-local", "meta", "multicast", "host", "group", "any"}) {
    EXPECT_EQ(ParseNetworkRule(std::string("allow@") + g)->target_kind, NetworkRule::TargetKind::kGroup) << g;
  }
  EXPECT_EQ(ParseNetworkRule("allow@1.2.3.4")->target_kind, NetworkRule::TargetKind::kIp);
  EXPECT_EQ(ParseNetworkRule("allow@[2001:db8::1]:tcp")->target_kind, NetworkRule::TargetKind::kIp);
  EXPECT_EQ(ParseNetworkRule("allow@[2001:db8::/32]")->target_kind, NetworkRule::TargetKind::kCidr);
  EXPECT_EQ(ParseNetworkRule("allow@Example.COM")->target, "example.com");
  EXPECT_EQ(ParseNetworkRule("allow@*.example.com")->target_kind, NetworkRule::TargetKind::kDomainSuffix);
}

TEST(NetworkRuleTest, CanonicalFormNormalisesAndReadsBack) {
  EXPECT_EQ(Canon("allow@10.1.2.3/24"), "allow:egress@10.1.2.0/24:any");
  EXPECT_EQ(Canon("allow@[2001:DB8::1]:udp:53"), "allow:egress@[2001:db8::1]:udp:53");
  EXPECT_EQ(Canon("allow@1.2.3.4:tcp:80,443,8000-8100"), "allow:egress@1.2.3.4:tcp:80,443,8000-8100");
  EXPECT_EQ(Canon("allow@db."), "allow:egress@db.:any");  // a one-label host keeps its dot
  EXPECT_EQ(Canon("allow@db"), "allow:egress@db.:any");
  EXPECT_EQ(Canon("allow@icmp-host.example:icmp"), "allow:egress@icmp-host.example:icmp");
  for (const char* text : {"allow:egress@10.1.2.0/24:any", "allow:egress@[2001:db8::1]:udp:53",
                           "allow:egress@db.:any", "deny:ingress@*.x.org:tcp:1-2,3"}) {
    EXPECT_EQ(Canon(Canon(text)), Canon(text));
  }
}

TEST(NetworkRuleTest, NamesTheWrongPart) {
  EXPECT_EQ(Why("alow@x.com"),
            "invalid rule \"alow@x.com\": action \"alow\" must be allow or deny; did you mean \"allow\"? "
            "(expected <action>[:<direction>]@<target>[:<proto>[:<ports>]])");
  EXPECT_NE(Why("allow:outbound@x.com").find("direction \"outbound\" must be egress or ingress"), std::string::npos);
  EXPECT_NE(Why("allow@x.com:tpc").find("proto \"tpc\" must be tcp, udp, icmp or any; did you mean \"tcp\"?"),
            std::string::npos);
  EXPECT_NE(Why("allow@x.com:tcp:0").find("ports \"0\" must be a port from 1 to 65535"), std::string::npos);
  EXPECT_NE(Why("allow@x.com:tcp:90-80").find("ports range \"90-80\" runs backwards"), std::string::npos);
  EXPECT_NE(Why("allow@x.com:tcp:").find("ports are empty"), std::string::npos);
  EXPECT_NE(Why("allow@x.com:icmp:8").find("ports: icmp has no ports"), std::string::npos);
  EXPECT_NE(Why("allow@x.com:tcp:80,").find("ports \"\""), std::string::npos);
  EXPECT_NE(Why("allow@::1").find("target is empty (IPv6 addresses go in brackets"), std::string::npos);
  EXPECT_NE(Why("allow@10.0.0.0/33").find("target \"10.0.0.0/33\" is not an IPv4 CIDR"), std::string::npos);
  EXPECT_NE(Why("allow@[1.2.3.4]").find("target \"1.2.3.4\" in brackets is not an IPv6 address"), std::string::npos);
  EXPECT_NE(Why("allow@exa mple.com").find("target \"exa mple.com\" is not a group, IP address"), std::string::npos);
  EXPECT_NE(Why("allow@*.").find("target \"*.\""), std::string::npos);
  EXPECT_NE(Why("allow@pubic").find("target \"pubic\" is not a group; did you mean \"public\"?"), std::string::npos);
  EXPECT_NE(Why("allow x.com").find("missing '@'"), std::string::npos);
  EXPECT_NE(Why("allow@[::1").find("missing its closing ']'"), std::string::npos);
}

TEST(NetworkRuleTest, DecodesTheCanonicalNetworkItPrints) {
  Network declared;
  declared.policy = NetworkPolicy::kGroup;
  declared.rebind_protection = false;
  std::vector<std::string> rules;
  for (const char* text : {"allow:egress@10.1.2.0/24:tcp:5432", "deny:ingress@*.x.org:udp:1-2,3"}) {
    declared.rules.push_back(*ParseNetworkRule(text));
    rules.push_back(ToString(declared.rules.back()));
  }
  auto decoded = NetworkFromCanonical(ToString(declared.policy), rules, declared.rebind_protection);
  ASSERT_TRUE(decoded.ok()) << decoded.error().message();
  EXPECT_EQ(decoded->policy, NetworkPolicy::kGroup);
  EXPECT_FALSE(decoded->rebind_protection);
  ASSERT_EQ(decoded->rules.size(), 2u);
  for (size_t i = 0; i < rules.size(); ++i) EXPECT_EQ(ToString(decoded->rules[i]), rules[i]);

  for (auto p : {NetworkPolicy::kNone, NetworkPolicy::kGroup, NetworkPolicy::kPublic, NetworkPolicy::kAny}) {
    EXPECT_EQ(ParseNetworkPolicy(ToString(p)), p);
  }
  auto bad_profile = NetworkFromCanonical("private", {}, true);
  ASSERT_FALSE(bad_profile.ok());
  EXPECT_EQ(bad_profile.error().message(), "network.policy \"private\" is not none, group, public or any");
  auto bad_rule = NetworkFromCanonical("public", {"allow@x.com:tcp:80", "allow@x.com:tpc"}, true);
  ASSERT_FALSE(bad_rule.ok());
  EXPECT_EQ(bad_rule.error().message().rfind("network rule 2: invalid rule \"allow@x.com:tpc\"", 0), 0u)
      << bad_rule.error().message();
}

}  // namespace
}  // namespace msb::schema
