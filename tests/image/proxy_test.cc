// image/proxy.cc: proxy URLs, the variables and their precedence, NO_PROXY
// as curl matches it, loopback as docker treats it. Pure functions; the proxy
// on the wire is in registry_docker_test.cc.
#include "image/proxy.h"

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <map>

namespace msb::image::http {
namespace {

TEST(ProxyUrl, HostPortCredentialsAndDefaults) {
  auto p = ParseProxyUrl("http://us%40er:p%3Ass@Proxy.Example:3128/", "HTTPS_PROXY");
  ASSERT_TRUE(p.ok()) << p.error().message();
  EXPECT_EQ(p->host, "proxy.example");
  EXPECT_EQ(p->port, 3128);
  EXPECT_TRUE(p->has_credentials);
  EXPECT_EQ(p->username, "us@er");
  EXPECT_EQ(p->password, "p:ss");
  EXPECT_EQ(p->Authorization(), "Basic dXNAZXI6cDpzcw==");
  EXPECT_EQ(p->Display(), "http://proxy.example:3128 (from HTTPS_PROXY)");

  auto bare = ParseProxyUrl("10.0.0.1", "http_proxy");
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(bare->port, 80);
  EXPECT_FALSE(bare->has_credentials);
  EXPECT_EQ(bare->Authorization(), "");

  auto v6 = ParseProxyUrl("http://[fd00::1]:8080", "HTTP_PROXY");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "fd00::1");
  EXPECT_EQ(v6->HostPort(), "[fd00::1]:8080");
}

TEST(ProxyUrl, ErrorsNameTheVariableAndNeverTheSecret) {
  for (const char* bad : {"socks5://u:topsecret@h:1080", "https://u:topsecret@h:443", "http://u:topsecret@:3128",
                          "http://u:topsecret@h:99999", "http://u:topsecret@h:12x", "http://u:top%zzsecret@h:1"}) {
    auto p = ParseProxyUrl(bad, "HTTPS_PROXY");
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_NE(p.error().message().find("HTTPS_PROXY"), std::string::npos) << p.error().message();
    EXPECT_EQ(p.error().message().find("topsecret"), std::string::npos) << p.error().message();
    EXPECT_EQ(p.error().message().find("top%zz"), std::string::npos) << p.error().message();
  }
}

TEST(NoProxy, MatchesLikeCurl) {
  struct Case {
    const char* list;
    const char* host;
    bool match;
  };
  const Case cases[] = {
      {"", "reg.example", false},
      {"*", "reg.example", true},
      {"*", "10.1.2.3", true},
      {"example.com", "example.com", true},
      {"example.com", "reg.example.com", true},
      {"example.com", "badexample.com", false},
      {".example.com", "example.com", true},
      {".example.com", "a.b.example.com", true},
      {"*.example.com", "reg.example.com", true},
      {"EXAMPLE.com.", "Reg.Example.COM.", true},
      {"other.org, example.com", "reg.example.com", true},
      {"other.org,,  ", "reg.example.com", false},
      {"reg.example.com", "example.com", false},
      {"10.1.2.3", "10.1.2.3", true},
      {"10.1.2.3", "10.1.2.4", false},
      {"10.0.0.0/8", "10.200.0.1", true},
      {"10.0.0.0/8", "11.0.0.1", false},
      {"192.168.1.0/23", "192.168.0.9", true},
      {"192.168.1.0/24", "192.168.0.9", false},
      {"0.0.0.0/0", "203.0.113.9", true},
      {"10.0.0.0/8", "ten.example", false},  // names are not resolved
      {"fd00::/8", "fd12::1", true},
      {"fd00::/8", "[fd12::1]", true},
      {"[fd00::1]", "fd00::1", true},
      {"fd00::/8", "fe80::1", false},
      {"10.0.0.0/8", "fd00::1", false},
      {"10.0.0.0/33", "10.0.0.1", false},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(NoProxyMatches(c.list, c.host), c.match) << "NO_PROXY=" << c.list << " host " << c.host;
  }
}

RC_GTEST_PROP(NoProxy, ANameMatchesItselfItsSubdomainsAndStar, ()) {
  auto label = *rc::gen::nonEmpty(rc::gen::container<std::string>(rc::gen::elementOf(std::string("abcxyz0189-"))));
  std::string domain = label + ".test";
  RC_ASSERT(NoProxyMatches(domain, domain));
  RC_ASSERT(NoProxyMatches(domain, "www." + domain));
  RC_ASSERT(NoProxyMatches("." + domain, "x." + domain));
  RC_ASSERT(NoProxyMatches("*", domain));
  RC_ASSERT(!NoProxyMatches(domain, "x" + domain));
}

RC_GTEST_PROP(NoProxy, AnIpv4CidrMatchesExactlyItsPrefix, ()) {
  uint32_t net = *rc::gen::arbitrary<uint32_t>();
  uint32_t host = *rc::gen::arbitrary<uint32_t>();
  unsigned bits = *rc::gen::inRange(0u, 33u);
  auto text = [](uint32_t a) {
    return std::to_string(a >> 24) + "." + std::to_string((a >> 16) & 255) + "." + std::to_string((a >> 8) & 255) +
           "." + std::to_string(a & 255);
  };
  uint32_t mask = bits == 0 ? 0 : ~uint32_t{0} << (32 - bits);
  bool inside = (net & mask) == (host & mask);
  RC_ASSERT(NoProxyMatches(text(net) + "/" + std::to_string(bits), text(host)) == inside);
}

TEST(ProxyEnv, LowercaseWinsAndEachSchemeHasItsOwn) {
  std::map<std::string, std::string> vars = {{"http_proxy", "http://lower:1"},
                                             {"HTTP_PROXY", "http://upper:2"},
                                             {"HTTPS_PROXY", "http://secure:3"},
                                             {"NO_PROXY", "direct.example"}};
  auto env = ProxyEnv::FromEnvironment([&](const char* n) -> const char* {
    auto it = vars.find(n);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
  auto http = env.For("http", "reg.example");
  ASSERT_TRUE(http.ok());
  ASSERT_NE(*http, nullptr);
  EXPECT_EQ((*http)->host, "lower");
  EXPECT_EQ((*http)->source, "http_proxy");
  auto https = env.For("https", "reg.example");
  ASSERT_TRUE(https.ok());
  ASSERT_NE(*https, nullptr);
  EXPECT_EQ((*https)->host, "secure");
  EXPECT_EQ(*env.For("https", "direct.example"), nullptr);
  EXPECT_EQ(*env.For("https", "a.direct.example"), nullptr);
}

TEST(ProxyEnv, LoopbackGoesDirectLikeDockerButNamesResolvingThereDoNot) {
  std::map<std::string, std::string> vars = {{"HTTPS_PROXY", "http://proxy:3128"}};
  auto env = ProxyEnv::FromEnvironment([&](const char* n) -> const char* {
    auto it = vars.find(n);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
  for (const char* h : {"127.0.0.1", "127.9.9.9", "::1", "[::1]", "localhost", "LOCALHOST.", "::ffff:127.0.0.1"}) {
    EXPECT_TRUE(IsLoopbackHost(h)) << h;
    EXPECT_EQ(*env.For("https", h), nullptr) << h;
  }
  for (const char* h : {"registry.test", "128.0.0.1", "::2", "localhost.example"}) {
    EXPECT_FALSE(IsLoopbackHost(h)) << h;
    EXPECT_NE(*env.For("https", h), nullptr) << h;
  }
  EXPECT_EQ(*env.For("http", "registry.test"), nullptr);  // no http proxy set
}

TEST(ProxyEnv, AMalformedVariableFailsOnlyRequestsThatWouldUseIt) {
  std::map<std::string, std::string> vars = {{"HTTPS_PROXY", "socks5://u:pw@h:1"}, {"NO_PROXY", "inside.example"}};
  auto env = ProxyEnv::FromEnvironment([&](const char* n) -> const char* {
    auto it = vars.find(n);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
  auto r = env.For("https", "reg.example");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("HTTPS_PROXY"), std::string::npos);
  EXPECT_TRUE(env.For("https", "inside.example").ok());
  EXPECT_TRUE(env.For("http", "reg.example").ok());
}

}  // namespace
}  // namespace msb::image::http
