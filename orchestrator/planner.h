// The planner of `msb plan` and `msb up`: a pure function from the desired
// state (a loaded Sandboxfile and resolved image digests) and the observed
// state (the project's sandbox records) to a Plan whose steps each carry a
// cause. No I/O, no clock, no store: deciding only. Executing a plan (and
// resolving images, observing supervisors) is the executor's job.
//
// Inputs.
//   desired   the schema::Project, plus image_digests: sandbox name -> the
//             resolved digest of its image. A name missing from the map (or
//             mapped to "") is not resolved yet: its image is assumed to be
//             the one its record was created from.
//   observed  the project's SandboxRecords, already corrected for dead
//             supervisors. Each record's spec_json is RecordSpecJson(sandbox,
//             digest) of what it was created from, and its config_hash is
//             schema::ConfigHash(sandbox, digest).
//
// Decisions, per declared sandbox (one step each):
//   no record                        kCreate   "+ create web"
//   config hash differs              kReplace  "-/+ replace api (memory 512M -> 1G; image digest changed)"
//   hash same, depends_on, restart   kUpdate   "~ update worker (restart no -> always)"
//     or healthcheck differ, running
//   hash same, created/stopped/      kStart    "> start db (was failed: supervisor died)"
//     failed/exited                            (in-place changes, if any, follow the reason)
//   hash and the rest the same,      kNoop     "= web up to date"
//     starting/running
// and per record no longer declared, kRemove "- remove old (no longer declared)"
// (kNoop "= old unchanged (no longer declared, kept)" when orphans
// are not removed).
//
// Causes list the changed canonical fields in sorted key order, nested maps
// by dotted path (envs.LOG_LEVEL, network.policy, secrets.T.allow), each as
// "<field> <old> -> <new>" with human values (sizes 512M, durations 5s,
// lists [a, b], "(none)" for absent, values past 48 characters elided with
// "..."), then "image digest changed" when the image reference is the same
// but its digest is not. A hash change with no visible difference says
// "config changed". Meta is informational and never compared.
//
// Options: keep_stopped leaves a kStopped sandbox whose hash is the same
// as it is (kNoop). force_recreate turns noop, update and start into kReplace with
// "forced" first among the causes; no_recreate turns a replace into kNoop
// ("= api unchanged (not recreated (--no-recreate): memory 512M -> 1G)"),
// or into kStart for a sandbox that is not running. A selection of names
// restricts the plan to those sandboxes and their transitive dependencies;
// nothing else appears in it, orphans included (docker compose up NAMES).
//
// Order (deterministic): orphan removals first, dependents before what they
// depended on (as recorded), ties by name; then every planned declared
// sandbox in topological order of depends_on, dependencies first, ties by
// name. A replaced sandbox's dependents stay up unless they are replaced too.
//
// Execution graph: Step::depends_on lists the steps that must finish first.
// An action step (create, replace, update, start) waits for the action steps
// of its declared dependencies, carrying the dependency's condition (the
// executor then also waits until it is healthy or has completed); create,
// replace and start also wait for every removal (a removed orphan may hold a
// port or a volume the new VM needs); a removal waits for the removals of
// the orphans that depended on it. Noop steps have no edges and nothing
// waits for them. Steps are named by their sandbox; names are unique.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "orchestrator/store.h"
#include "schema/model.h"

namespace msb::orchestrator {

enum class StepKind : int {
  kNoop = 0,
  kCreate = 1,
  kReplace = 2,
  kUpdate = 3,
  kStart = 4,
  kRemove = 5,
};
// "noop", "create", "replace", "update", "start", "remove".
const char* ToString(StepKind kind);

// An edge of the execution graph: wait for `step` to finish and, for kHealthy
// or kCompleted, for that sandbox to be healthy or to have exited successfully.
struct StepEdge {
  std::string step;
  schema::DependCondition condition = schema::DependCondition::kStarted;
  bool operator==(const StepEdge&) const = default;
};

struct Step {
  StepKind kind = StepKind::kNoop;
  std::string name;   // the sandbox
  std::string cause;  // causes joined by "; ", empty for a plain create or noop
  std::vector<StepEdge> depends_on;  // sorted by step name
  // One line, without '\n': "-/+ replace api (memory 512M -> 1G)".
  std::string ToText() const;
};

struct Plan {
  std::vector<Step> steps;  // in execution order (see the file comment)

  // Every step's line, then a summary: "plan: 1 to create, 1 to replace,
  // 0 to update, 0 to start, 0 to remove, 2 unchanged", or
  // "plan: nothing to do, 2 unchanged" when every step is a noop.
  std::string ToText() const;
  // The edges, one line per action step that has any, in step order:
  // "web after db (healthy), cache".
  std::string EdgesText() const;
  bool NothingToDo() const;
  int Count(StepKind kind) const;
  const Step* Find(std::string_view name) const;  // null when absent
};

struct PlanOptions {
  bool force_recreate = false;
  bool no_recreate = false;
  // Sandbox names to act on, with their dependencies; empty: all.
  std::vector<std::string> selection;
  bool remove_orphans = true;
  // A sandbox stopped on request (msb stop) stays stopped: kNoop "= NAME
  // unchanged (was stopped: ...; stopped on request, left stopped)" where
  // kStart would be. The passes of up --watch after its first, so the watch
  // restores sandboxes that died but not one the user stopped.
  bool keep_stopped = false;
};

// The plan that brings observed to desired. Errors (kInvalidArgument): both
// force_recreate and no_recreate; a selected name the project does not
// declare; a dependency cycle or a dependency on an undeclared sandbox (a
// hand-built Project; loaded ones are validated). observed must hold only
// this project's records, each name once.
Result<Plan> MakePlan(const schema::Project& project,
                      const std::map<std::string, std::string>& image_digests,
                      const std::vector<SandboxRecord>& observed, const PlanOptions& options = {});

// The spec_json to record for a sandbox created from `sandbox` with
// `image_digest`: {"canonical": schema::CanonicalJson(sandbox),
// "image_digest": "<digest>"}, compact, keys sorted. The launcher writes it;
// the planner reads it back to explain a change.
std::string RecordSpecJson(const schema::Sandbox& sandbox, std::string_view image_digest);

}  // namespace msb::orchestrator
