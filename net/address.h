// IP addresses in net/: the one v4/v6 value type that packet parsing, the
// stack, the policy and DNS all use (IpAddress: 17 bytes, no allocation),
// CIDR prefixes, canonicalisation of IPv6 forms that embed an IPv4 address,
// and the static classification of an address into the groups the rule
// grammar names. Not a resolver; the context-dependent classes (gateway,
// group member) are decided by net/policy.h.
#pragma once

#include <sys/socket.h>

#include <array>
#include <chrono>
#include <compare>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "common/fd.h"
#include "common/result.h"

namespace msb::net {

class IpAddress {
 public:
  enum class Family : uint8_t { kV4 = 4, kV6 = 6 };

  IpAddress() = default;  // 0.0.0.0
  static IpAddress V4(uint32_t host_order) {
    IpAddress ip;
    ip.bytes_[0] = static_cast<uint8_t>(host_order >> 24);
    ip.bytes_[1] = static_cast<uint8_t>(host_order >> 16);
    ip.bytes_[2] = static_cast<uint8_t>(host_order >> 8);
    ip.bytes_[3] = static_cast<uint8_t>(host_order);
    return ip;
  }
  static IpAddress V4(uint8_t a, uint8_t b, uint8_t c, uint8_t d) {
    IpAddress ip;
    ip.bytes_ = {a, b, c, d};
    return ip;
  }
  static IpAddress V6(const std::array<uint8_t, 16>& bytes) {
    IpAddress ip;
    ip.family_ = Family::kV6;
    ip.bytes_ = bytes;
    return ip;
  }
  // Network-order bytes: 4 (IPv4) or 16 (IPv6); nullopt for other lengths.
  static std::optional<IpAddress> FromBytes(const uint8_t* data, size_t len);
  // AF_INET / AF_INET6 socket addresses; nullopt for other families.
  static std::optional<IpAddress> FromSockaddr(const sockaddr* sa);
  // "10.1.2.3", "2001:db8::1" (no brackets, no zone, no port).
  static std::optional<IpAddress> Parse(std::string_view text);

  Family family() const { return family_; }
  bool is_v4() const { return family_ == Family::kV4; }
  bool is_v6() const { return family_ == Family::kV6; }
  // IPv4 only: the address in host byte order.
  uint32_t v4() const {
    MSB_CHECK(is_v4(), "v4() of an IPv6 address");
    return (uint32_t{bytes_[0]} << 24) | (uint32_t{bytes_[1]} << 16) | (uint32_t{bytes_[2]} << 8) |
           bytes_[3];
  }
  // Network-order bytes; the first 4 are used for IPv4, the rest are zero.
  const std::array<uint8_t, 16>& bytes() const { return bytes_; }
  size_t size() const { return is_v4() ? 4 : 16; }
  // inet_ntop text.
  std::string ToString() const;
  // The AF_INET / AF_INET6 socket address of this address and port (host
  // order) in *out; returns its length.
  socklen_t ToSockaddr(uint16_t port, sockaddr_storage* out) const;

  auto operator<=>(const IpAddress&) const = default;

 private:
  Family family_ = Family::kV4;
  std::array<uint8_t, 16> bytes_{};
};
// Copied and compared per packet by the stack: it stays a plain value.
static_assert(sizeof(IpAddress) == 17 && std::is_trivially_copyable_v<IpAddress>);

// A prefix: base address (host bits cleared) and length.
class Cidr {
 public:
  Cidr() = default;
  Cidr(const IpAddress& base, int prefix_len);  // clears host bits; aborts on a bad length
  // "10.0.0.0/8", "2001:db8::/32"; a bare address is a full-length prefix.
  static std::optional<Cidr> Parse(std::string_view text);

  const IpAddress& base() const { return base_; }
  int prefix_len() const { return prefix_len_; }
  // Same family and the first prefix_len bits equal. No canonicalisation.
  bool Contains(const IpAddress& ip) const;
  std::string ToString() const;

  auto operator<=>(const Cidr&) const = default;

