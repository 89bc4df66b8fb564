// common/sha256.h and common/hex.h: the streaming hasher against published
// vectors (FIPS 180-2), chunked hashing equal to one-shot, the reset after a
// final, and the lower-case hex helpers.
#include "common/sha256.h"

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "common/hex.h"
#include "common/io.h"

namespace msb {
namespace {

constexpr const char* kEmpty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
constexpr const char* kAbc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
constexpr const char* kTwoBlocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
constexpr const char* kTwoBlocksHash = "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1";
constexpr const char* kMillionA = "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0";

TEST(Sha256Test, KnownVectorsOneShot) {
  EXPECT_EQ(Sha256Hex(""), kEmpty);
  EXPECT_EQ(Sha256Hex("abc"), kAbc);
  EXPECT_EQ(Sha256Hex(kTwoBlocks), kTwoBlocksHash);
  EXPECT_EQ(Sha256Hex(std::string(1000000, 'a')), kMillionA);
}

TEST(Sha256Test, KnownVectorsStreaming) {
  Sha256 h;
  EXPECT_EQ(h.HexFinal(), kEmpty);
  h.Update("a");
  h.Update("");
  h.Update(std::string_view("bc"));
  EXPECT_EQ(h.HexFinal(), kAbc);
  // A million 'a' in uneven pieces, through both Update overloads.
  const std::string chunk(999, 'a');
  size_t left = 1000000;
  for (bool raw = false; left > 0; raw = !raw) {
    size_t n = std::min(left, chunk.size());
    if (raw) {
      h.Update(chunk.data(), n);
    } else {
      h.Update(std::string_view(chunk).substr(0, n));
    }
    left -= n;
  }
  EXPECT_EQ(h.HexFinal(), kMillionA);
}

TEST(Sha256Test, FinalStartsTheNextHash) {
  Sha256 h;
  h.Update("some bytes that must not leak into the next hash");
  EXPECT_NE(h.HexFinal(), kAbc);
  h.Update("abc");
  EXPECT_EQ(h.DigestFinal(), std::string("sha256:") + kAbc);
  EXPECT_EQ(h.HexFinal(), kEmpty);
}

TEST(Sha256Test, ResetForgetsWhatWasHashed) {
  Sha256 h;
  h.Update("xyz");
  h.Reset();
  h.Update("abc");
  EXPECT_EQ(h.HexFinal(), kAbc);
}

TEST(Sha256Test, MovedHasherKeepsItsState) {
  Sha256 a;
  a.Update("ab");
  Sha256 b(std::move(a));
  b.Update("c");
  EXPECT_EQ(b.HexFinal(), kAbc);
  Sha256 c;
  c = std::move(b);
  c.Update(kTwoBlocks);
  EXPECT_EQ(c.HexFinal(), kTwoBlocksHash);
}

RC_GTEST_PROP(Sha256Properties, ChunkedEqualsOneShot, (const std::string& data, std::vector<size_t> cuts)) {
  Sha256 h;
  size_t at = 0;
  for (size_t cut : cuts) {
    size_t n = std::min(cut % 97, data.size() - at);
    h.Update(std::string_view(data).substr(at, n));
    at += n;
  }
  h.Update(std::string_view(data).substr(at));
  const std::string hex = h.HexFinal();
  RC_ASSERT(hex == Sha256Hex(data));
  RC_ASSERT(IsHex64(hex));
}

TEST(Sha256Test, FileMatchesBytesAndMissingFileIsAnError) {
  char tmpl[] = "/tmp/msb-sha256-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  // Larger than Sha256File's read buffer, so it takes several reads.
  std::string body;
  for (int i = 0; i < 50000; ++i) body += std::to_string(i) + "\n";
  ASSERT_TRUE(WriteFileAtomic(dir + "/f", body).ok());
  auto got = Sha256File(dir + "/f");
  ASSERT_TRUE(got.ok()) << got.error().message();
  EXPECT_EQ(*got, Sha256Hex(body));
  auto missing = Sha256File(dir + "/absent");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), ErrorCode::kIo);
  EXPECT_NE(missing.error().message().find("cannot open " + dir + "/absent"), std::string::npos);
  std::filesystem::remove_all(dir);
}

TEST(HexTest, LowerCaseEncoding) {
  const unsigned char bytes[] = {0x00, 0x01, 0x7f, 0x80, 0xab, 0xff};
  EXPECT_EQ(HexLower(bytes, sizeof bytes), "00017f80abff");
  EXPECT_EQ(HexLower(bytes, 0), "");
}

TEST(HexTest, IsHex64AcceptsOnlySixtyFourLowerCaseDigits) {
  EXPECT_TRUE(IsHex64(kAbc));
  EXPECT_TRUE(IsHex64(std::string(64, '0')));
  EXPECT_FALSE(IsHex64(std::string(63, 'a')));
  EXPECT_FALSE(IsHex64(std::string(65, 'a')));
  EXPECT_FALSE(IsHex64(""));
  std::string upper = kAbc;
  upper[0] = 'B';
  EXPECT_FALSE(IsHex64(upper));
  std::string g = kAbc;
  g[63] = 'g';
  EXPECT_FALSE(IsHex64(g));
  EXPECT_FALSE(IsHex64(std::string("sha256:") + kAbc));
}

}  // namespace
}  // namespace msb
