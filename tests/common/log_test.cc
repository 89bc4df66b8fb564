// Tests for the rate limit on guest-caused log lines: one line per key per
// interval, the held-back lines counted into the next, keys independent.
#include "common/log.h"

#include <gtest/gtest.h>

namespace msb {
namespace {

TEST(LogRateLimiterTest, OneLinePerKeyPerIntervalAndTheRestCounted) {
  using namespace std::chrono_literals;
  LogRateLimiter limiter(10s, 1);
  LogRateLimiter::Clock::time_point t0{};
  uint64_t held = 99;
  EXPECT_TRUE(limiter.Allow("dns", t0 + 1s, &held));
  EXPECT_EQ(held, 0u);
  for (int i = 0; i < 1000; ++i) EXPECT_FALSE(limiter.Allow("dns", t0 + 2s, &held));
  EXPECT_TRUE(limiter.Allow("net", t0 + 2s, &held));  // another key is not held back
  EXPECT_FALSE(limiter.Allow("dns", t0 + 10s, &held));  // 9 s after the line
  EXPECT_TRUE(limiter.Allow("dns", t0 + 11s, &held));
  EXPECT_EQ(held, 1001u);
  EXPECT_EQ(HeldBackNote(held), " (1001 more like it not logged)");
  EXPECT_EQ(HeldBackNote(0), "");
}

TEST(LogRateLimiterTest, ABurstOfLinesGoesOutBeforeAnyIsHeldBack) {
  using namespace std::chrono_literals;
  LogRateLimiter limiter(10s, 3);
  LogRateLimiter::Clock::time_point t0{};
  uint64_t held = 99;
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(limiter.Allow("dns", t0 + 1s, &held)) << i;
    EXPECT_EQ(held, 0u);
  }
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(limiter.Allow("dns", t0 + 5s, &held));
  EXPECT_FALSE(limiter.Allow("dns", t0 + 10s, &held));  // the window opened at 1 s
  EXPECT_TRUE(limiter.Allow("dns", t0 + 11s, &held));
  EXPECT_EQ(held, 6u);
  EXPECT_TRUE(limiter.Allow("dns", t0 + 11s, &held));
  EXPECT_EQ(held, 0u);  // counted once, on the first line out
}

}  // namespace
}  // namespace msb
