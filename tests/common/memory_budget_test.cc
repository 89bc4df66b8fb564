// MemoryBudget: charges, the soft limit, and the listeners that resume
// paused readers once usage falls back below three quarters of the limit.
#include "common/memory_budget.h"

#include <gtest/gtest.h>

namespace msb {
namespace {

TEST(MemoryBudgetTest, ExhaustedAtTheLimitAndListenersRunBelowThreeQuarters) {
  MemoryBudget b(1000);
  int woken = 0;
  int id = b.Watch([&]() { ++woken; });
  b.Charge(600);
  EXPECT_FALSE(b.Exhausted());
  EXPECT_EQ(b.Room(), 400u);
  b.Adjust(0, 500);  // crosses the limit: recorded, and now exhausted
  EXPECT_TRUE(b.Exhausted());
  EXPECT_EQ(b.Room(), 0u);
  EXPECT_EQ(b.peak(), 1100u);
  b.Release(200);  // 900: below the limit, above 750
  EXPECT_FALSE(b.Exhausted());
  EXPECT_EQ(woken, 0);
  b.Adjust(500, 300);  // 700
  EXPECT_EQ(woken, 1);
  b.Release(100);  // not reached again: no second wake-up
  EXPECT_EQ(woken, 1);
  b.Unwatch(id);
  b.Charge(1000);
  b.Release(1000);
  EXPECT_EQ(woken, 1);
  b.Release(5000);  // never below zero
  EXPECT_EQ(b.used(), 0u);
}

}  // namespace
}  // namespace msb
