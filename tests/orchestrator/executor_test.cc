// Tests of the executor (orchestrator/executor.h) with a fake step runner:
// edges, parallelism, failures and cancellation. Orders are checked from the
// runner's recorded start/finish events, never from timing.
#include "orchestrator/executor.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <vector>

namespace msb::orchestrator {
namespace {

constexpr auto kDeadline = std::chrono::seconds(10);

Step MakeStep(const std::string& name, std::vector<std::string> after = {},
              StepKind kind = StepKind::kCreate) {
  Step s;
  s.kind = kind;
  s.name = name;
  std::sort(after.begin(), after.end());
  for (const auto& a : after) s.depends_on.push_back({a, schema::DependCondition::kStarted});
  return s;
}

// Records "start X" and "finish X" in the order they happen, and "ask" each
// time the executor asks whether it is cancelled (executor.h: before each step
// starts, on the executor's thread, so before that step's thread exists).
// `before_finish` (may block) runs between start and finish; `fail` names
// steps that fail.
class FakeRunner {
 public:
  std::function<void(const Step&)> before_finish;
  std::set<std::string> fail;

  Status operator()(const Step& step, std::string* done_text) {
    Record("start " + step.name);
    if (before_finish) before_finish(step);
    Record("finish " + step.name);
    if (fail.count(step.name)) return Error(ErrorCode::kUnavailable, "boom in " + step.name);
    *done_text = "did " + step.name;
    return OkStatus();
  }

  void Asked() { Record("ask"); }

  // Every event but "ask".
  std::vector<std::string> Events() {
    std::vector<std::string> out;
    for (auto& e : AllEvents()) {
      if (e != "ask") out.push_back(e);
    }
    return out;
  }
  std::vector<std::string> AllEvents() {
    std::lock_guard g(mu_);
    return events_;
  }

  // Position of an event, -1 when it did not happen.
  int IndexOf(const std::string& event) {
    auto ev = AllEvents();
    auto it = std::find(ev.begin(), ev.end(), event);
    return it == ev.end() ? -1 : static_cast<int>(it - ev.begin());
  }

  bool Ran(const std::string& name) { return IndexOf("start " + name) >= 0; }

  // The most steps begun and not finished: counted at each ask (the step about
  // to start included) and at each start.
  int MaxInFlight() {
    int asked = 0, started = 0, finished = 0, max = 0;
    for (const auto& e : AllEvents()) {
      if (e == "ask") {
        max = std::max(max, ++asked - finished);
      } else if (e.rfind("start ", 0) == 0) {
        max = std::max(max, ++started - finished);
      } else {
        ++finished;
      }
    }
    return max;
  }

