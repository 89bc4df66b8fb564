#include "common/base64.h"

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <string>

namespace msb {
namespace {

TEST(Base64, RoundTrip) {
  EXPECT_EQ(Base64Encode("user:pass"), "dXNlcjpwYXNz");
  EXPECT_EQ(*Base64Decode("dXNlcjpwYXNz"), "user:pass");
  EXPECT_EQ(*Base64Decode("YQ=="), "a");
  EXPECT_EQ(*Base64Decode("YQ"), "a");
  EXPECT_FALSE(Base64Decode("Y!==").ok());
}

RC_GTEST_PROP(Base64Props, RoundTrips, (const std::string& s)) {
  auto d = Base64Decode(Base64Encode(s));
  RC_ASSERT(d.ok());
  RC_ASSERT(*d == s);
}

}  // namespace
}  // namespace msb
