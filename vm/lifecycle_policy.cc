// Restart and health decisions.
#include "vm/lifecycle_policy.h"

#include <algorithm>

namespace msb::vm {

const char* ToString(RestartPolicy::Kind kind) {
  switch (kind) {
    case RestartPolicy::Kind::kNo: return "no";
    case RestartPolicy::Kind::kAlways: return "always";
    case RestartPolicy::Kind::kOnFailure: return "on-failure";
    case RestartPolicy::Kind::kUnlessStopped: return "unless-stopped";
  }
  return "?";
}

const char* ToString(Health h) {
  switch (h) {
    case Health::kNone: return "";
    case Health::kStarting: return "starting";
    case Health::kHealthy: return "healthy";
    case Health::kUnhealthy: return "unhealthy";
  }
  return "?";
}

nlohmann::json ToJson(const LifecyclePolicy& p) {
  nlohmann::json j{{"restart", {{"kind", ToString(p.restart.kind)}, {"max_retries", p.restart.max_retries}}}};
  if (p.health) {
    j["health"] = {{"command", p.health->command},
                   {"interval_ms", p.health->interval_ms},
                   {"timeout_ms", p.health->timeout_ms},
                   {"retries", p.health->retries},
                   {"start_period_ms", p.health->start_period_ms}};
  } else {
    j["health"] = nullptr;
  }
  return j;
}

Result<LifecyclePolicy> LifecyclePolicyFromJson(const nlohmann::json& j) {
  LifecyclePolicy p;
  if (j.is_null()) return p;
  try {
    std::string kind = j.at("restart").at("kind").get<std::string>();
    bool found = false;
    for (auto k : {RestartPolicy::Kind::kNo, RestartPolicy::Kind::kAlways,
                   RestartPolicy::Kind::kOnFailure, RestartPolicy::Kind::kUnlessStopped}) {
      if (kind == ToString(k)) {
        p.restart.kind = k;
        found = true;
      }
    }
    if (!found) return Error(ErrorCode::kInvalidArgument, "unknown restart policy " + kind);
    p.restart.max_retries = j.at("restart").value("max_retries", 0);
    if (j.contains("health") && !j["health"].is_null()) {
      const auto& h = j["health"];
      HealthPolicy hp;
      hp.command = h.at("command").get<std::vector<std::string>>();
      hp.interval_ms = h.value("interval_ms", hp.interval_ms);
      hp.timeout_ms = h.value("timeout_ms", hp.timeout_ms);
      hp.retries = h.value("retries", hp.retries);
      hp.start_period_ms = h.value("start_period_ms", hp.start_period_ms);
      if (hp.command.empty() || hp.interval_ms <= 0 || hp.timeout_ms <= 0 || hp.retries < 1) {
        return Error(ErrorCode::kInvalidArgument, "malformed health check policy");
      }
      p.health = hp;
    }
  } catch (const nlohmann::json::exception& e) {
    return Error(ErrorCode::kInvalidArgument, std::string("malformed policy: ") + e.what());
  }
  return p;
}

bool ShouldRestart(const RestartPolicy& p, bool failed, int restarts_so_far) {
  switch (p.kind) {
    case RestartPolicy::Kind::kNo: return false;
    case RestartPolicy::Kind::kAlways:
    case RestartPolicy::Kind::kUnlessStopped: return true;
    case RestartPolicy::Kind::kOnFailure:
      return failed && (p.max_retries == 0 || restarts_so_far < p.max_retries);
  }
  return false;
}

std::chrono::milliseconds RestartBackoff(int attempt) {
  int64_t ms = 1000;
  for (int i = 0; i < attempt && ms < 30000; ++i) ms *= 2;
  return std::chrono::milliseconds(std::min<int64_t>(ms, 30000));
}

void HealthTracker::OnProbe(bool ok, int64_t ms_since_start) {
  if (ok) {
    state_ = Health::kHealthy;
    failures_ = 0;
    return;
  }
  if (ms_since_start < policy_.start_period_ms && state_ == Health::kStarting) return;
  if (++failures_ >= policy_.retries) state_ = Health::kUnhealthy;
}

}  // namespace msb::vm
