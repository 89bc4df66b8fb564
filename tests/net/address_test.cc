// Tests of net/address: parsing, CIDR containment, canonicalisation of the
// IPv6 forms that embed IPv4, and classification (table and properties).
#include "net/address.h"

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

namespace msb::net {
namespace {

IpAddress Ip(const char* text) {
  auto ip = IpAddress::Parse(text);
  EXPECT_TRUE(ip.has_value()) << text;
  return ip.value_or(IpAddress());
}

AddressClass ClassOf(const char* text) { return Classify(Ip(text)).cls; }

TEST(IpAddress, ParsesAndFormats) {
  EXPECT_EQ(Ip("10.1.2.3").ToString(), "10.1.2.3");
  EXPECT_EQ(Ip("10.1.2.3").v4(), 0x0a010203u);
  EXPECT_TRUE(Ip("10.1.2.3").is_v4());
  EXPECT_EQ(Ip("2001:DB8:0::1").ToString(), "2001:db8::1");
  EXPECT_TRUE(Ip("::").is_v6());
  EXPECT_FALSE(IpAddress::Parse("10.1.2"));
  EXPECT_FALSE(IpAddress::Parse("10.1.2.256"));
  EXPECT_FALSE(IpAddress::Parse("[::1]"));
  EXPECT_FALSE(IpAddress::Parse("fe80::1%eth0"));
  EXPECT_FALSE(IpAddress::Parse(""));
  EXPECT_FALSE(IpAddress::Parse(std::string(100, '1')));
  EXPECT_NE(Ip("0.0.0.0"), Ip("::"));
  EXPECT_LT(Ip("10.0.0.1"), Ip("10.0.0.2"));
}

TEST(Cidr, ParsesClearsHostBitsAndContains) {
  auto c = Cidr::Parse("10.1.2.3/8");
  ASSERT_TRUE(c);
  EXPECT_EQ(c->ToString(), "10.0.0.0/8");
  EXPECT_TRUE(c->Contains(Ip("10.255.0.1")));
  EXPECT_FALSE(c->Contains(Ip("11.0.0.1")));
  EXPECT_FALSE(c->Contains(Ip("::ffff:10.0.0.1")));  // no canonicalisation here
  auto odd = Cidr::Parse("172.16.0.0/12");
  EXPECT_TRUE(odd->Contains(Ip("172.31.255.255")));
  EXPECT_FALSE(odd->Contains(Ip("172.32.0.0")));
  auto v6 = Cidr::Parse("fe80::/10");
  EXPECT_TRUE(v6->Contains(Ip("febf::1")));
  EXPECT_FALSE(v6->Contains(Ip("fec0::1")));
  EXPECT_EQ(Cidr::Parse("1.2.3.4")->prefix_len(), 32);
  EXPECT_EQ(Cidr::Parse("0.0.0.0/0")->prefix_len(), 0);
  EXPECT_TRUE(Cidr::Parse("0.0.0.0/0")->Contains(Ip("8.8.8.8")));
  EXPECT_FALSE(Cidr::Parse("10.0.0.0/33"));
  EXPECT_FALSE(Cidr::Parse("10.0.0.0/"));
  EXPECT_FALSE(Cidr::Parse("10.0.0.0/-1"));
  EXPECT_FALSE(Cidr::Parse("::/129"));
}

TEST(Canonicalize, UnwrapsEveryEmbeddingForm) {
  const IpAddress v4 = Ip("10.1.2.3");
  EXPECT_EQ(Canonicalize(Ip("::ffff:10.1.2.3")), v4);       // mapped
  EXPECT_EQ(Canonicalize(Ip("::ffff:0:10.1.2.3")), v4);     // translated
  EXPECT_EQ(Canonicalize(Ip("::10.1.2.3")), v4);            // compatible
  EXPECT_EQ(Canonicalize(Ip("64:ff9b::10.1.2.3")), v4);     // NAT64
  EXPECT_EQ(Canonicalize(Ip("64:ff9b:1:2::10.1.2.3")), v4);  // local-use NAT64
  EXPECT_EQ(Canonicalize(Ip("2002:a01:203::1")), v4);       // 6to4
  // Teredo: server 65.54.227.120, client 10.1.2.3 stored as ~0x0a010203.
  EXPECT_EQ(Canonicalize(Ip("2001:0:4136:e378:8000:63bf:f5fe:fdfc")), v4);
  EXPECT_EQ(Canonicalize(Ip("::1")), Ip("::1"));
  EXPECT_EQ(Canonicalize(Ip("::")), Ip("::"));
  EXPECT_EQ(Canonicalize(Ip("2001:db8::1")), Ip("2001:db8::1"));
  EXPECT_EQ(Canonicalize(v4), v4);
}

TEST(Classify, Table) {
  struct Case {
    const char* ip;
    AddressClass cls;
  };
  const Case cases[] = {
      {"0.0.0.0", AddressClass::kUnspecified},     {"::", AddressClass::kUnspecified},
      {"::ffff:0.0.0.0", AddressClass::kUnspecified},
      {"127.0.0.1", AddressClass::kLoopback},      {"127.255.0.9", AddressClass::kLoopback},
      {"::1", AddressClass::kLoopback},            {"::ffff:127.0.0.1", AddressClass::kLoopback},
      {"10.0.0.1", AddressClass::kPrivate},        {"172.16.5.4", AddressClass::kPrivate},
      {"172.31.255.255", AddressClass::kPrivate},  {"172.32.0.1", AddressClass::kPublic},
      {"192.168.1.1", AddressClass::kPrivate},     {"100.64.0.1", AddressClass::kPrivate},
      {"100.127.255.255", AddressClass::kPrivate}, {"100.128.0.1", AddressClass::kPublic},
      {"fd12:3456::1", AddressClass::kPrivate},    {"fc00::1", AddressClass::kPrivate},
      {"169.254.1.1", AddressClass::kLinkLocal},   {"fe80::1", AddressClass::kLinkLocal},
      {"224.0.0.251", AddressClass::kMulticast},   {"239.255.255.250", AddressClass::kMulticast},
      {"ff02::fb", AddressClass::kMulticast},      {"255.255.255.255", AddressClass::kBroadcast},
      {"0.1.2.3", AddressClass::kReserved},        {"192.0.0.8", AddressClass::kReserved},
      {"198.18.0.1", AddressClass::kReserved},     {"198.19.255.255", AddressClass::kReserved},
      {"240.0.0.1", AddressClass::kReserved},      {"100::1", AddressClass::kReserved},
      {"2001:2::1", AddressClass::kReserved},
      {"192.0.2.1", AddressClass::kDocumentation}, {"198.51.100.7", AddressClass::kDocumentation},
      {"203.0.113.9", AddressClass::kDocumentation}, {"2001:db8::1", AddressClass::kDocumentation},
      {"169.254.169.254", AddressClass::kMeta},    {"169.254.170.2", AddressClass::kMeta},
      {"100.100.100.200", AddressClass::kMeta},    {"168.63.129.16", AddressClass::kMeta},
      {"fd00:ec2::254", AddressClass::kMeta},      {"::ffff:169.254.169.254", AddressClass::kMeta},
      {"169.254.170.23", AddressClass::kMeta},     {"fd00:ec2::23", AddressClass::kMeta},
      {"192.0.0.192", AddressClass::kMeta},        {"fd20:ce::254", AddressClass::kMeta},
      {"2002:a9fe:aa17::1", AddressClass::kMeta},
      {"64:ff9b::169.254.169.254", AddressClass::kMeta},
      {"93.184.216.34", AddressClass::kPublic},    {"8.8.8.8", AddressClass::kPublic},
      {"2606:4700::1111", AddressClass::kPublic},  {"64:ff9b::8.8.8.8", AddressClass::kPublic},
      {"2002:808:808::1", AddressClass::kPublic},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(ToString(ClassOf(c.ip)), std::string(ToString(c.cls))) << c.ip;
  }
  EXPECT_EQ(Classify(Ip("10.9.9.9")).range, "10.0.0.0/8 (RFC 1918)");
  EXPECT_EQ(Classify(Ip("::ffff:10.9.9.9")).canonical, Ip("10.9.9.9"));
}

TEST(SpecialRanges, AreTheTableClassifyReads) {
  // Every row classifies its own base address as its class unless an
  // earlier row holds that address (the table's first-match order) or it
  // embeds an IPv4 address; no row is public.
  const auto& ranges = SpecialRanges();
  ASSERT_GT(ranges.size(), 20u);
  for (size_t i = 0; i < ranges.size(); ++i) {
    bool shadowed = false;
    for (size_t j = 0; j < i; ++j) shadowed |= ranges[j].cidr.Contains(ranges[i].cidr.base());
    // 2001::/23's base is a Teredo form, judged by the IPv4 it embeds.
    shadowed |= Canonicalize(ranges[i].cidr.base()) != ranges[i].cidr.base();
    if (!shadowed) EXPECT_EQ(Classify(ranges[i].cidr.base()).cls, ranges[i].cls) << ranges[i].what;
    EXPECT_NE(ranges[i].cls, AddressClass::kPublic) << ranges[i].what;
    EXPECT_FALSE(ranges[i].what.empty());
  }
  EXPECT_EQ(Classify(Ip("8.8.8.8")).cls, AddressClass::kPublic);
}

TEST(Ipv4EmbeddingPrefixes, HoldTheFormsCanonicalizeUnwraps) {
  // An address inside each prefix (not :: or ::1) canonicalises to IPv4; an
  // IPv6 address outside all of them stays IPv6.
  for (const Cidr& p : Ipv4EmbeddingPrefixes()) {
    auto bytes = p.base().bytes();
    bytes[13] = 1;  // an embedded 0.1.x.x-ish low part, never :: or ::1
    bytes[15] = 7;
    IpAddress inside = IpAddress::V6(bytes);
    ASSERT_TRUE(p.Contains(inside)) << p.ToString();
    EXPECT_TRUE(Canonicalize(inside).is_v4()) << p.ToString();
  }
  for (const char* outside : {"2001:db8::1", "2600::1", "fd00::1", "64:ff9c::a00:1", "2003::1"}) {
    bool in_some = false;
    for (const Cidr& p : Ipv4EmbeddingPrefixes()) in_some |= p.Contains(Ip(outside));
    EXPECT_FALSE(in_some) << outside;
    EXPECT_TRUE(Canonicalize(Ip(outside)).is_v6()) << outside;
  }
}

TEST(HostAddresses, ReadsTheHostsInterfaces) {
  HostAddresses host;
  EXPECT_FALSE(host.Contains(Ip("127.0.0.1")));
  ASSERT_TRUE(host.Refresh().ok());
  // Every Linux host has lo; its address is the host's own.
  EXPECT_TRUE(host.Contains(Ip("127.0.0.1")));
  EXPECT_TRUE(host.Contains(Ip("::ffff:127.0.0.1")));
  EXPECT_FALSE(host.Contains(Ip("192.0.2.77")));
  ASSERT_TRUE(host.RefreshIfOlder(std::chrono::seconds(60)).ok());
  HostAddresses fixed({Ip("::ffff:192.0.2.5")});
  EXPECT_TRUE(fixed.Contains(Ip("192.0.2.5")));
  EXPECT_FALSE(fixed.Contains(Ip("192.0.2.6")));
}

// ---- properties ----

IpAddress V6Of(const std::array<uint8_t, 16>& b) { return IpAddress::V6(b); }

// Every IPv6 form that embeds v4.
std::vector<IpAddress> Embeddings(const IpAddress& v4, uint32_t salt) {
  auto b4 = v4.bytes();
  std::vector<IpAddress> out;
  std::array<uint8_t, 16> b{};
  // ::ffff:a.b.c.d
  b = {};
  b[10] = b[11] = 0xff;
  std::copy(b4.begin(), b4.begin() + 4, b.begin() + 12);
  out.push_back(V6Of(b));
  // ::ffff:0:a.b.c.d
  b = {};
  b[8] = b[9] = 0xff;
  std::copy(b4.begin(), b4.begin() + 4, b.begin() + 12);
  out.push_back(V6Of(b));
  // ::a.b.c.d (not for 0.0.0.0 and 0.0.0.1, which are :: and ::1)
  if (v4.v4() > 1) {
    b = {};
    std::copy(b4.begin(), b4.begin() + 4, b.begin() + 12);
    out.push_back(V6Of(b));
  }
  // 64:ff9b::/96
  b = {0x00, 0x64, 0xff, 0x9b};
  std::copy(b4.begin(), b4.begin() + 4, b.begin() + 12);
  out.push_back(V6Of(b));
  // 64:ff9b:1::/48, any bits between
  b = {0x00, 0x64, 0xff, 0x9b, 0x00, 0x01};
  for (int i = 6; i < 12; ++i) b[i] = static_cast<uint8_t>(salt >> (i % 4 * 8));
  std::copy(b4.begin(), b4.begin() + 4, b.begin() + 12);
  out.push_back(V6Of(b));
  // 2002:AABB:CCDD::/48, any subnet and interface id
  b = {0x20, 0x02};
  std::copy(b4.begin(), b4.begin() + 4, b.begin() + 2);
  for (int i = 6; i < 16; ++i) b[i] = static_cast<uint8_t>(salt >> (i % 4 * 8));
  out.push_back(V6Of(b));
  // Teredo: any server, flags and port; client XOR ffffffff
  b = {0x20, 0x01, 0x00, 0x00};
  for (int i = 4; i < 12; ++i) b[i] = static_cast<uint8_t>(salt >> (i % 4 * 8));
  for (int i = 0; i < 4; ++i) b[12 + i] = static_cast<uint8_t>(~b4[i]);
  out.push_back(V6Of(b));
  return out;
}

RC_GTEST_PROP(AddressProperties, EmbeddedFormsClassifyLikeTheirIpv4, (uint32_t raw, uint32_t salt)) {
  IpAddress v4 = IpAddress::V4(raw);
  Classification want = Classify(v4);
  for (const IpAddress& v6 : Embeddings(v4, salt)) {
    RC_ASSERT(Canonicalize(v6) == v4);
    Classification got = Classify(v6);
    RC_ASSERT(got.cls == want.cls);
    RC_ASSERT(got.canonical == v4);
  }
}

RC_GTEST_PROP(AddressProperties, CanonicalizeIsIdempotent, (std::array<uint8_t, 16> raw, uint32_t v4raw)) {
  IpAddress a = IpAddress::V6(raw);
  RC_ASSERT(Canonicalize(Canonicalize(a)) == Canonicalize(a));
  for (const IpAddress& e : Embeddings(IpAddress::V4(v4raw), v4raw * 2654435761u)) {
    RC_ASSERT(Canonicalize(Canonicalize(e)) == Canonicalize(e));
  }
  RC_ASSERT(Canonicalize(IpAddress::V4(v4raw)) == IpAddress::V4(v4raw));
}

RC_GTEST_PROP(AddressProperties, ListedRangesAreNeverPublic, (std::array<uint8_t, 16> noise, uint8_t pick)) {
  struct R {
    const char* cidr;
    AddressClass cls;
  };
  // Every non-public range of the classification, with the class an address
  // in it must have unless a more specific listed range inside it decides.
  static const R kRanges[] = {
      {"0.0.0.0/8", AddressClass::kReserved},        {"10.0.0.0/8", AddressClass::kPrivate},
      {"100.64.0.0/10", AddressClass::kPrivate},     {"127.0.0.0/8", AddressClass::kLoopback},
      {"169.254.0.0/16", AddressClass::kLinkLocal},  {"172.16.0.0/12", AddressClass::kPrivate},
      {"192.0.0.0/24", AddressClass::kReserved},     {"192.0.2.0/24", AddressClass::kDocumentation},
      {"192.168.0.0/16", AddressClass::kPrivate},    {"198.18.0.0/15", AddressClass::kReserved},
      {"198.51.100.0/24", AddressClass::kDocumentation}, {"203.0.113.0/24", AddressClass::kDocumentation},
      {"224.0.0.0/4", AddressClass::kMulticast},     {"240.0.0.0/4", AddressClass::kReserved},
      {"::1/128", AddressClass::kLoopback},          {"fc00::/7", AddressClass::kPrivate},
      {"fe80::/10", AddressClass::kLinkLocal},       {"ff00::/8", AddressClass::kMulticast},
      {"2001:db8::/32", AddressClass::kDocumentation}, {"100::/64", AddressClass::kReserved},
      {"2001:2::/48", AddressClass::kReserved},      {"3fff::/20", AddressClass::kDocumentation},
  };
  const R& r = kRanges[pick % (sizeof(kRanges) / sizeof(kRanges[0]))];
  Cidr cidr = *Cidr::Parse(r.cidr);
  auto base = cidr.base().bytes();
  std::array<uint8_t, 16> b{};
  int bits = cidr.base().is_v4() ? 32 : 128;
  for (int i = 0; i < bits / 8; ++i) {
    int keep = std::clamp(cidr.prefix_len() - i * 8, 0, 8);
    uint8_t mask = static_cast<uint8_t>(0xff00 >> keep);
    b[i] = static_cast<uint8_t>((base[i] & mask) | (noise[i] & ~mask));
  }
  IpAddress ip = cidr.base().is_v4() ? IpAddress::V4(b[0], b[1], b[2], b[3]) : IpAddress::V6(b);
  RC_ASSERT(cidr.Contains(ip));
  Classification c = Classify(ip);
  RC_ASSERT(c.cls != AddressClass::kPublic);
  // The more specific ranges inside the listed ones: unspecified, meta, broadcast.
  bool special = c.cls == AddressClass::kUnspecified || c.cls == AddressClass::kMeta ||
                 c.cls == AddressClass::kBroadcast;
  RC_ASSERT(special || c.cls == r.cls);
  // And every embedded form of an IPv4 one is not public either.
  if (ip.is_v4()) {
    for (const IpAddress& e : Embeddings(ip, noise[0])) RC_ASSERT(Classify(e).cls != AddressClass::kPublic);
  }
}

}  // namespace
}  // namespace msb::net
