#include "common/result.h"

#include <gtest/gtest.h>

namespace msb {
namespace {

Result<int> Half(int x) {
  if (x % 2 != 0) return Error(ErrorCode::kInvalidArgument, std::to_string(x) + " is odd");
  return x / 2;
}

Result<int> Quarter(int x) {
  MSB_TRY(int h, Half(x));
  MSB_TRY(int q, Half(h));
  return q;
}

TEST(ResultTest, ValueAndErrorPropagate) {
  auto ok = Quarter(8);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, 2);
  auto bad = Quarter(6);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(bad.error().message(), "3 is odd");
}

TEST(ResultTest, WrapAddsContextAndKeepsErrno) {
  Error e = Error::FromErrno("open /x", ENOENT);
  EXPECT_EQ(e.code(), ErrorCode::kIo);
  EXPECT_EQ(e.sys_errno(), ENOENT);
  Error w = e.Wrap("loading image");
  EXPECT_EQ(w.message(), "loading image: open /x: No such file or directory");
  EXPECT_EQ(w.sys_errno(), ENOENT);
}

TEST(ResultTest, CheckFailureAborts) {
  EXPECT_DEATH(MSB_CHECK(1 == 2, "math broke"), "math broke");
}

}  // namespace
}  // namespace msb