 private:
  IpAddress base_;
  int prefix_len_ = 0;
};

// The IPv4 address an IPv6 form embeds, or the address itself:
//   ::ffff:a.b.c.d (mapped), ::ffff:0:a.b.c.d (translated), ::a.b.c.d
//   (compatible; not :: and ::1), 64:ff9b::/96 and 64:ff9b:1::/48 (NAT64,
//   the IPv4 in the last 32 bits), 2002:AABB:CCDD::/16 (6to4, bits 16..48),
//   2001:0::/32 (Teredo, the client's IPv4 is the last 32 bits XOR ffffffff).
// Idempotent: an IPv4 address is returned unchanged.
IpAddress Canonicalize(const IpAddress& ip);

// The static groups. The rule grammar's groups are loopback, private,
// link-local, meta, multicast, host and public; the others are only reached
// through the `any` profile or rules naming their addresses.
enum class AddressClass : int {
  kUnspecified = 0,    // 0.0.0.0, ::  — never reachable
  kLoopback = 1,       // 127/8, ::1
  kPrivate = 2,        // RFC 1918, 100.64/10 (carrier-grade NAT), fc00::/7, fec0::/10
  kLinkLocal = 3,      // 169.254/16, fe80::/10
  kMulticast = 4,      // 224/4, ff00::/8
  kBroadcast = 5,      // 255.255.255.255
  kReserved = 6,       // 0/8, 192.0.0/24, 198.18/15, 240/4, 100::/64, 2001::/23 ...
  kDocumentation = 7,  // 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32, 3fff::/20
  kMeta = 8,           // cloud metadata services
  kHost = 9,           // the host's own addresses (HostAddresses), decided by the caller
  kPublic = 10,        // everything else
};
const char* ToString(AddressClass cls);

struct Classification {
  AddressClass cls = AddressClass::kPublic;
  // What range decided it, e.g. "10.0.0.0/8 (RFC 1918)"; empty for public.
  std::string_view range;
  // The canonical address the class was computed for (the embedded IPv4).
  IpAddress canonical;
};

// The class of Canonicalize(ip). Never returns kHost (see HostAddresses).
Classification Classify(const IpAddress& ip);

// One row of the table Classify() reads: every range it gives a class other
// than kPublic.
struct SpecialRange {
  Cidr cidr;
  AddressClass cls = AddressClass::kPublic;
  std::string_view what;  // "10.0.0.0/8 (RFC 1918)"
};
// The table, in Classify()'s order (the first containing range decides, so a
// range may sit inside an earlier one). What a copy of the stack's rules
// elsewhere needs (the Kubernetes export's NetworkPolicy exceptions,
// orchestrator/kube_export.cc) is derived from it, never written twice.
const std::vector<SpecialRange>& SpecialRanges();

// The IPv6 prefixes under which Canonicalize() reads an embedded IPv4
// address (mapped, translated, compatible, NAT64, 6to4, Teredo), for a rule
// that cannot canonicalise and must treat such a prefix as a whole.
const std::vector<Cidr>& Ipv4EmbeddingPrefixes();

// The host's own interface addresses (getifaddrs), canonicalised. Refreshed
// on demand: Refresh() re-reads them; RefreshIfOlder() only when the last
// read is older than max_age. FollowChanges() subscribes to the kernel's
// address events (rtnetlink) first, so that RefreshIfChanged(), called
// before each decision, re-reads the list whenever an address came or went
// since the last read: one non-blocking recv when nothing did. Not
// thread-safe.
class HostAddresses {
 public:
  HostAddresses() = default;
  // A fixed list (tests, `msb net check --file`); Refresh() replaces it.
  explicit HostAddresses(std::vector<IpAddress> fixed);

  Status Refresh();
  Status RefreshIfOlder(std::chrono::seconds max_age);
  // Opens the rtnetlink subscription (IPv4 and IPv6 address events), then
  // reads the list. Without it (an error), the list is only read on demand.
  Status FollowChanges();
  // Re-reads the list when the kernel reported a change (or dropped reports:
  // ENOBUFS) since the last read; true when it did.
  bool RefreshIfChanged();
  // The subscription's descriptor, to watch for readability; -1 without one.
  int change_fd() const { return changes_.get(); }
  bool Contains(const IpAddress& ip) const;
  const std::vector<IpAddress>& addresses() const { return addresses_; }

 private:
  std::vector<IpAddress> addresses_;  // sorted
  UniqueFd changes_;                  // rtnetlink, non-blocking
  std::chrono::steady_clock::time_point read_at_{};
  bool read_ = false;
};

}  // namespace msb::net
