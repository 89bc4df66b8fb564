// What the supervisor applies without a new VM: the restart policy and the
// health check. Pure data and decisions; the supervisor does the timing.
// Not the Sandboxfile model (schema/), which the CLI converts from.
#pragma once

#include <nlohmann/json.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace msb::vm {

struct RestartPolicy {
  enum class Kind : int { kNo = 0, kAlways = 1, kOnFailure = 2, kUnlessStopped = 3 };
  Kind kind = Kind::kNo;
  int max_retries = 0;  // kOnFailure: 0 = unlimited
};
const char* ToString(RestartPolicy::Kind kind);

struct HealthPolicy {
  std::vector<std::string> command;
  int64_t interval_ms = 10000;
  int64_t timeout_ms = 5000;
  int retries = 3;
  int64_t start_period_ms = 0;
};

struct LifecyclePolicy {
  RestartPolicy restart;
  std::optional<HealthPolicy> health;
};

nlohmann::json ToJson(const LifecyclePolicy& p);
Result<LifecyclePolicy> LifecyclePolicyFromJson(const nlohmann::json& j);

// Whether a VM whose workload ended (failed: non-zero exit, or the VM died)
// is started again, given how many restarts it already had. A stop the user
// asked for never reaches this.
bool ShouldRestart(const RestartPolicy& p, bool failed, int restarts_so_far);
// Delay before restart number `attempt` (0-based): 1 s doubling, at most 30 s.
std::chrono::milliseconds RestartBackoff(int attempt);

enum class Health : int { kNone = 0, kStarting = 1, kHealthy = 2, kUnhealthy = 3 };
const char* ToString(Health h);

// The health state machine: probes report their outcome; failures during the
// start period do not count; `retries` consecutive failures make it unhealthy,
// one success healthy.
class HealthTracker {
 public:
  explicit HealthTracker(const HealthPolicy& p) : policy_(p) {}
  void OnProbe(bool ok, int64_t ms_since_start);
  Health state() const { return state_; }
  int consecutive_failures() const { return failures_; }

 private:
  HealthPolicy policy_;
  Health state_ = Health::kStarting;
  int failures_ = 0;
};

}  // namespace msb::vm
