// The executor: a small scheduler over the plan's edges (executor.h). One
// thread per running step; the calling thread only starts steps and waits.
#include "orchestrator/executor.h"

#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

namespace msb::orchestrator {

Status Execute(const Plan& plan, const StepRunner& runner, const ExecuteOptions& options) {
  MSB_CHECK(options.parallelism >= 1, "Execute needs a parallelism of at least 1");
  std::mutex mu;
  std::condition_variable cv;
  std::set<std::string> done, failed, running;
  std::map<std::string, std::string> errors;
  std::vector<std::thread> threads;
  std::vector<bool> started(plan.steps.size(), false);
  // Progress lines in plan order: a step's line waits until every step
  // before it has finished, failed or been passed over.
  std::vector<bool> settled(plan.steps.size(), false);
  std::vector<std::string> texts(plan.steps.size());
  size_t next_report = 0;
  auto report_settled = [&](bool all) {
    while (next_report < plan.steps.size() && (all || settled[next_report])) {
      if (!texts[next_report].empty() && options.report) options.report(texts[next_report]);
      ++next_report;
    }
  };
  bool cancelled = false;
  std::unique_lock lock(mu);
  for (;;) {
    // Start every step whose edges are satisfied, up to the parallelism.
    bool progressed = false;
    for (size_t i = 0; i < plan.steps.size() && !cancelled; ++i) {
      if (started[i]) continue;
      const Step& step = plan.steps[i];
      bool ready = true, blocked = false;
      std::string blocker;
      for (const auto& edge : step.depends_on) {
        if (failed.count(edge.step)) {
          blocked = true;
          blocker = edge.step;
        } else if (!done.count(edge.step)) {
          ready = false;
        }
      }
      if (blocked) {
        started[i] = true;
        failed.insert(step.name);
        errors[step.name] = "not started: its dependency " + blocker + " failed";
        settled[i] = true;
        report_settled(false);
        progressed = true;
        continue;
      }
      if (!ready || running.size() >= static_cast<size_t>(options.parallelism)) continue;
      if (options.cancelled && options.cancelled()) {
        cancelled = true;
        break;
      }
      started[i] = true;
      running.insert(step.name);
      progressed = true;
      threads.emplace_back([&, i]() {
        const Step& s = plan.steps[i];
        std::string text;
        Status st = runner(s, &text);
        std::lock_guard g(mu);
        running.erase(s.name);
        if (st.ok()) {
          done.insert(s.name);
          texts[i] = std::move(text);
        } else {
          failed.insert(s.name);
          errors[s.name] = st.error().message();
        }
        settled[i] = true;
        report_settled(false);
        cv.notify_all();
      });
    }
    bool all_started = std::all_of(started.begin(), started.end(), [](bool b) { return b; });
    if ((all_started || cancelled) && running.empty()) break;
    if (!progressed && running.empty()) {
      // Only possible with an edge to a step that is not in the plan.
      for (size_t i = 0; i < plan.steps.size(); ++i) {
        if (!started[i]) {
          started[i] = true;
          errors[plan.steps[i].name] = "not started: waits for a step not planned";
        }
      }
      break;
    }
    if (!progressed || cancelled) cv.wait(lock);
  }
  // Steps never started (cancelled, or waiting for a step not planned) hold
  // back no line.
  report_settled(true);
  lock.unlock();
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < plan.steps.size(); ++i) {
    if (!started[i]) errors[plan.steps[i].name] = "not started: cancelled";
  }
  if (errors.empty()) return OkStatus();
  std::string msg;
  for (const auto& [name, err] : errors) {
    msg += (msg.empty() ? "" : "\n") + name + ": " + err;
  }
  return Error(ErrorCode::kUnavailable, msg);
}

}  // namespace msb::orchestrator
