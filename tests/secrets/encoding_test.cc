// Tests for the percent and base64 codings and PlaceholderScanner: each form
// found with its place in the text, mixed and nested escapes, base64 at every
// alignment and in both alphabets, and properties of the codings.
#include "secrets/encoding.h"

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <algorithm>

#include "secrets/placeholder.h"

namespace msb::secrets {
namespace {

const std::string kP1 = "msb-secret-aaaabbbbccccddddeeeeffffgggghhhh";
const std::string kP2 = "msb-secret-22223333444455556666777722223333";

// Every byte escaped, in lower- or upper-case hex.
std::string EncodeAll(std::string_view s, bool lower = false) {
  static constexpr char kUpper[] = "0123456789ABCDEF";
  static constexpr char kLower[] = "0123456789abcdef";
  const char* hex = lower ? kLower : kUpper;
  std::string out;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    out += '%';
    out += hex[u >> 4];
    out += hex[u & 15];
  }
  return out;
}

std::string UrlSafe(std::string s) {
  std::replace(s.begin(), s.end(), '+', '-');
  std::replace(s.begin(), s.end(), '/', '_');
  return s;
}

TEST(EncodingTest, PercentDecodeMapsBackToTheSource) {
  PercentDecoded d = PercentDecode("a%41%zz%4");
  EXPECT_EQ(d.text, "aA%zz%4");
  EXPECT_EQ(d.source, (std::vector<size_t>{0, 1, 4, 5, 6, 7, 8, 9}));
  EXPECT_EQ(PercentDecode("%6d%6D").text, "mm");
}

TEST(EncodingTest, PercentEncodeKeepsOnlyUnreserved) {
  EXPECT_EQ(PercentEncode("aZ09-._~ /?&=+%\xff"), "aZ09-._~%20%2F%3F%26%3D%2B%25%FF");
}

TEST(EncodingTest, Base64IsStrict) {
  EXPECT_EQ(Base64Encode("user:pass"), "dXNlcjpwYXNz");
  EXPECT_EQ(Base64Encode(""), "");
  EXPECT_EQ(DecodeBase64Strict("dXNlcjpwYXNz"), "user:pass");
  EXPECT_EQ(DecodeBase64Strict("YQ=="), "a");
  EXPECT_EQ(DecodeBase64Strict("YWI="), "ab");
  EXPECT_EQ(DecodeBase64Strict(""), "");
  EXPECT_FALSE(DecodeBase64Strict("YQ"));
  EXPECT_FALSE(DecodeBase64Strict("Y==="));
  EXPECT_FALSE(DecodeBase64Strict("YQ=a"));
  EXPECT_FALSE(DecodeBase64Strict("YW I"));
  EXPECT_FALSE(DecodeBase64Strict("YW-_"));
  EXPECT_FALSE(DecodeBase64Strict(" YWI="));
}

TEST(EncodingTest, ScannerFindsRawAndPercentForms) {
  PlaceholderScanner scanner({kP1, kP2});
  std::string text = "x=" + kP1 + "&y=" + EncodeAll(kP2, true) + "&z=%6Dsb-secret-aaaabbbbccccddddeeeeffffgggghhhh";
  auto hits = scanner.Scan(text);
  ASSERT_EQ(hits.size(), 3u);
  EXPECT_EQ(hits[0], (Hit{0, Form::kRaw, 2, 2 + kP1.size()}));
  EXPECT_EQ(hits[1].secret, 1u);
  EXPECT_EQ(hits[1].form, Form::kPercent);
  EXPECT_EQ(text.substr(hits[1].begin, hits[1].end - hits[1].begin), EncodeAll(kP2, true));
  EXPECT_EQ(hits[2].secret, 0u);
  EXPECT_EQ(hits[2].form, Form::kPercent);
  EXPECT_EQ(hits[2].end, text.size());
}

TEST(EncodingTest, ScannerFindsNestedPercentEncoding) {
  PlaceholderScanner scanner({kP1});
  std::string twice = PercentEncode(EncodeAll(kP1));
  std::string once_with_escaped_percent = "%256Dsb-secret-aaaabbbbccccddddeeeeffffgggghhhh";
  for (const std::string& t : {twice, once_with_escaped_percent, PercentEncode(twice)}) {
    auto hits = scanner.Scan(t);
    ASSERT_EQ(hits.size(), 1u) << t;
    EXPECT_EQ(hits[0].form, Form::kNested) << t;
  }
  // Four rounds are beyond kMaxPercentDecodeDepth.
  EXPECT_TRUE(scanner.Scan(PercentEncode(PercentEncode(twice))).empty());
}

TEST(EncodingTest, ScannerFindsBase64AtEveryAlignmentInBothAlphabets) {
  PlaceholderScanner scanner({kP1, kP2});
  for (std::string prefix : {"", "u", "us", "user:"}) {
    for (std::string suffix : {"", "!", ":xy"}) {
      std::string b64 = Base64Encode(prefix + kP2 + suffix);
      for (const std::string& t : {b64, UrlSafe(b64), "k=" + PercentEncode(b64)}) {
        auto hits = scanner.Scan(t);
        ASSERT_EQ(hits.size(), 1u) << t;
        EXPECT_EQ(hits[0], (Hit{1, Form::kBase64, 0, 0})) << t;
      }
    }
  }
}

TEST(EncodingTest, ScannerIgnoresOtherPlaceholdersAndPrefixes) {
  PlaceholderScanner scanner({kP1});
  EXPECT_TRUE(scanner.Scan("msb-secret-").empty());
  EXPECT_TRUE(scanner.Scan(kP2 + " " + Base64Encode(kP2)).empty());
  EXPECT_TRUE(scanner.Scan(kP1.substr(0, kP1.size() - 1)).empty());
  EXPECT_TRUE(PlaceholderScanner({}).Scan(kP1).empty());
}

TEST(EncodingTest, ScannerWithoutSharedPrefixStillFinds) {
  PlaceholderScanner scanner({"alpha-token", "beta-token"});
  auto hits = scanner.Scan("beta-token alpha%2dtoken");
  ASSERT_EQ(hits.size(), 2u);
  EXPECT_EQ(hits[0].secret, 1u);
  EXPECT_EQ(hits[1].form, Form::kPercent);
}

TEST(EncodingTest, FormNames) { EXPECT_STREQ(ToString(Form::kBase64), "base64"); }

RC_GTEST_PROP(EncodingProperty, PercentRoundTrip, (std::string bytes)) {
  RC_ASSERT(PercentDecode(PercentEncode(bytes)).text == bytes);
}

RC_GTEST_PROP(EncodingProperty, Base64RoundTrip, (std::string bytes)) {
  RC_ASSERT(DecodeBase64Strict(Base64Encode(bytes)) == std::optional<std::string>(bytes));
}

// The base64 of any text holding a placeholder holds one of its cores.
RC_GTEST_PROP(EncodingProperty, Base64CoresAreInEveryEncoding, (std::string prefix, std::string suffix)) {
  std::string placeholder = *NewPlaceholder();
  auto cores = Base64Cores(placeholder);
  RC_ASSERT(cores.size() >= 3u);
  std::string b64 = Base64Encode(prefix + placeholder + suffix);
  auto in = [&](const std::string& t) {
    return std::any_of(cores.begin(), cores.end(),
                       [&](const std::string& c) { return t.find(c) != std::string::npos; });
  };
  RC_ASSERT(in(b64));
  RC_ASSERT(in(UrlSafe(b64)));
}

// Hits delimit exactly the text that decodes to the placeholder.
RC_GTEST_PROP(EncodingProperty, HitsDelimitThePlaceholder, (std::string before, std::string after)) {
  before.erase(std::remove(before.begin(), before.end(), '%'), before.end());
  after.erase(std::remove(after.begin(), after.end(), '%'), after.end());
  bool encode = *rc::gen::arbitrary<bool>();
  std::string form = encode ? EncodeAll(kP1, *rc::gen::arbitrary<bool>()) : kP1;
  std::string text = before + form + after;
  auto hits = PlaceholderScanner({kP1}).Scan(text);
  RC_ASSERT(!hits.empty());
  RC_ASSERT(hits[0].form == (encode ? Form::kPercent : Form::kRaw));
  RC_ASSERT(hits[0].begin == before.size());
  RC_ASSERT(hits[0].end == before.size() + form.size());
}

}  // namespace
}  // namespace msb::secrets
