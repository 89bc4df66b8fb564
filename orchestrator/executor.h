// msb up / plan / down for one project: observe (store records corrected by
// supervisor liveness) → MakePlan (planner.h, pure) → Execute, which runs the
// plan's steps as a dependency graph, in parallel where the edges allow, and
// makes no decisions of its own. Not the planner and not the launcher.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/fd.h"
#include "common/result.h"
#include "orchestrator/images.h"
#include "orchestrator/launch.h"
#include "orchestrator/planner.h"
#include "orchestrator/store.h"
#include "schema/model.h"

namespace msb::orchestrator {

// Holds the project's lock file: two `msb up` (or up and down) on one project
// are serialised. Released on destruction.
class ProjectLock {
 public:
  static Result<ProjectLock> Acquire(const std::string& project);

 private:
  explicit ProjectLock(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

// The project's records, each corrected for a dead supervisor.
Result<std::vector<SandboxRecord>> ObserveProject(Store& store, const std::string& project);

// The supervisor's policy (vm/lifecycle_policy.h JSON) for a declared sandbox.
nlohmann::json SupervisorPolicy(const schema::Sandbox& sb);

// The launch request for a declared sandbox.
Result<LaunchRequest> MakeLaunchRequest(const schema::Project& project, const schema::Sandbox& sb,
                                        const ResolvedImage& image);

// Live status of a sandbox from its supervisor: state and, when it has a
// health check, "health" (starting|healthy|unhealthy); kState error when it is
// not running.
Result<nlohmann::json> LiveStatus(const SandboxRecord& record);

// Waits (deadline) until `name` satisfies `condition` (started: running;
// healthy: its health check passed; completed: its workload exited with 0).
Status WaitForCondition(const std::string& project, const std::string& name,
                        schema::DependCondition condition, int deadline_s);

struct ExecuteOptions {
  int parallelism = 4;
  // Progress lines ("created web", "removed old", ...).
  std::function<void(const std::string&)> report;
};

// Executes plan; returns an error naming every step that failed (and those
// that were not started because a dependency failed).
Status Execute(const schema::Project& project, const std::map<std::string, ResolvedImage>& images,
               const Plan& plan, const ExecuteOptions& options);

}  // namespace msb::orchestrator
