// IP address value type, canonicalisation and classification (address.h).
// The range tables are ordered: the first containing range decides.
#include "net/address.h"

#include <arpa/inet.h>
#include <ifaddrs.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <netinet/in.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace msb::net {

std::optional<IpAddress> IpAddress::FromBytes(const uint8_t* data, size_t len) {
  if (len == 4) return V4(data[0], data[1], data[2], data[3]);
  if (len == 16) {
    std::array<uint8_t, 16> b;
    std::memcpy(b.data(), data, 16);
    return V6(b);
  }
  return std::nullopt;
}

std::optional<IpAddress> IpAddress::FromSockaddr(const sockaddr* sa) {
  if (sa == nullptr) return std::nullopt;
  if (sa->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    return FromBytes(reinterpret_cast<const uint8_t*>(&in->sin_addr), 4);
  }
  if (sa->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    return FromBytes(reinterpret_cast<const uint8_t*>(&in6->sin6_addr), 16);
  }
  return std::nullopt;
}

std::optional<IpAddress> IpAddress::Parse(std::string_view text) {
  if (text.empty() || text.size() > INET6_ADDRSTRLEN) return std::nullopt;
  std::string s(text);
  uint8_t buf[16];
  if (s.find(':') == std::string::npos) {
    if (inet_pton(AF_INET, s.c_str(), buf) != 1) return std::nullopt;
    return FromBytes(buf, 4);
  }
  if (inet_pton(AF_INET6, s.c_str(), buf) != 1) return std::nullopt;
  return FromBytes(buf, 16);
}

std::string IpAddress::ToString() const {
  char out[INET6_ADDRSTRLEN];
  inet_ntop(is_v4() ? AF_INET : AF_INET6, bytes_.data(), out, sizeof out);
  return out;
}

socklen_t IpAddress::ToSockaddr(uint16_t port, sockaddr_storage* out) const {
  std::memset(out, 0, sizeof(*out));
  if (is_v6()) {
    auto* s6 = reinterpret_cast<sockaddr_in6*>(out);
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(port);
    std::memcpy(&s6->sin6_addr, bytes_.data(), 16);
    return sizeof(sockaddr_in6);
  }
  auto* s4 = reinterpret_cast<sockaddr_in*>(out);
  s4->sin_family = AF_INET;
  s4->sin_port = htons(port);
  std::memcpy(&s4->sin_addr, bytes_.data(), 4);
  return sizeof(sockaddr_in);
}

Cidr::Cidr(const IpAddress& base, int prefix_len) : prefix_len_(prefix_len) {
  int bits = base.is_v4() ? 32 : 128;
  MSB_CHECK(prefix_len >= 0 && prefix_len <= bits, "prefix length out of range");
  std::array<uint8_t, 16> b = base.bytes();
  for (int i = 0; i < 16; ++i) {
    int keep = std::clamp(prefix_len - i * 8, 0, 8);
    b[i] &= static_cast<uint8_t>(0xff00 >> keep);
  }
  base_ = base.is_v4() ? IpAddress::V4(b[0], b[1], b[2], b[3]) : IpAddress::V6(b);
}

std::optional<Cidr> Cidr::Parse(std::string_view text) {
  size_t slash = text.find('/');
  auto ip = IpAddress::Parse(text.substr(0, slash));
  if (!ip) return std::nullopt;
  int bits = ip->is_v4() ? 32 : 128;
  if (slash == std::string_view::npos) return Cidr(*ip, bits);
  std::string_view len = text.substr(slash + 1);
  if (len.empty() || len.size() > 3 || len.find_first_not_of("0123456789") != std::string_view::npos) {
    return std::nullopt;
  }
  int n = 0;
  for (char c : len) n = n * 10 + (c - '0');
  if (n > bits) return std::nullopt;
  return Cidr(*ip, n);
}

bool Cidr::Contains(const IpAddress& ip) const {
  if (ip.family() != base_.family()) return false;
  const auto& a = ip.bytes();
  const auto& b = base_.bytes();
  int full = prefix_len_ / 8;
  if (std::memcmp(a.data(), b.data(), full) != 0) return false;
  int rest = prefix_len_ % 8;
  if (rest == 0) return true;
  uint8_t mask = static_cast<uint8_t>(0xff00 >> rest);
  return (a[full] & mask) == (b[full] & mask);
}

