// The executor of `msb up`: runs a Plan's steps as a dependency graph, in
// parallel where the edges allow, through an injected StepRunner. It makes no
// decisions of its own (the planner, planner.h, made them) and does no I/O:
// what a step does to a sandbox is the runner's (orchestrator/up.h), so the
// scheduling is unit-tested with a fake runner.
//
// Scheduling. A step starts once every step named in its depends_on finished
// successfully, and while fewer than `parallelism` steps run. A step whose
// dependency failed (or was itself not started) is not started: "not
// started: its dependency <name> failed". Unrelated steps still run. Before
// starting each step the executor asks `cancelled`; once it answers true no
// further step starts ("not started: cancelled") and Execute returns after
// the running ones finish. An edge to a step that is not in the plan leaves
// its step "not started: waits for a step not planned".
//
// Reporting. A successful step's line is reported in plan order, not in the
// order steps finish: it waits until every step before it in the plan has
// finished, failed or been passed over, so the same plan always prints its
// lines in the same order. A failed or unstarted step reports no line (the
// returned error names it).
//
// Threads. Each running step has its own thread; the runner is called from
// several threads at once and must be safe for that. `report` and
// `cancelled` are called with the executor's lock held, one at a time.
#pragma once

#include <functional>
#include <string>

#include "common/result.h"
#include "orchestrator/planner.h"

namespace msb::orchestrator {

// Does one step. On success it may set *done_text to the progress line to
// report ("created web"); left empty, nothing is reported.
using StepRunner = std::function<Status(const Step& step, std::string* done_text)>;

struct ExecuteOptions {
  int parallelism = 4;
  // Progress lines ("created web", "removed old", ...), in plan order.
  std::function<void(const std::string&)> report;
  // Asked before each step starts; true: start no more steps.
  std::function<bool()> cancelled;
};

// Executes plan; returns an error (kUnavailable) naming every step that
// failed and every step that was not started, one "name: reason" line each,
// in name order.
Status Execute(const Plan& plan, const StepRunner& runner, const ExecuteOptions& options);

}  // namespace msb::orchestrator
