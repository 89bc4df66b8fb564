// Frame codec tests: layout, incremental feeding, oversized and truncated
// frames, and a round-trip property over arbitrary frames and chunkings.
#include "agent/frame.h"

#include <gtest/gtest.h>
#include <rapidcheck.h>
#include <rapidcheck/gtest.h>

#include <vector>

namespace msb::agent {
namespace {

std::vector<Frame> DrainAll(FrameReader& r) {
  std::vector<Frame> out;
  for (;;) {
    auto n = r.Next();
    EXPECT_TRUE(n.ok()) << n.error().message();
    if (!n.ok() || !n->has_value()) return out;
    out.push_back(std::move(**n));
  }
}

TEST(FrameTest, EncodesHeaderBigEndian) {
  std::string bytes = EncodeFrame(Frame{0x01020304, FrameKind::kExec, "ab"});
  ASSERT_EQ(bytes.size(), kHeaderSize + 2);
  EXPECT_EQ(bytes, std::string("\x00\x00\x00\x02\x01\x02\x03\x04\x10" "ab", 11));
}

TEST(FrameTest, KindNames) {
  EXPECT_EQ(ToString(FrameKind::kCopyOut), "copy-out");
  EXPECT_EQ(ToString(FrameKind::kError), "error");
  EXPECT_EQ(ToString(static_cast<FrameKind>(99)), "kind(99)");
  EXPECT_TRUE(IsKnownKind(34));
  EXPECT_FALSE(IsKnownKind(0));
  EXPECT_FALSE(IsKnownKind(99));
}

TEST(FrameTest, ByteAtATime) {
  std::string bytes = EncodeFrame(Frame{7, FrameKind::kStdout, "hello"}) +
                      EncodeFrame(Frame{8, FrameKind::kStdin, ""});
  FrameReader r;
  std::vector<Frame> got;
  for (char c : bytes) {
    r.Feed(std::string_view(&c, 1));
    for (auto& f : DrainAll(r)) got.push_back(std::move(f));
  }
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0], (Frame{7, FrameKind::kStdout, "hello"}));
  EXPECT_EQ(got[1], (Frame{8, FrameKind::kStdin, ""}));
  EXPECT_EQ(r.buffered(), 0u);
}

TEST(FrameTest, TruncatedFrameWaitsAndReportsMidFrame) {
  std::string bytes = EncodeFrame(Frame{3, FrameKind::kData, std::string(100, 'x')});
  FrameReader r;
  r.Feed(std::string_view(bytes).substr(0, 50));
  auto n = r.Next();
  ASSERT_TRUE(n.ok());
  EXPECT_FALSE(n->has_value());
  EXPECT_TRUE(r.mid_frame());
  EXPECT_EQ(r.wanted(), bytes.size() - 50);
  r.Feed(std::string_view(bytes).substr(50));
  auto all = DrainAll(r);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].payload.size(), 100u);
  EXPECT_FALSE(r.mid_frame());
}

TEST(FrameTest, MaxPayloadIsAccepted) {
  Frame big{9, FrameKind::kData, std::string(kMaxPayload, 'z')};
  FrameReader r;
  r.Feed(EncodeFrame(big));
  auto all = DrainAll(r);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0], big);
}

TEST(FrameTest, OversizedHeaderPoisonsReader) {
  // The header alone is enough to reject: the reader must not wait for 1 MiB+.
  std::string hdr("\x00\x10\x00\x01\x00\x00\x00\x02\x13", 9);
  FrameReader r;
  r.Feed(hdr);
  auto n = r.Next();
  ASSERT_FALSE(n.ok());
  EXPECT_EQ(n.error().code(), ErrorCode::kProtocol);
  EXPECT_NE(n.error().message().find("1048577"), std::string::npos) << n.error().message();
  EXPECT_TRUE(r.poisoned());
  // Further input is ignored, and the error sticks.
  r.Feed(EncodeFrame(Frame{2, FrameKind::kStdout, "x"}));
  EXPECT_FALSE(r.Next().ok());
  EXPECT_EQ(r.buffered(), 0u);
}

TEST(FrameTest, UnknownKindPassesThrough) {
  std::string bytes("\x00\x00\x00\x00\x00\x00\x00\x05\x63", 9);
  FrameReader r;
  r.Feed(bytes);
  auto all = DrainAll(r);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(static_cast<int>(all[0].kind), 0x63);
  EXPECT_EQ(all[0].id, 5u);
}

RC_GTEST_PROP(FramePropertyTest, RoundTripAnyChunking, ()) {
  auto frames = *rc::gen::container<std::vector<Frame>>(rc::gen::build<Frame>(
      rc::gen::set(&Frame::id, rc::gen::arbitrary<uint32_t>()),
      rc::gen::set(&Frame::kind, rc::gen::map(rc::gen::arbitrary<uint8_t>(),
                                              [](uint8_t k) { return static_cast<FrameKind>(k); })),
      rc::gen::set(&Frame::payload,
                   rc::gen::container<std::string>(*rc::gen::inRange<size_t>(0, 3000),
                                                   rc::gen::arbitrary<char>()))));
  std::string bytes;
  for (const auto& f : frames) bytes += EncodeFrame(f);
  // Cut the stream at arbitrary points.
  auto cuts = *rc::gen::container<std::vector<size_t>>(rc::gen::inRange<size_t>(0, bytes.size() + 1));
  std::sort(cuts.begin(), cuts.end());
  FrameReader r;
  std::vector<Frame> got;
  size_t prev = 0;
  cuts.push_back(bytes.size());
  for (size_t c : cuts) {
    r.Feed(std::string_view(bytes).substr(prev, c - prev));
    prev = c;
    for (;;) {
      auto n = r.Next();
      RC_ASSERT(n.ok());
      if (!n->has_value()) break;
      got.push_back(std::move(**n));
    }
  }
  RC_ASSERT(got == frames);
  RC_ASSERT(r.buffered() == 0u);
}

}  // namespace
}  // namespace msb::agent