std::string Cidr::ToString() const { return base_.ToString() + "/" + std::to_string(prefix_len_); }

namespace {

bool HasPrefix(const std::array<uint8_t, 16>& b, std::initializer_list<uint8_t> prefix) {
  size_t i = 0;
  for (uint8_t p : prefix) {
    if (b[i++] != p) return false;
  }
  return true;
}

IpAddress V4At(const std::array<uint8_t, 16>& b, size_t at, uint32_t xor_mask = 0) {
  uint32_t v = (uint32_t{b[at]} << 24) | (uint32_t{b[at + 1]} << 16) | (uint32_t{b[at + 2]} << 8) |
               b[at + 3];
  return IpAddress::V4(v ^ xor_mask);
}

bool AllZero(const std::array<uint8_t, 16>& b, size_t from, size_t to) {
  for (size_t i = from; i < to; ++i) {
    if (b[i] != 0) return false;
  }
  return true;
}

}  // namespace

IpAddress Canonicalize(const IpAddress& ip) {
  if (ip.is_v4()) return ip;
  const auto& b = ip.bytes();
  // ::ffff:a.b.c.d (mapped)
  if (AllZero(b, 0, 10) && b[10] == 0xff && b[11] == 0xff) return V4At(b, 12);
  // ::ffff:0:a.b.c.d (SIIT translated)
  if (AllZero(b, 0, 8) && b[8] == 0xff && b[9] == 0xff && b[10] == 0 && b[11] == 0) return V4At(b, 12);
  // ::a.b.c.d (compatible, deprecated); :: and ::1 keep their IPv6 meaning.
  if (AllZero(b, 0, 12) && !(AllZero(b, 12, 15) && b[15] <= 1)) return V4At(b, 12);
  // 64:ff9b::/96 (well-known NAT64 prefix)
  if (HasPrefix(b, {0x00, 0x64, 0xff, 0x9b}) && AllZero(b, 4, 12)) return V4At(b, 12);
  // 64:ff9b:1::/48 (local-use NAT64); the /96 layout: the IPv4 in the last 32 bits.
  if (HasPrefix(b, {0x00, 0x64, 0xff, 0x9b, 0x00, 0x01})) return V4At(b, 12);
  // 2002::/16 (6to4): 2002:AABB:CCDD::
  if (HasPrefix(b, {0x20, 0x02})) return V4At(b, 2);
  // 2001:0000::/32 (Teredo): the client's address, obfuscated.
  if (HasPrefix(b, {0x20, 0x01, 0x00, 0x00})) return V4At(b, 12, 0xffffffffu);
  return ip;
}

const char* ToString(AddressClass cls) {
  static constexpr const char* kNames[] = {"unspecified", "loopback",      "private", "link-local",
                                           "multicast",   "broadcast",     "reserved", "documentation",
                                           "meta",        "host",          "public"};
  static_assert(sizeof(kNames) / sizeof(kNames[0]) == static_cast<int>(AddressClass::kPublic) + 1);
  int i = static_cast<int>(cls);
  return i >= 0 && i <= static_cast<int>(AddressClass::kPublic) ? kNames[i] : "?";
}

