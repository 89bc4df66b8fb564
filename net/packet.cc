// Header parsing and building for packet.h. Every read is bounds-checked
// against the span; nothing here allocates except the output frames.
#include "net/packet.h"

#include <cstring>

namespace msb::net {
namespace {

uint16_t Get16(const uint8_t* p) { return static_cast<uint16_t>(p[0] << 8 | p[1]); }
uint32_t Get32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 |
         static_cast<uint32_t>(p[2]) << 8 | p[3];
}
IpAddress Get128(const uint8_t* p) {
  std::array<uint8_t, 16> b;
  std::memcpy(b.data(), p, 16);
  return IpAddress::V6(b);
}
void Put16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v >> 8);
  p[1] = static_cast<uint8_t>(v);
}
void Put32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

void ParseTcpOptions(std::span<const uint8_t> opt, TcpOptions& out) {
  size_t i = 0;
  while (i < opt.size()) {
    uint8_t kind = opt[i];
    if (kind == 0) break;
    if (kind == 1) {
      ++i;
      continue;
    }
    if (i + 1 >= opt.size()) break;
    uint8_t len = opt[i + 1];
    if (len < 2 || i + len > opt.size()) break;
    if (kind == 2 && len == 4) out.mss = Get16(&opt[i + 2]);
    if (kind == 3 && len == 3) out.wscale = opt[i + 2];
    i += len;
  }
}

bool ParseTransport(ParsedFrame& f, std::span<const uint8_t> l4) {
  f.l4 = l4;
  switch (f.proto) {
    case kProtoUdp: {
      if (l4.size() < kUdpHeader) return false;
      uint16_t len = Get16(&l4[4]);
      if (len < kUdpHeader || len > l4.size()) return false;
      f.sport = Get16(&l4[0]);
      f.dport = Get16(&l4[2]);
      f.payload = l4.subspan(kUdpHeader, len - kUdpHeader);
      return true;
    }
    case kProtoTcp: {
      if (l4.size() < kTcpHeader) return false;
      size_t off = static_cast<size_t>(l4[12] >> 4) * 4;
      if (off < kTcpHeader || off > l4.size()) return false;
      TcpHeader h;
      h.sport = Get16(&l4[0]);
      h.dport = Get16(&l4[2]);
      h.seq = Get32(&l4[4]);
      h.ack = Get32(&l4[8]);
      h.flags = l4[13] & 0x3f;
      h.window = Get16(&l4[14]);
      ParseTcpOptions(l4.subspan(kTcpHeader, off - kTcpHeader), h.options);
      f.sport = h.sport;
      f.dport = h.dport;
      f.tcp = h;
      f.payload = l4.subspan(off);
      return true;
    }
    case kProtoIcmp:
    case kProtoIcmp6:
      if (l4.size() < 4) return false;
      f.icmp_type = l4[0];
      f.icmp_code = l4[1];
      f.payload = l4.subspan(4);
      return true;
    default:
      return false;
  }
}

// Writes Ethernet + IP headers for an L4 segment of l4_len bytes; returns the
// offset of the L4 header in out.
size_t WriteHeaders(std::vector<uint8_t>& out, const L2L3& a, uint8_t proto, size_t l4_len) {
  bool v6 = a.src.is_v6();
  size_t ip_len = v6 ? kIpv6Header : kIpv4Header;
  out.assign(kEthHeader + ip_len + l4_len, 0);
  uint8_t* p = out.data();
  std::memcpy(p, a.dst_mac.data(), 6);
  std::memcpy(p + 6, a.src_mac.data(), 6);
  Put16(p + 12, v6 ? kEthIpv6 : kEthIpv4);
  uint8_t* ip = p + kEthHeader;
  if (v6) {
    Put32(ip, 0x60000000);
    Put16(ip + 4, static_cast<uint16_t>(l4_len));
    ip[6] = proto;
    ip[7] = 255;  // NDP requires hop limit 255; harmless for the rest
    std::memcpy(ip + 8, a.src.bytes().data(), 16);
    std::memcpy(ip + 24, a.dst.bytes().data(), 16);
  } else {
    ip[0] = 0x45;
    Put16(ip + 2, static_cast<uint16_t>(kIpv4Header + l4_len));
    Put16(ip + 6, 0x4000);  // DF
    ip[8] = 64;
    ip[9] = proto;
    std::memcpy(ip + 12, a.src.bytes().data(), 4);
    std::memcpy(ip + 16, a.dst.bytes().data(), 4);
    Put16(ip + 10, ChecksumFinish(ChecksumAdd(0, {ip, kIpv4Header})));
  }
  return kEthHeader + ip_len;
}

