// Packet formats: build/parse round trips, checksums (full and incremental)
// and sequence arithmetic, with RapidCheck properties.
#include "net/packet.h"

#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include "net/tcp.h"

namespace msb::net {
namespace {

L2L3 V4Path() {
  return L2L3{Mac{2, 0, 0, 0, 0, 1}, Mac{2, 0, 0, 0, 0, 2}, IpAddress::V4(0x0a000201),
              IpAddress::V4(0x0a000202)};
}
L2L3 V6Path() {
  return L2L3{Mac{2, 0, 0, 0, 0, 1}, Mac{2, 0, 0, 0, 0, 2}, *IpAddress::Parse("fd00::1"),
              *IpAddress::Parse("fd00::2")};
}

// A transport checksum is right when summing the pseudo-header and segment gives 0.
bool L4ChecksumOk(const ParsedFrame& f) {
  uint32_t sum = PseudoHeaderSum(f.ip_src, f.ip_dst, f.proto, static_cast<uint32_t>(f.l4.size()));
  return ChecksumFinish(ChecksumAdd(sum, f.l4)) == 0;
}

TEST(PacketTest, TcpRoundTripWithOptionsBothFamilies) {
  for (const L2L3& path : {V4Path(), V6Path()}) {
    TcpHeader h;
    h.sport = 1234;
    h.dport = 80;
    h.seq = 0xfffffff0;
    h.ack = 7;
    h.flags = kTcpSyn | kTcpAck;
    h.window = 29200;
    h.options.mss = 1460;
    h.options.wscale = 7;
    std::vector<uint8_t> payload = {'h', 'i', '!'};
    std::vector<uint8_t> out;
    BuildTcp(out, path, h, payload);
    auto f = ParseFrame(out);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->src, path.src_mac);
    EXPECT_EQ(f->dst, path.dst_mac);
    EXPECT_EQ(f->ip_src, path.src);
    EXPECT_EQ(f->ip_dst, path.dst);
    ASSERT_TRUE(f->tcp);
    EXPECT_EQ(f->tcp->seq, h.seq);
    EXPECT_EQ(f->tcp->ack, h.ack);
    EXPECT_EQ(f->tcp->flags, h.flags);
    EXPECT_EQ(f->tcp->window, h.window);
    EXPECT_EQ(f->tcp->options.mss, 1460);
    EXPECT_EQ(f->tcp->options.wscale, 7);
    EXPECT_EQ(std::vector<uint8_t>(f->payload.begin(), f->payload.end()), payload);
    EXPECT_TRUE(L4ChecksumOk(*f));
  }
}

TEST(PacketTest, Ipv4HeaderChecksumIsValid) {
  std::vector<uint8_t> out;
  BuildUdp(out, V4Path(), 53, 4000, std::vector<uint8_t>(10, 'x'));
  EXPECT_EQ(ChecksumFinish(ChecksumAdd(0, {out.data() + kEthHeader, kIpv4Header})), 0);
  auto f = ParseFrame(out);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->sport, 53);
  EXPECT_EQ(f->dport, 4000);
  EXPECT_EQ(f->payload.size(), 10u);
  EXPECT_TRUE(L4ChecksumOk(*f));
}

TEST(PacketTest, ArpReplyAnswersTheAsker) {
  std::vector<uint8_t> out;
  Mac ours{2, 0, 0, 0, 0, 1}, theirs{2, 0, 0, 0, 0, 2};
  BuildArpReply(out, ours, 0x0a000201, theirs, 0x0a000202);
  auto f = ParseFrame(out);
  ASSERT_TRUE(f && f->arp);
  EXPECT_EQ(f->arp->op, 2);
  EXPECT_EQ(f->arp->sha, ours);
  EXPECT_EQ(f->arp->spa, 0x0a000201u);
  EXPECT_EQ(f->arp->tha, theirs);
  EXPECT_EQ(f->dst, theirs);
}

