// Packet formats of the user-mode network stack: Ethernet, ARP, IPv4, IPv6,
// ICMPv4/ICMPv6 (echo and NDP), UDP and TCP headers, parsed from and built into
// plain byte buffers, and the Internet checksum (RFC 1071, incremental RFC 1624).
// Addresses are net::IpAddress (address.h). Not a socket layer and not a
// state machine: tcp.h and stack.h build on it.
//
// Parsing contract: every frame comes from the guest and is hostile. Parse*
// reads only inside the span it is given, checks every length field against
// the bytes present, and returns nullopt for anything malformed or not handled
// (IPv4 options are skipped, IPv4 fragments and IPv6 extension headers other
// than none are refused). Checksums of guest frames are not verified: the link
// is a lossless in-memory stream and a wrong checksum cannot mislead the stack.
// Frames we build carry full, correct checksums (the guest's virtio-net has no
// offload negotiated on a stream netdev).
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "net/address.h"

namespace msb::net {

using Mac = std::array<uint8_t, 6>;

// Ethernet types and IP protocol numbers the stack handles.
inline constexpr uint16_t kEthIpv4 = 0x0800;
inline constexpr uint16_t kEthArp = 0x0806;
inline constexpr uint16_t kEthIpv6 = 0x86dd;
inline constexpr uint8_t kProtoIcmp = 1;
inline constexpr uint8_t kProtoTcp = 6;
inline constexpr uint8_t kProtoUdp = 17;
inline constexpr uint8_t kProtoIcmp6 = 58;
inline constexpr size_t kEthHeader = 14;
inline constexpr size_t kIpv4Header = 20;
inline constexpr size_t kIpv6Header = 40;
inline constexpr size_t kUdpHeader = 8;
inline constexpr size_t kTcpHeader = 20;
inline constexpr size_t kMaxFrame = 65535 + kEthHeader;

// TCP flag bits.
inline constexpr uint8_t kTcpFin = 0x01;
inline constexpr uint8_t kTcpSyn = 0x02;
inline constexpr uint8_t kTcpRst = 0x04;
inline constexpr uint8_t kTcpPsh = 0x08;
inline constexpr uint8_t kTcpAck = 0x10;

// ICMP types.
inline constexpr uint8_t kIcmpEchoReply = 0;
inline constexpr uint8_t kIcmpEchoRequest = 8;
inline constexpr uint8_t kIcmp6EchoRequest = 128;
inline constexpr uint8_t kIcmp6EchoReply = 129;
inline constexpr uint8_t kIcmp6NeighborSolicit = 135;
inline constexpr uint8_t kIcmp6NeighborAdvert = 136;

// --- checksums ---------------------------------------------------------------

// Adds data as big-endian 16-bit words to sum (odd tail padded with zero).
uint32_t ChecksumAdd(uint32_t sum, std::span<const uint8_t> data);
// Folds and complements: the value to store in a checksum field.
uint16_t ChecksumFinish(uint32_t sum);
// RFC 1624 eqn. 3: the checksum after one 16-bit word changed from old_word to
// new_word, without re-reading the rest of the data.
uint16_t ChecksumUpdate(uint16_t checksum, uint16_t old_word, uint16_t new_word);
// The pseudo-header sum for a TCP/UDP/ICMPv6 checksum.
uint32_t PseudoHeaderSum(const IpAddress& src, const IpAddress& dst, uint8_t proto, uint32_t length);

// --- parsed frames -----------------------------------------------------------

struct TcpOptions {
  std::optional<uint16_t> mss;
  std::optional<uint8_t> wscale;
};

struct TcpHeader {
  uint16_t sport = 0, dport = 0;
  uint32_t seq = 0, ack = 0;
  uint8_t flags = 0;
  uint16_t window = 0;
  TcpOptions options;
};

struct ArpPacket {
  uint16_t op = 0;  // 1 request, 2 reply
  Mac sha{}, tha{};
  uint32_t spa = 0, tpa = 0;  // host order
};

// One parsed frame. Views (payload) point into the caller's buffer.
struct ParsedFrame {
  Mac dst{}, src{};
  uint16_t ethertype = 0;
  std::optional<ArpPacket> arp;
  // IP (ethertype IPv4 or IPv6):
  IpAddress ip_src, ip_dst;
  uint8_t proto = 0;  // the transport protocol
  uint8_t ttl = 0;
  // Transport:
  uint16_t sport = 0, dport = 0;          // UDP and TCP
  std::optional<TcpHeader> tcp;
  uint8_t icmp_type = 0, icmp_code = 0;   // ICMP / ICMPv6
  std::span<const uint8_t> l4;            // the whole transport segment
  std::span<const uint8_t> payload;       // UDP/TCP data; ICMP: bytes after the 4-byte header
};

std::optional<ParsedFrame> ParseFrame(std::span<const uint8_t> bytes);

// --- building ----------------------------------------------------------------

struct L2L3 {
  Mac src_mac{}, dst_mac{};
  IpAddress src, dst;
};

// Each Build* writes one complete Ethernet frame into out (replacing it).
void BuildArpReply(std::vector<uint8_t>& out, const Mac& our_mac, uint32_t our_ip,
                   const Mac& their_mac, uint32_t their_ip);
void BuildUdp(std::vector<uint8_t>& out, const L2L3& a, uint16_t sport, uint16_t dport,
              std::span<const uint8_t> payload);
void BuildTcp(std::vector<uint8_t>& out, const L2L3& a, const TcpHeader& h,
              std::span<const uint8_t> payload);
// ICMP (v4) or ICMPv6 message with a 4-byte header (type, code, checksum) and
// body (for echo: id, sequence, data).
void BuildIcmp(std::vector<uint8_t>& out, const L2L3& a, uint8_t type, uint8_t code,
               std::span<const uint8_t> body);
// Neighbour advertisement for target (solicited, override) with the target
// link-layer address option.
void BuildNeighborAdvert(std::vector<uint8_t>& out, const L2L3& a, const IpAddress& target,
                         const Mac& target_mac);

// The target address of a neighbour solicitation, or nullopt.
std::optional<IpAddress> NeighborSolicitTarget(const ParsedFrame& f);

}  // namespace msb::net