void FinishL4Checksum(std::vector<uint8_t>& out, const L2L3& a, uint8_t proto, size_t l4_off,
                      size_t csum_off) {
  std::span<const uint8_t> l4(out.data() + l4_off, out.size() - l4_off);
  uint32_t sum = PseudoHeaderSum(a.src, a.dst, proto, static_cast<uint32_t>(l4.size()));
  uint16_t c = ChecksumFinish(ChecksumAdd(sum, l4));
  if (proto == kProtoUdp && c == 0) c = 0xffff;
  Put16(out.data() + l4_off + csum_off, c);
}

}  // namespace

uint32_t ChecksumAdd(uint32_t sum, std::span<const uint8_t> data) {
  uint64_t s = sum;
  size_t i = 0;
  for (; i + 1 < data.size(); i += 2) s += static_cast<uint32_t>(data[i] << 8 | data[i + 1]);
  if (i < data.size()) s += static_cast<uint32_t>(data[i] << 8);
  while (s >> 32) s = (s & 0xffffffff) + (s >> 32);
  return static_cast<uint32_t>(s);
}

uint16_t ChecksumFinish(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(~sum);
}

uint16_t ChecksumUpdate(uint16_t checksum, uint16_t old_word, uint16_t new_word) {
  // HC' = ~(~HC + ~m + m')
  uint32_t sum = static_cast<uint16_t>(~checksum);
  sum += static_cast<uint16_t>(~old_word);
  sum += new_word;
  return ChecksumFinish(sum);
}

uint32_t PseudoHeaderSum(const IpAddress& src, const IpAddress& dst, uint8_t proto, uint32_t length) {
  size_t n = src.size();
  uint32_t sum = ChecksumAdd(0, {src.bytes().data(), n});
  sum = ChecksumAdd(sum, {dst.bytes().data(), n});
  uint8_t tail[8] = {};
  Put32(tail, length);
  tail[7] = proto;
  return ChecksumAdd(sum, tail);
}

std::optional<ParsedFrame> ParseFrame(std::span<const uint8_t> bytes) {
  if (bytes.size() < kEthHeader) return std::nullopt;
  ParsedFrame f;
  std::memcpy(f.dst.data(), bytes.data(), 6);
  std::memcpy(f.src.data(), bytes.data() + 6, 6);
  f.ethertype = Get16(&bytes[12]);
  auto l3 = bytes.subspan(kEthHeader);
  switch (f.ethertype) {
    case kEthArp: {
      if (l3.size() < 28) return std::nullopt;
      // Ethernet/IPv4 ARP only.
      if (Get16(&l3[0]) != 1 || Get16(&l3[2]) != kEthIpv4 || l3[4] != 6 || l3[5] != 4)
        return std::nullopt;
      ArpPacket a;
      a.op = Get16(&l3[6]);
      std::memcpy(a.sha.data(), &l3[8], 6);
      a.spa = Get32(&l3[14]);
      std::memcpy(a.tha.data(), &l3[18], 6);
      a.tpa = Get32(&l3[24]);
      f.arp = a;
      return f;
    }
    case kEthIpv4: {
      if (l3.size() < kIpv4Header) return std::nullopt;
      if ((l3[0] >> 4) != 4) return std::nullopt;
      size_t ihl = static_cast<size_t>(l3[0] & 0xf) * 4;
      uint16_t total = Get16(&l3[2]);
      if (ihl < kIpv4Header || total < ihl || total > l3.size()) return std::nullopt;
      uint16_t frag = Get16(&l3[6]);
      if ((frag & 0x3fff) != 0) return std::nullopt;  // MF or offset: fragments are refused
      f.ttl = l3[8];
      f.proto = l3[9];
      f.ip_src = IpAddress::V4(Get32(&l3[12]));
      f.ip_dst = IpAddress::V4(Get32(&l3[16]));
      if (!ParseTransport(f, l3.subspan(ihl, total - ihl))) return std::nullopt;
      return f;
    }
    case kEthIpv6: {
      if (l3.size() < kIpv6Header) return std::nullopt;
      if ((l3[0] >> 4) != 6) return std::nullopt;
      uint16_t plen = Get16(&l3[4]);
      if (kIpv6Header + plen > l3.size()) return std::nullopt;
      f.proto = l3[6];
      f.ttl = l3[7];
      f.ip_src = Get128(&l3[8]);
      f.ip_dst = Get128(&l3[24]);
      if (!ParseTransport(f, l3.subspan(kIpv6Header, plen))) return std::nullopt;
      return f;
    }
    default:
      return std::nullopt;
  }
}

