#include "vm/lifecycle_policy.h"

#include <gtest/gtest.h>

namespace msb::vm {
namespace {

TEST(PolicyTest, RestartDecisions) {
  RestartPolicy no{RestartPolicy::Kind::kNo, 0};
  RestartPolicy always{RestartPolicy::Kind::kAlways, 0};
  RestartPolicy unless{RestartPolicy::Kind::kUnlessStopped, 0};
  RestartPolicy on3{RestartPolicy::Kind::kOnFailure, 3};
  RestartPolicy on_any{RestartPolicy::Kind::kOnFailure, 0};
  EXPECT_FALSE(ShouldRestart(no, true, 0));
  EXPECT_TRUE(ShouldRestart(always, false, 100));
  EXPECT_TRUE(ShouldRestart(unless, false, 0));
  EXPECT_FALSE(ShouldRestart(on3, false, 0));  // a clean exit is not a failure
  EXPECT_TRUE(ShouldRestart(on3, true, 2));
  EXPECT_FALSE(ShouldRestart(on3, true, 3));
  EXPECT_TRUE(ShouldRestart(on_any, true, 1000));
}

TEST(PolicyTest, BackoffDoublesAndCaps) {
  EXPECT_EQ(RestartBackoff(0).count(), 1000);
  EXPECT_EQ(RestartBackoff(1).count(), 2000);
  EXPECT_EQ(RestartBackoff(4).count(), 16000);
  EXPECT_EQ(RestartBackoff(5).count(), 30000);
  EXPECT_EQ(RestartBackoff(50).count(), 30000);
}

TEST(PolicyTest, HealthStartPeriodRetriesAndRecovery) {
  HealthPolicy hp;
  hp.command = {"true"};
  hp.retries = 2;
  hp.start_period_ms = 1000;
  HealthTracker t(hp);
  EXPECT_EQ(t.state(), Health::kStarting);
  t.OnProbe(false, 100);  // in the start period: not counted
  t.OnProbe(false, 500);
  EXPECT_EQ(t.state(), Health::kStarting);
  EXPECT_EQ(t.consecutive_failures(), 0);
  t.OnProbe(false, 1500);
  EXPECT_EQ(t.state(), Health::kStarting);
  t.OnProbe(false, 2500);
  EXPECT_EQ(t.state(), Health::kUnhealthy);
  t.OnProbe(true, 3500);
  EXPECT_EQ(t.state(), Health::kHealthy);
  t.OnProbe(false, 4500);
  EXPECT_EQ(t.state(), Health::kHealthy);  // one failure of two allowed
}

TEST(PolicyTest, JsonRoundTripAndRejects) {
  LifecyclePolicy p;
  p.restart = {RestartPolicy::Kind::kOnFailure, 5};
  p.health = HealthPolicy{{"test", "-f", "/ok"}, 2000, 1000, 4, 3000};
  auto back = LifecyclePolicyFromJson(ToJson(p));
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->restart.kind, RestartPolicy::Kind::kOnFailure);
  EXPECT_EQ(back->restart.max_retries, 5);
  ASSERT_TRUE(back->health.has_value());
  EXPECT_EQ(back->health->command, (std::vector<std::string>{"test", "-f", "/ok"}));
  EXPECT_EQ(back->health->start_period_ms, 3000);
  auto bad = LifecyclePolicyFromJson(nlohmann::json{{"restart", {{"kind", "sometimes"}}}});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().message(), "unknown restart policy sometimes");
}

}  // namespace
}  // namespace msb::vm