 private:
  void Record(const std::string& e) {
    std::lock_guard g(mu_);
    events_.push_back(e);
  }
  std::mutex mu_;
  std::vector<std::string> events_;
};

Status ExecuteWith(const Plan& plan, FakeRunner& fake, ExecuteOptions options,
                   std::vector<std::string>* reported = nullptr) {
  options.report = [reported](const std::string& line) {
    if (reported) reported->push_back(line);
  };
  options.cancelled = [&fake, cancelled = options.cancelled]() {
    fake.Asked();
    return cancelled && cancelled();
  };
  return Execute(plan, [&fake](const Step& s, std::string* t) { return fake(s, t); }, options);
}

TEST(ExecutorTest, RunsEveryStepAndReportsEach) {
  Plan plan;
  plan.steps = {MakeStep("a"), MakeStep("b", {"a"}), MakeStep("c")};
  FakeRunner fake;
  std::vector<std::string> reported;
  ASSERT_TRUE(ExecuteWith(plan, fake, {}, &reported).ok());
  std::sort(reported.begin(), reported.end());
  EXPECT_EQ(reported, (std::vector<std::string>{"did a", "did b", "did c"}));
}

// The steps finish in reverse (c, then b, then a: each holds until the next
// one finished); their lines still come in plan order. A failed step's line
// is missing and holds back nothing after it.
TEST(ExecutorTest, LinesAreReportedInPlanOrderWhateverOrderStepsFinishIn) {
  for (const std::set<std::string>& fail : {std::set<std::string>{}, std::set<std::string>{"b"}}) {
    SCOPED_TRACE(fail.empty() ? "none fails" : "b fails");
    Plan plan;
    plan.steps = {MakeStep("a"), MakeStep("b"), MakeStep("c")};
    FakeRunner fake;
    fake.fail = fail;
    std::mutex mu;
    std::condition_variable cv;
    std::vector<std::string> finished;
    bool timed_out = false;
    const std::map<std::string, std::string> waits_for = {{"a", "b"}, {"b", "c"}};
    fake.before_finish = [&](const Step& s) {
      std::unique_lock lock(mu);
      if (auto it = waits_for.find(s.name); it != waits_for.end()) {
        auto other_finished = [&] {
          return std::find(finished.begin(), finished.end(), it->second) != finished.end();
        };
        if (!cv.wait_for(lock, kDeadline, other_finished)) timed_out = true;
      }
      finished.push_back(s.name);
      cv.notify_all();
    };
    ExecuteOptions o;
    o.parallelism = 3;
    std::vector<std::string> reported;
    auto st = ExecuteWith(plan, fake, o, &reported);
    EXPECT_EQ(st.ok(), fail.empty());
    EXPECT_FALSE(timed_out);
    EXPECT_EQ(finished, (std::vector<std::string>{"c", "b", "a"}));
    if (fail.empty()) {
      EXPECT_EQ(reported, (std::vector<std::string>{"did a", "did b", "did c"}));
    } else {
      EXPECT_EQ(reported, (std::vector<std::string>{"did a", "did c"}));
    }
  }
}

TEST(ExecutorTest, ADependentStartsOnlyAfterItsDependencyFinished) {
  // Listed before what it depends on: with one step at a time, an executor
  // that ignored the edge would start web first.
  Plan plan;
  plan.steps = {MakeStep("web", {"db"}), MakeStep("db")};
  FakeRunner fake;
  ExecuteOptions o;
  o.parallelism = 1;
  ASSERT_TRUE(ExecuteWith(plan, fake, o).ok());
  EXPECT_EQ(fake.Events(),
            (std::vector<std::string>{"start db", "finish db", "start web", "finish web"}));
}

TEST(ExecutorTest, EdgesHoldInAParallelGraph) {
  // db <- web <- api -> cache; db stays busy until cache (independent) has
  // finished, so an executor ignoring edges would have started web by then.
  Plan plan;
  plan.steps = {MakeStep("cache"), MakeStep("db"), MakeStep("web", {"db"}),
                MakeStep("api", {"cache", "web"})};
  FakeRunner fake;
  std::mutex mu;
  std::condition_variable cv;
  bool cache_done = false;
  bool waited = true;
  fake.before_finish = [&](const Step& s) {
    std::unique_lock lock(mu);
    if (s.name == "cache") {
      cache_done = true;
      cv.notify_all();
    } else if (s.name == "db") {
      waited = cv.wait_for(lock, kDeadline, [&] { return cache_done; });
    }
  };
  ExecuteOptions o;
  o.parallelism = 4;
  ASSERT_TRUE(ExecuteWith(plan, fake, o).ok());
  EXPECT_TRUE(waited) << "cache did not run while db was running";
  // Only cache and db may have been started before db finished.
  auto all = fake.AllEvents();
  auto db_done = std::find(all.begin(), all.end(), "finish db");
  EXPECT_EQ(std::count(all.begin(), db_done, "ask"), 2);
  for (const auto& [dependent, dependency] :
       std::vector<std::pair<std::string, std::string>>{{"web", "db"}, {"api", "web"}, {"api", "cache"}}) {
    int finished = fake.IndexOf("finish " + dependency);
    int started = fake.IndexOf("start " + dependent);
    ASSERT_GE(finished, 0);
    ASSERT_GE(started, 0);
    EXPECT_LT(finished, started) << dependent << " started before " << dependency << " finished";
  }
}

TEST(ExecutorTest, IndependentStepsRunInParallelUpToTheLimit) {
  // Each step holds until `parallelism` steps run at once (a latch with a
  // deadline), so an executor running them one by one never opens it; while
  // they hold, an executor past its limit would already have asked to start
  // another.
  for (int parallelism : {2, 3}) {
    SCOPED_TRACE("parallelism " + std::to_string(parallelism));
    Plan plan;
    for (int i = 0; i < 7; ++i) plan.steps.push_back(MakeStep("s" + std::to_string(i)));
    const int total = static_cast<int>(plan.steps.size());
    FakeRunner fake;
    std::mutex mu;
    std::condition_variable cv;
    int running = 0, finished = 0;
    bool opened = false, timed_out = false;
    fake.before_finish = [&](const Step&) {
      std::unique_lock lock(mu);
      ++running;
      // Once `parallelism` ran together the latch stays open; the last steps
      // are fewer than the limit.
      if (running == parallelism) opened = true;
      cv.notify_all();
      if (!cv.wait_for(lock, kDeadline, [&] { return opened || running == total - finished; })) {
        timed_out = opened = true;
      }
      --running;
      ++finished;
      cv.notify_all();
    };
    ExecuteOptions o;
    o.parallelism = parallelism;
    ASSERT_TRUE(ExecuteWith(plan, fake, o).ok());
    EXPECT_FALSE(timed_out) << "steps never ran " << parallelism << " at once";
    EXPECT_EQ(fake.MaxInFlight(), parallelism);
    EXPECT_EQ(finished, total);
  }
}

TEST(ExecutorTest, OneStepAtATimeNeverOverlaps) {
  Plan plan;
  for (int i = 0; i < 5; ++i) plan.steps.push_back(MakeStep("s" + std::to_string(i)));
  FakeRunner fake;
  ExecuteOptions o;
  o.parallelism = 1;
  ASSERT_TRUE(ExecuteWith(plan, fake, o).ok());
  auto ev = fake.Events();
  ASSERT_EQ(ev.size(), 10u);
  for (size_t i = 0; i < ev.size(); i += 2) {
    EXPECT_EQ(ev[i].substr(0, 6), "start ");
    EXPECT_EQ(ev[i + 1], "finish " + ev[i].substr(6));
  }
}

TEST(ExecutorTest, AFailedStepStopsItsDependentsButNotUnrelatedSteps) {
  // db fails; web (after db) and api (after web) never start; cache runs.
  Plan plan;
  plan.steps = {MakeStep("db"), MakeStep("cache"), MakeStep("web", {"db"}),
                MakeStep("api", {"web"})};
  FakeRunner fake;
  fake.fail = {"db"};
  std::vector<std::string> reported;
  auto st = ExecuteWith(plan, fake, {}, &reported);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(fake.Ran("db"));
  EXPECT_TRUE(fake.Ran("cache"));
  EXPECT_FALSE(fake.Ran("web"));
  EXPECT_FALSE(fake.Ran("api"));
  EXPECT_EQ(reported, (std::vector<std::string>{"did cache"}));
  EXPECT_EQ(st.error().message(),
            "api: not started: its dependency web failed\n"
            "db: boom in db\n"
            "web: not started: its dependency db failed");
}

TEST(ExecutorTest, TheErrorNamesEveryFailedStep) {
  Plan plan;
  plan.steps = {MakeStep("a"), MakeStep("b"), MakeStep("c")};
  FakeRunner fake;
  fake.fail = {"a", "c"};
  auto st = ExecuteWith(plan, fake, {});
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(fake.Ran("b"));
  EXPECT_EQ(st.error().message(), "a: boom in a\nc: boom in c");
}

TEST(ExecutorTest, AnEdgeToAStepNotPlannedStartsNothingAfterIt) {
  Plan plan;
  plan.steps = {MakeStep("a"), MakeStep("b", {"ghost"})};
  FakeRunner fake;
  auto st = ExecuteWith(plan, fake, {});
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(fake.Ran("a"));
  EXPECT_FALSE(fake.Ran("b"));
  EXPECT_EQ(st.error().message(), "b: not started: waits for a step not planned");
}

TEST(ExecutorTest, CancellationStartsNoFurtherStep) {
  // One at a time; the first step cancels: it finishes, nothing else starts.
  Plan plan;
  plan.steps = {MakeStep("a"), MakeStep("b"), MakeStep("c", {"a"})};
  FakeRunner fake;
  std::atomic<bool> cancel{false};
  fake.before_finish = [&](const Step& s) {
    if (s.name == "a") cancel = true;
  };
  ExecuteOptions o;
  o.parallelism = 1;
  o.cancelled = [&] { return cancel.load(); };
  std::vector<std::string> reported;
  auto st = ExecuteWith(plan, fake, o, &reported);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(fake.Events(), (std::vector<std::string>{"start a", "finish a"}));
  EXPECT_EQ(reported, (std::vector<std::string>{"did a"}));
  EXPECT_EQ(st.error().message(), "b: not started: cancelled\nc: not started: cancelled");
}

TEST(ExecutorTest, CancelledBeforeTheFirstStepRunsNothing) {
  Plan plan;
  plan.steps = {MakeStep("a"), MakeStep("b")};
  FakeRunner fake;
  ExecuteOptions o;
  o.cancelled = [] { return true; };
  auto st = ExecuteWith(plan, fake, o);
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(fake.Events().empty());
  EXPECT_EQ(st.error().message(), "a: not started: cancelled\nb: not started: cancelled");
}

TEST(ExecutorTest, AnEmptyOrAllNoopPlanSucceeds) {
  FakeRunner fake;
  EXPECT_TRUE(ExecuteWith(Plan{}, fake, {}).ok());
  Plan plan;
  plan.steps = {MakeStep("a", {}, StepKind::kNoop)};
  EXPECT_TRUE(ExecuteWith(plan, fake, {}).ok());
}

}  // namespace
}  // namespace msb::orchestrator