void BuildArpReply(std::vector<uint8_t>& out, const Mac& our_mac, uint32_t our_ip,
                   const Mac& their_mac, uint32_t their_ip) {
  out.assign(kEthHeader + 28, 0);
  uint8_t* p = out.data();
  std::memcpy(p, their_mac.data(), 6);
  std::memcpy(p + 6, our_mac.data(), 6);
  Put16(p + 12, kEthArp);
  uint8_t* a = p + kEthHeader;
  Put16(a, 1);
  Put16(a + 2, kEthIpv4);
  a[4] = 6;
  a[5] = 4;
  Put16(a + 6, 2);
  std::memcpy(a + 8, our_mac.data(), 6);
  Put32(a + 14, our_ip);
  std::memcpy(a + 18, their_mac.data(), 6);
  Put32(a + 24, their_ip);
}

void BuildUdp(std::vector<uint8_t>& out, const L2L3& a, uint16_t sport, uint16_t dport,
              std::span<const uint8_t> payload) {
  size_t l4_len = kUdpHeader + payload.size();
  size_t off = WriteHeaders(out, a, kProtoUdp, l4_len);
  uint8_t* u = out.data() + off;
  Put16(u, sport);
  Put16(u + 2, dport);
  Put16(u + 4, static_cast<uint16_t>(l4_len));
  if (!payload.empty()) std::memcpy(u + kUdpHeader, payload.data(), payload.size());
  FinishL4Checksum(out, a, kProtoUdp, off, 6);
}

void BuildTcp(std::vector<uint8_t>& out, const L2L3& a, const TcpHeader& h,
              std::span<const uint8_t> payload) {
  uint8_t opts[8];
  size_t olen = 0;
  if (h.options.mss) {
    opts[olen++] = 2;
    opts[olen++] = 4;
    Put16(opts + olen, *h.options.mss);
    olen += 2;
  }
  if (h.options.wscale) {
    opts[olen++] = 1;  // NOP keeps the header 4-byte aligned
    opts[olen++] = 3;
    opts[olen++] = 3;
    opts[olen++] = *h.options.wscale;
  }
  size_t hlen = kTcpHeader + olen;
  size_t off = WriteHeaders(out, a, kProtoTcp, hlen + payload.size());
  uint8_t* t = out.data() + off;
  Put16(t, h.sport);
  Put16(t + 2, h.dport);
  Put32(t + 4, h.seq);
  Put32(t + 8, h.ack);
  t[12] = static_cast<uint8_t>((hlen / 4) << 4);
  t[13] = h.flags;
  Put16(t + 14, h.window);
  std::memcpy(t + kTcpHeader, opts, olen);
  if (!payload.empty()) std::memcpy(t + hlen, payload.data(), payload.size());
  FinishL4Checksum(out, a, kProtoTcp, off, 16);
}

void BuildIcmp(std::vector<uint8_t>& out, const L2L3& a, uint8_t type, uint8_t code,
               std::span<const uint8_t> body) {
  uint8_t proto = a.src.is_v6() ? kProtoIcmp6 : kProtoIcmp;
  size_t off = WriteHeaders(out, a, proto, 4 + body.size());
  uint8_t* c = out.data() + off;
  c[0] = type;
  c[1] = code;
  if (!body.empty()) std::memcpy(c + 4, body.data(), body.size());
  if (a.src.is_v6()) {
    FinishL4Checksum(out, a, proto, off, 2);
  } else {
    Put16(c + 2, ChecksumFinish(ChecksumAdd(0, {c, 4 + body.size()})));
  }
}

void BuildNeighborAdvert(std::vector<uint8_t>& out, const L2L3& a, const IpAddress& target,
                         const Mac& target_mac) {
  uint8_t body[4 + 16 + 8] = {};
  body[0] = 0x60;  // solicited, override
  std::memcpy(body + 4, target.bytes().data(), 16);
  body[20] = 2;  // target link-layer address
  body[21] = 1;
  std::memcpy(body + 22, target_mac.data(), 6);
  BuildIcmp(out, a, kIcmp6NeighborAdvert, 0, body);
}

std::optional<IpAddress> NeighborSolicitTarget(const ParsedFrame& f) {
  if (f.proto != kProtoIcmp6 || f.icmp_type != kIcmp6NeighborSolicit) return std::nullopt;
  if (f.payload.size() < 4 + 16) return std::nullopt;
  return Get128(f.payload.data() + 4);
}

}  // namespace msb::net