TEST(PacketTest, NeighborAdvertCarriesTargetAndValidChecksum) {
  std::vector<uint8_t> out;
  auto target = *IpAddress::Parse("fd00::1");
  BuildNeighborAdvert(out, V6Path(), target, Mac{2, 0, 0, 0, 0, 1});
  auto f = ParseFrame(out);
  ASSERT_TRUE(f);
  EXPECT_EQ(f->icmp_type, kIcmp6NeighborAdvert);
  EXPECT_TRUE(L4ChecksumOk(*f));
  EXPECT_EQ(out[kEthHeader + 7], 255);  // hop limit NDP requires
}

TEST(PacketTest, RefusesTruncatedAndFragmentedFrames) {
  std::vector<uint8_t> out;
  BuildUdp(out, V4Path(), 1, 2, std::vector<uint8_t>(20, 'a'));
  for (size_t n = 0; n < out.size(); ++n) {
    EXPECT_FALSE(ParseFrame({out.data(), n})) << "prefix of " << n << " bytes";
  }
  auto frag = out;
  frag[kEthHeader + 6] = 0x20;  // MF
  EXPECT_FALSE(ParseFrame(frag));
}

TEST(PacketTest, AddressParseAndPrint) {
  EXPECT_EQ(IpAddress::Parse("10.0.2.15")->v4(), 0x0a00020fu);
  EXPECT_EQ(IpAddress::Parse("fd00::2")->ToString(), "fd00::2");
  EXPECT_FALSE(IpAddress::Parse("10.0.2"));
}

RC_GTEST_PROP(PacketProp, IncrementalChecksumEqualsFull, (std::vector<uint8_t> data, size_t at, uint16_t word)) {
  if (data.size() % 2) data.push_back(0);
  RC_PRE(data.size() >= 2);
  size_t i = (at % (data.size() / 2)) * 2;
  uint16_t before = ChecksumFinish(ChecksumAdd(0, data));
  uint16_t old_word = static_cast<uint16_t>(data[i] << 8 | data[i + 1]);
  data[i] = static_cast<uint8_t>(word >> 8);
  data[i + 1] = static_cast<uint8_t>(word);
  uint16_t full = ChecksumFinish(ChecksumAdd(0, data));
  uint16_t incr = ChecksumUpdate(before, old_word, word);
  // 0x0000 and 0xffff are the same value in one's complement.
  RC_ASSERT((full == incr) || (full == 0 && incr == 0xffff) || (full == 0xffff && incr == 0));
}

RC_GTEST_PROP(PacketProp, ChecksumOfDataWithItsChecksumIsZero, (std::vector<uint8_t> data)) {
  if (data.size() % 2) data.push_back(0);
  uint16_t c = ChecksumFinish(ChecksumAdd(0, data));
  data.push_back(static_cast<uint8_t>(c >> 8));
  data.push_back(static_cast<uint8_t>(c));
  RC_ASSERT(ChecksumFinish(ChecksumAdd(0, data)) == 0);
}

RC_GTEST_PROP(PacketProp, SequenceComparisonsWrapAround, (uint32_t a, uint32_t d)) {
  d = d % 0x7fffffffu + 1;  // 1 .. 2^31-1: b is strictly after a
  uint32_t b = a + d;
  RC_ASSERT(SeqLt(a, b));
  RC_ASSERT(SeqLe(a, b));
  RC_ASSERT(SeqGt(b, a));
  RC_ASSERT(SeqGe(b, a));
  RC_ASSERT(!SeqLt(b, a));
  RC_ASSERT(!SeqGt(a, b));
  RC_ASSERT(SeqLe(a, a) && SeqGe(a, a) && !SeqLt(a, a));
}

RC_GTEST_PROP(PacketProp, ParseNeverReadsOutOfBounds, (std::vector<uint8_t> bytes)) {
  auto f = ParseFrame(bytes);
  if (f) {
    RC_ASSERT(f->payload.empty() || (f->payload.data() >= bytes.data() &&
                                      f->payload.data() + f->payload.size() <= bytes.data() + bytes.size()));
  }
}

}  // namespace
}  // namespace msb::net
