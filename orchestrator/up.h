// msb up and msb plan for one project: the reconcile pass (resolve images →
// observe, store records corrected by supervisor liveness → MakePlan,
// planner.h → Execute, executor.h, with the step runner that creates,
// replaces, starts, updates and removes sandboxes through launch.h), --wait
// and the --watch loop. Progress and errors go through callbacks (only the
// project lock's "waiting for it" notice goes to stderr directly). Not the
// planner, not the executor, not one sandbox's mechanics.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/fd.h"
#include "common/result.h"
#include "orchestrator/images.h"
#include "orchestrator/planner.h"
#include "orchestrator/store.h"
#include "schema/model.h"

namespace msb::orchestrator {

// Holds the project's lock file: two `msb up` (or up and down) on one project
// are serialised. Released on destruction.
class ProjectLock {
 public:
  // Exclusive: waits for every other holder.
  static Result<ProjectLock> Acquire(const std::string& project);
  // Shared: held by any number of shared holders at once, never with an
  // exclusive one (`msb run` of a snapshot against `msb snapshot rm`,
  // orchestrator/snapshot.h ResolveRunImage).
  static Result<ProjectLock> AcquireShared(const std::string& project);
  // Whether another process holds the project's lock now (an `msb up` or
  // `down` is changing it). Never waits.
  static bool Held(const std::string& project);

 private:
  explicit ProjectLock(UniqueFd fd) : fd_(std::move(fd)) {}
  static Result<ProjectLock> Take(const std::string& project, int operation);
  UniqueFd fd_;
};

// A project is its name and the directory of its Sandboxfile. The name may
// be used from this Sandboxfile's directory when no project of that name is
// recorded, or it is recorded for this same directory (compared as written,
// else by device and inode). Recorded for a directory that no longer exists,
// it is taken over: when take_over, the record moves here (Store::MoveProject)
// and `note` gets one line either way. Recorded for another existing
// directory: a kAlreadyExists error naming both directories and the ways out
// (another name with -p or MSB_PROJECT_NAME, or `msb down -p NAME` there).
// up, plan and down call it before anything else, so orphan removal only
// ever sees sandboxes of this project and directory.
Status CheckProjectDirectory(Store& store, const schema::Project& project, bool take_over,
                             const std::function<void(const std::string&)>& note);

// The project's records, each corrected for a dead supervisor.
Result<std::vector<SandboxRecord>> ObserveProject(Store& store, const std::string& project);

// Waits (deadline) until `name` satisfies `condition` (started: running;
// healthy: its health check passed; completed: its workload exited with 0).
Status WaitForCondition(const std::string& project, const std::string& name,
                        schema::DependCondition condition, int deadline_s);

struct UpOptions {
  // Selection, --force-recreate, --no-recreate.
  PlanOptions plan;
  // Registry settings. `fetch` is set per use: up fetches, plan never does.
  ImageOptions images;
  int parallelism = 4;
  // --wait: after the first pass, every selected sandbox running, and healthy
  // where it has a health check, within wait_timeout_s.
  bool wait = false;
  int wait_timeout_s = 300;
  // --watch: reconcile again when the Sandboxfile or its .env changes
  // (debounced) and every kWatchPeriodMs to restore sandboxes that died;
  // `reload` reads the file again (nullopt: it has errors, already reported
  // by reload; everything is left as it is).
  bool watch = false;
  std::function<std::optional<schema::Project>()> reload;
  // ReconcileOnce prints nothing when nothing changes (no "unchanged" lines,
  // no "nothing to do"), as the --watch loop's later passes do; msb sync's
  // loop sets it after its first pass.
  bool quiet_unchanged = false;
  // Progress lines ("created web", "unchanged api", "watching ...").
  std::function<void(const std::string&)> report;
  // Under --watch, a pass's error: reported, and the loop goes on.
  std::function<void(const std::string&)> report_error;
  // True: start no further step, end the --watch loop.
  std::function<bool()> cancelled;
};

inline constexpr int kWatchPeriodMs = 5000;

// msb plan: images resolved from the store only (never fetched), observe, plan.
Result<Plan> PlanProject(const schema::Project& project, const UpOptions& options);

// One reconcile pass: resolve (fetching), observe, plan, record the project
// and execute. It reports one line per sandbox of the plan, in plan order
// whatever order the steps finish in (executor.h): "created NAME",
// "replaced NAME", "updated NAME", "started NAME", "removed NAME" or
// "unchanged NAME" (none for a step that failed: the error names it); when
// every step is a noop, the "unchanged" lines and then "nothing to do: N
// sandboxes up to date". The --watch loop's later passes report only what
// they change, and so does a pass with quiet_unchanged.
Status ReconcileOnce(const schema::Project& project, const UpOptions& options);

// msb up: holds the project's lock, one pass, then --wait; under --watch
// loops until cancelled (errors of each pass go to report_error) and returns
// only for an error of the watch itself or on cancellation.
Status Up(const schema::Project& project, const UpOptions& options);

}  // namespace msb::orchestrator