namespace {

struct Range {
  const char* cidr;
  AddressClass cls;
  const char* what;
};

// First match wins: metadata before the ranges that contain it. The
// metadata entries are the instance metadata and credential endpoints the
// clouds document: 169.254.169.254 (AWS, GCP, Azure, Oracle, DigitalOcean,
// OpenStack), AWS's ECS task (169.254.170.2) and EKS Pod Identity
// (169.254.170.23, fd00:ec2::23) endpoints and EC2's IPv6 address, Azure's
// wire server, Alibaba Cloud's 100.100.100.200, Oracle Cloud at Customer's
// 192.0.0.192 and Compute Engine's IPv6 metadata address.
constexpr Range kRanges[] = {
    {"0.0.0.0/32", AddressClass::kUnspecified, "0.0.0.0 (unspecified)"},
    {"::/128", AddressClass::kUnspecified, ":: (unspecified)"},
    {"169.254.169.254/32", AddressClass::kMeta, "169.254.169.254 (cloud metadata)"},
    {"169.254.170.2/32", AddressClass::kMeta, "169.254.170.2 (ECS task metadata)"},
    {"100.100.100.200/32", AddressClass::kMeta, "100.100.100.200 (Alibaba Cloud metadata)"},
    {"168.63.129.16/32", AddressClass::kMeta, "168.63.129.16 (Azure host)"},
    {"169.254.170.23/32", AddressClass::kMeta, "169.254.170.23 (EKS Pod Identity credentials)"},
    {"192.0.0.192/32", AddressClass::kMeta, "192.0.0.192 (Oracle Cloud at Customer metadata)"},
    {"fd00:ec2::254/128", AddressClass::kMeta, "fd00:ec2::254 (EC2 metadata)"},
    {"fd00:ec2::23/128", AddressClass::kMeta, "fd00:ec2::23 (EKS Pod Identity credentials)"},
    {"fd20:ce::254/128", AddressClass::kMeta, "fd20:ce::254 (Compute Engine metadata, IPv6)"},
    {"127.0.0.0/8", AddressClass::kLoopback, "127.0.0.0/8 (loopback)"},
    {"::1/128", AddressClass::kLoopback, "::1 (loopback)"},
    {"10.0.0.0/8", AddressClass::kPrivate, "10.0.0.0/8 (RFC 1918)"},
    {"172.16.0.0/12", AddressClass::kPrivate, "172.16.0.0/12 (RFC 1918)"},
    {"192.168.0.0/16", AddressClass::kPrivate, "192.168.0.0/16 (RFC 1918)"},
    {"100.64.0.0/10", AddressClass::kPrivate, "100.64.0.0/10 (carrier-grade NAT)"},
    {"fc00::/7", AddressClass::kPrivate, "fc00::/7 (unique local)"},
    {"fec0::/10", AddressClass::kPrivate, "fec0::/10 (site-local)"},
    {"169.254.0.0/16", AddressClass::kLinkLocal, "169.254.0.0/16 (link-local)"},
    {"fe80::/10", AddressClass::kLinkLocal, "fe80::/10 (link-local)"},
    {"224.0.0.0/4", AddressClass::kMulticast, "224.0.0.0/4 (multicast)"},
    {"ff00::/8", AddressClass::kMulticast, "ff00::/8 (multicast)"},
    {"255.255.255.255/32", AddressClass::kBroadcast, "255.255.255.255 (broadcast)"},
    {"192.0.2.0/24", AddressClass::kDocumentation, "192.0.2.0/24 (TEST-NET-1)"},
    {"198.51.100.0/24", AddressClass::kDocumentation, "198.51.100.0/24 (TEST-NET-2)"},
    {"203.0.113.0/24", AddressClass::kDocumentation, "203.0.113.0/24 (TEST-NET-3)"},
    {"2001:db8::/32", AddressClass::kDocumentation, "2001:db8::/32 (documentation)"},
    {"3fff::/20", AddressClass::kDocumentation, "3fff::/20 (documentation)"},
    {"0.0.0.0/8", AddressClass::kReserved, "0.0.0.0/8 (this network)"},
    {"192.0.0.0/24", AddressClass::kReserved, "192.0.0.0/24 (IETF protocol assignments)"},
    {"192.88.99.0/24", AddressClass::kReserved, "192.88.99.0/24 (6to4 relay anycast)"},
    {"198.18.0.0/15", AddressClass::kReserved, "198.18.0.0/15 (benchmarking)"},
    {"240.0.0.0/4", AddressClass::kReserved, "240.0.0.0/4 (reserved)"},
    {"100::/64", AddressClass::kReserved, "100::/64 (discard-only)"},
    {"2001::/23", AddressClass::kReserved, "2001::/23 (IETF protocol assignments)"},
    {"2001:2::/48", AddressClass::kReserved, "2001:2::/48 (benchmarking)"},
    {"::/8", AddressClass::kReserved, "::/8 (reserved)"},
};

}  // namespace

const std::vector<SpecialRange>& SpecialRanges() {
  static const std::vector<SpecialRange> ranges = [] {
    std::vector<SpecialRange> out;
    for (const Range& r : kRanges) {
      auto c = Cidr::Parse(r.cidr);
      MSB_CHECK(c.has_value(), std::string("bad built-in range ") + r.cidr);
      out.push_back({*c, r.cls, r.what});
    }
    return out;
  }();
  return ranges;
}

const std::vector<Cidr>& Ipv4EmbeddingPrefixes() {
  // The forms Canonicalize() reads, in its order.
  static const std::vector<Cidr> prefixes = [] {
    std::vector<Cidr> out;
    for (const char* text : {"::ffff:0:0/96", "::ffff:0:0:0/96", "::/96", "64:ff9b::/96", "64:ff9b:1::/48",
                             "2002::/16", "2001::/32"}) {
      auto c = Cidr::Parse(text);
      MSB_CHECK(c.has_value(), std::string("bad built-in prefix ") + text);
      out.push_back(*c);
    }
    return out;
  }();
  return prefixes;
}

Classification Classify(const IpAddress& ip) {
  Classification c;
  c.canonical = Canonicalize(ip);
  for (const SpecialRange& r : SpecialRanges()) {
    if (r.cidr.Contains(c.canonical)) {
      c.cls = r.cls;
      c.range = r.what;
      return c;
    }
  }
  return c;
}

HostAddresses::HostAddresses(std::vector<IpAddress> fixed) : addresses_(std::move(fixed)) {
  for (auto& a : addresses_) a = Canonicalize(a);
  std::sort(addresses_.begin(), addresses_.end());
  addresses_.erase(std::unique(addresses_.begin(), addresses_.end()), addresses_.end());
  read_ = true;
  read_at_ = std::chrono::steady_clock::now();
}

Status HostAddresses::Refresh() {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return Error::FromErrno("reading the host's interface addresses (getifaddrs)");
  std::vector<IpAddress> found;
  for (ifaddrs* i = list; i != nullptr; i = i->ifa_next) {
    if (auto ip = IpAddress::FromSockaddr(i->ifa_addr)) found.push_back(Canonicalize(*ip));
  }
  freeifaddrs(list);
  std::sort(found.begin(), found.end());
  found.erase(std::unique(found.begin(), found.end()), found.end());
  addresses_ = std::move(found);
  read_ = true;
  read_at_ = std::chrono::steady_clock::now();
  return OkStatus();
}

Status HostAddresses::FollowChanges() {
  UniqueFd fd(::socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_ROUTE));
  if (!fd) return Error::FromErrno("opening an rtnetlink socket for the host's address changes");
  sockaddr_nl local{};
  local.nl_family = AF_NETLINK;
  local.nl_groups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR;
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&local), sizeof local) != 0) {
    return Error::FromErrno("subscribing to the host's address changes (rtnetlink)");
  }
  // Subscribed before the read: no change falls between the two.
  changes_ = std::move(fd);
  return Refresh();
}

bool HostAddresses::RefreshIfChanged() {
  if (!changes_) return false;
  bool changed = false;
  // The messages' content does not matter: any of them means "read again".
  char buf[8192];
  for (;;) {
    ssize_t n = ::recv(changes_.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      changed = true;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == ENOBUFS) {  // reports were dropped: assume a change
      changed = true;
      continue;
    }
    break;  // EAGAIN: drained
  }
  if (changed) (void)Refresh();
  return changed;
}

Status HostAddresses::RefreshIfOlder(std::chrono::seconds max_age) {
  if (read_ && std::chrono::steady_clock::now() - read_at_ < max_age) return OkStatus();
  return Refresh();
}

bool HostAddresses::Contains(const IpAddress& ip) const {
  return std::binary_search(addresses_.begin(), addresses_.end(), Canonicalize(ip));
}

}  // namespace msb::net
