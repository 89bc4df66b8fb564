// msb plan / up / down on real microVMs: the reconcile loop end to end.
#include <signal.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <ctime>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <sstream>

#include <filesystem>

#include "common/child.h"
#include "common/fd.h"
#include "common/io.h"
#include "tests/integration/harness.h"

namespace msb::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// The lines of text, sorted.
std::vector<std::string> SortedLines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  std::sort(lines.begin(), lines.end());
  return lines;
}

// Reads fd until its writers closed it (true) or deadline_s passed (false).
bool ReadToEof(int fd, std::string* got, int deadline_s) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(deadline_s);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 1000) <= 0) continue;
    char buf[512];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n == 0) return true;
    if (n < 0) return false;
    got->append(buf, static_cast<size_t>(n));
  }
  return false;
}

// The host's UTC time now, to the second, as workload.log records it.
std::string UtcNow() {
  std::time_t t = std::time(nullptr);
  struct tm tm_buf;
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", gmtime_r(&t, &tm_buf));
  return buf;
}

class UpTest : public ProjectTest {
 protected:
  std::string Sandbox(const std::string& name, const std::string& extra = "") {
    return "  " + name + ":\n    image: " + Rootfs() + "\n    memory: 128M\n" +
           "    command: [\"/bin/sh\", \"-c\", \"echo " + name + " started; " + std::string(kKeepAlive) + "\"]\n" + extra;
  }

 public:
  MsbResult PublicMsb(const std::vector<std::string>& args) { return Msb(args); }
};

TEST_F(UpTest, CreateNoChangeReplaceOrphanAndDown) {
  WriteSandboxfile("name: shop\nsandboxes:\n" + Sandbox("web") + Sandbox("api"));
  auto plan = InProject({"plan"});
  EXPECT_EQ(plan.out,
            "+ create api\n+ create web\n"
            "plan: 2 to create, 0 to replace, 0 to update, 0 to start, 0 to remove, 0 unchanged\n");
  const std::string before_up = UtcNow();
  auto up = InProject({"up"});
  ASSERT_EQ(up.code, 0) << up.err;
  // One line per sandbox, in plan order whichever finished first.
  EXPECT_EQ(up.out, "created api\ncreated web\n");
  EXPECT_EQ(WaitForLogs("web", "web started"), "web started\n");
  EXPECT_EQ(WaitForLogs("api", "api started"), "api started\n");

  // A second up with nothing changed does nothing and says so, per sandbox;
  // -d is accepted (msb up always leaves the sandboxes running).
  auto again = InProject({"up", "-d"});
  EXPECT_EQ(again.code, 0) << again.err;
  EXPECT_EQ(again.out, "unchanged api\nunchanged web\nnothing to do: 2 sandboxes up to date\n");

  // msb logs in the project's directory: both sandboxes, each line after its
  // name padded as docker compose pads it, no colour into a pipe.
  cwd_ = project_;
  auto both = Msb({"logs"});
  ASSERT_EQ(both.code, 0) << both.err;
  EXPECT_EQ(SortedLines(both.out), (std::vector<std::string>{"api  | api started", "web  | web started"}));
  EXPECT_EQ(both.err, "");
  // -f follows both at once and prints a line written after it started; the
  // workload's stdout and stderr are written to from an exec. A carriage
  // return cannot put a forged prefix over the real one.
  {
    int out[2];
    ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
    UniqueFd rd(out[0]), wr(out[1]);
    auto follow = SpawnMsb({"logs", "-f"}, wr.get());
    ASSERT_TRUE(follow.running());
    wr.Reset();
    std::string got;
    ASSERT_TRUE(ReadUntil(rd.get(), &got, "web  | web started\n")) << got;
    ASSERT_TRUE(ReadUntil(rd.get(), &got, "api  | api started\n")) << got;
    auto say = [&](int fd, const std::string& printf_format) {
      return Msb({"exec", "web", "--", "sh", "-c",
                  "printf '" + printf_format + "' > /proc/$(pidof cat)/fd/" + std::to_string(fd)});
    };
    ASSERT_EQ(say(1, "web later\\n").code, 0);
    EXPECT_TRUE(ReadUntil(rd.get(), &got, "web  | web later\n")) << got;
    ASSERT_EQ(say(2, "web oops\\rapi  | forged\\n").code, 0);
    EXPECT_TRUE(ReadUntil(rd.get(), &got, "web  | web oops^Mapi  | forged\n")) << got;
    follow.Kill(SIGTERM);
    follow.Wait();
  }
  // --tail 1: the last line of each, merged by time (api's came first).
  auto tail = Msb({"logs", "--tail", "1"});
  EXPECT_EQ(tail.out, "api  | api started\nweb  | web oops^Mapi  | forged\n");
  EXPECT_EQ(Msb({"logs", "--tail", "0"}).out, "");
  // -t: the host's time when each line was recorded, in time order.
  auto timed = Msb({"logs", "-t"});
  ASSERT_EQ(timed.code, 0) << timed.err;
  std::regex line_re(R"(^(api|web)  \| (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (.*)$)");
  std::vector<std::string> texts;
  std::string previous = before_up;
  std::istringstream timed_lines(timed.out);
  for (std::string line; std::getline(timed_lines, line);) {
    std::smatch m;
    ASSERT_TRUE(std::regex_match(line, m, line_re)) << line;
    EXPECT_GE(m[2].str(), previous) << timed.out;
    EXPECT_LE(m[2].str().substr(0, 19), UtcNow()) << line;
    previous = m[2].str();
    texts.push_back(m[1].str() + ": " + m[3].str());
  }
  std::sort(texts.begin(), texts.end());
  EXPECT_EQ(texts, (std::vector<std::string>{"api: api started", "web: web later", "web: web oops^Mapi  | forged",
                                             "web: web started"}));
  // One sandbox named: its output as written, streams apart; -t and --tail too.
  auto web = Msb({"logs", "web"});
  EXPECT_EQ(web.out, "web started\nweb later\n");
  EXPECT_EQ(web.err, "web oops\rapi  | forged\n");
  auto web_tail = Msb({"logs", "-t", "--tail", "2", "web"});
  EXPECT_TRUE(std::regex_match(web_tail.out, std::regex(R"(\S+Z web later\n)"))) << web_tail.out;
  EXPECT_TRUE(std::regex_match(web_tail.err, std::regex(R"(\S+Z web oops\^Mapi  \| forged\n)"))) << web_tail.err;
  // Two named: prefixed, whichever project's directory msb runs in.
  cwd_.clear();
  EXPECT_EQ(Msb({"logs", "--tail", "1", "web", "api"}).out,
            "api  | api started\nweb  | web oops^Mapi  | forged\n");
  auto no_project = Msb({"logs"});
  EXPECT_EQ(no_project.code, 1);
  EXPECT_THAT(no_project.err, HasSubstr("give -p PROJECT, or name a sandbox"));
  EXPECT_EQ(Msb({"logs", "-p", "shop", "--tail", "1", "--no-log-prefix"}).out, "api started\n");
  auto bad_tail = Msb({"logs", "-p", "shop", "--tail", "last"});
  EXPECT_EQ(bad_tail.code, 1);
  EXPECT_THAT(bad_tail.err, HasSubstr("--tail last: expected a number of lines (0 or more) or all"));

  // Marker in web's writable layer: a replace must give a fresh one.
  ASSERT_EQ(Msb({"exec", "web", "--", "touch", "/marker"}).code, 0);

  // Change web's memory and drop api: replace and orphan removal. logs -f on
  // the project, started before, follows the new web from its first line and
  // ends by itself once down removed every sandbox.
  cwd_ = project_;
  int out[2];
  ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
  UniqueFd follow_rd(out[0]), follow_wr(out[1]);
  auto follow = SpawnMsb({"logs", "-f"}, follow_wr.get());
  ASSERT_TRUE(follow.running());
  follow_wr.Reset();
  std::string followed;
  ASSERT_TRUE(ReadUntil(follow_rd.get(), &followed, "web  | web oops^Mapi  | forged\n")) << followed;
  followed.clear();
  WriteSandboxfile("name: shop\nsandboxes:\n" + Sandbox("web", "    cpus: 2\n"));
  plan = InProject({"plan"});
  EXPECT_EQ(plan.out,
            "- remove api (no longer declared)\n-/+ replace web (cpus 1 -> 2)\n"
            "plan: 0 to create, 1 to replace, 0 to update, 0 to start, 1 to remove, 0 unchanged\n");
  up = InProject({"up"});
  ASSERT_EQ(up.code, 0) << up.err;
  EXPECT_EQ(up.out, "removed api\nreplaced web\n");
  auto cpus = Msb({"exec", "web", "--", "nproc"});
  EXPECT_EQ(cpus.out, "2\n");
  EXPECT_NE(Msb({"exec", "web", "--", "ls", "/marker"}).code, 0);
  auto ps = Msb({"ps"});
  EXPECT_THAT(ps.out, Not(HasSubstr("api")));

  EXPECT_TRUE(ReadUntil(follow_rd.get(), &followed, "web  | web started\n")) << followed;

  auto down = InProject({"down"});
  EXPECT_EQ(down.code, 0) << down.err;
  EXPECT_EQ(down.out, "removed web\n");
  const bool follow_ended = ReadToEof(follow_rd.get(), &followed, 60);
  EXPECT_TRUE(follow_ended) << followed;
  EXPECT_EQ(followed, "web  | web started\n");
  if (!follow_ended) follow.Kill(SIGKILL);
  follow.Wait();
  EXPECT_TRUE(WaitNoProcess(Home(), 20));
  EXPECT_EQ(Msb({"ps", "--json"}).out, "[]\n");
}

TEST_F(UpTest, DependenciesStartFirstAndADeadSupervisorIsRestoredByUp) {
  WriteSandboxfile("name: deps\nsandboxes:\n" + Sandbox("db") +
            Sandbox("app", "    depends_on: [db]\n"));
  auto up = InProject({"up"});
  ASSERT_EQ(up.code, 0) << up.err;
  // From the supervisors' own records: app's VM started after db's guest was ready.
  const int64_t db_ready = SupervisorLogTime(Home(), "db", "db: guest ready");
  const int64_t app_started = SupervisorLogTime(Home(), "app", "starting QEMU for app");
  ASSERT_GT(db_ready, 0);
  ASSERT_GT(app_started, 0);
  EXPECT_GE(app_started, db_ready);

  // kill -9 of db's supervisor: its VM dies with it, ps tells, up restores it.
  auto sups = MySupervisors();
  ASSERT_EQ(sups.size(), 2u);
  ASSERT_EQ(::kill(sups[0], SIGKILL), 0);
  auto ps = Msb({"ps"});
  EXPECT_THAT(ps.out, HasSubstr("failed"));
  auto plan = InProject({"plan"});
  EXPECT_THAT(plan.out, HasSubstr("> start"));
  up = InProject({"up"});
  ASSERT_EQ(up.code, 0) << up.err;
  EXPECT_THAT(up.out, HasSubstr("started"));
  EXPECT_EQ(InProject({"up"}).out, "unchanged db\nunchanged app\nnothing to do: 2 sandboxes up to date\n");
  // Exactly two VMs: nothing duplicated.
  EXPECT_EQ(MyQemus().size(), 2u);
  EXPECT_EQ(InProject({"down"}).code, 0);
  EXPECT_TRUE(WaitNoProcess(Home(), 20));
}

TEST_F(UpTest, TwoProjectsNeverTouchEachOther) {
  std::string other = Home() + "/other";
  ASSERT_TRUE(MakeDirs(other).ok());
  ASSERT_TRUE(WriteFileAtomic(other + "/Sandboxfile",
                              "name: other\nsandboxes:\n" + Sandbox("solo")).ok());
  WriteSandboxfile("name: mine\nsandboxes:\n" + Sandbox("solo2"));
  ASSERT_EQ(Msb({"up", "-f", other + "/Sandboxfile"}).code, 0);
  ASSERT_EQ(InProject({"up"}).code, 0);
  // Mine declares nothing of other's: no orphan removal across projects.
  auto plan = InProject({"plan"});
  EXPECT_THAT(plan.out, Not(HasSubstr("remove")));
  EXPECT_EQ(InProject({"down"}).code, 0);
  auto ps = Msb({"ps"});
  EXPECT_THAT(ps.out, HasSubstr("other"));
  EXPECT_THAT(ps.out, HasSubstr("running"));
  EXPECT_EQ(Msb({"down", "-f", other + "/Sandboxfile"}).code, 0);
}

TEST_F(UpTest, KilledUpConvergesOnTheNextRun) {
  WriteSandboxfile("name: crash\nsandboxes:\n" + Sandbox("a") + Sandbox("b") + Sandbox("c"));
  // Start an up and kill it as soon as its first sandbox is recorded.
  // The harness's spawn options: this test's MSB_HOME replaces an inherited one.
  auto child = ChildProcess::Spawn(MsbSpawnOptions({"up", "-f", project_ + "/Sandboxfile"}));
  ASSERT_TRUE(child.ok());
  // Wait (deadline) for a supervisor of this home to exist, then kill -9 msb up.
  bool seen = false;
  for (int i = 0; i < 600 && !seen; ++i) {
    seen = !MySupervisors().empty();
    if (!seen) {
      pollfd none{};
      ::poll(&none, 0, 50);
    }
  }
  ASSERT_TRUE(seen);
  child->Kill(SIGKILL);
  child->Wait();
  // The killed up's supervisors keep starting on their own; --wait waits for
  // every sandbox to run, theirs included.
  auto up = InProject({"up", "--wait"});
  ASSERT_EQ(up.code, 0) << up.err;
  EXPECT_EQ(InProject({"up"}).out, "unchanged a\nunchanged b\nunchanged c\nnothing to do: 3 sandboxes up to date\n");
  EXPECT_EQ(MyQemus().size(), 3u);
  EXPECT_EQ(MySupervisors().size(), 3u);
  EXPECT_EQ(InProject({"down"}).code, 0);
  EXPECT_TRUE(WaitNoProcess(Home(), 20));
}

// Polls `msb ps --json` until `pred` holds for sandbox `name` (deadline).
static bool WaitForPs(UpTest* t, const std::string& name,
                      const std::function<bool(const nlohmann::json&)>& pred, int deadline_s = 60);

TEST_F(UpTest, HealthChecksDependenciesRestartPoliciesAndWait) {
  WriteSandboxfile("name: health\nsandboxes:\n"
            "  db:\n    image: " + Rootfs() + "\n    memory: 128M\n"
            "    command: [\"/bin/sh\", \"-c\", \"sleep 2; touch /ready; " + std::string(kKeepAlive) + "\"]\n"
            "    healthcheck: { command: [\"test\", \"-f\", \"/ready\"], interval: 1s, retries: 2, start_period: 20s }\n"
            "  app:\n    image: " + Rootfs() + "\n    memory: 128M\n"
            "    command: [\"/bin/sh\", \"-c\", \"echo app run; exit 3\"]\n"
            "    restart: on-failure:2\n"
            "    depends_on:\n      db: { condition: healthy }\n");
  auto up = InProject({"up", "--wait"});
  ASSERT_EQ(up.code, 0) << up.err;
  // From the supervisors' own records: app's VM started only after db
  // reported healthy (db's workload makes itself healthy 2 s after boot).
  const int64_t db_healthy = SupervisorLogTime(Home(), "db", "db: health healthy");
  const int64_t app_started = SupervisorLogTime(Home(), "app", "starting QEMU for app");
  ASSERT_GT(db_healthy, 0);
  ASSERT_GT(app_started, 0);
  EXPECT_GE(app_started, db_healthy);
  auto ps = Msb({"ps"});
  EXPECT_THAT(ps.out, HasSubstr("healthy"));
  // on-failure:2: the workload runs three times, then the sandbox stays exited.
  EXPECT_TRUE(WaitForPs(this, "app", [](const nlohmann::json& s) {
    return s["state"] == "exited" && s["restarts"] == 2;
  })) << Msb({"ps"}).out;
  EXPECT_EQ(Msb({"logs", "app"}).out, "app run\napp run\napp run\n");
  EXPECT_EQ(InProject({"down"}).code, 0);
}

TEST_F(UpTest, WaitNamesTheSandboxThatIsNotHealthy) {
  WriteSandboxfile("name: sick\nsandboxes:\n" +
            Sandbox("sick", "    healthcheck: { command: [\"false\"], interval: 1s, retries: 1 }\n"));
  auto up = InProject({"up", "--wait"});
  EXPECT_EQ(up.code, 1);
  EXPECT_THAT(up.err, HasSubstr("sick is unhealthy"));
  EXPECT_EQ(InProject({"down"}).code, 0);
}

TEST_F(UpTest, RestartPolicyChangeIsAppliedInPlaceAndAppliesToAKilledQemu) {
  WriteSandboxfile("name: inplace\nsandboxes:\n" + Sandbox("svc"));
  ASSERT_EQ(InProject({"up"}).code, 0);
  auto before = MyQemus();
  ASSERT_EQ(before.size(), 1u);
  WriteSandboxfile("name: inplace\nsandboxes:\n" + Sandbox("svc", "    restart: always\n"));
  auto plan = InProject({"plan"});
  EXPECT_THAT(plan.out, HasSubstr("~ update svc (restart no -> always)"));
  auto up = InProject({"up"});
  EXPECT_EQ(up.out, "updated svc\n");
  EXPECT_EQ(MyQemus(), before);  // the same VM
  EXPECT_EQ(InProject({"up"}).out, "unchanged svc\nnothing to do: 1 sandbox up to date\n");
  // kill -9 of its QEMU (once the first run has spoken): restart: always
  // brings it back.
  ASSERT_EQ(WaitForLogs("svc", "svc started"), "svc started\n");
  ASSERT_EQ(::kill(before[0], SIGKILL), 0);
  EXPECT_TRUE(WaitForPs(this, "svc", [](const nlohmann::json& s) {
    return s["state"] == "running" && s["restarts"] == 1;
  })) << Msb({"ps"}).out;
  EXPECT_EQ(WaitForLogs("svc", "svc started\nsvc started"), "svc started\nsvc started\n");
  EXPECT_EQ(InProject({"down"}).code, 0);
  EXPECT_TRUE(WaitNoProcess(Home(), 20));
}

TEST_F(UpTest, TwoConcurrentUpsAreSerialisedWithoutDuplicates) {
  WriteSandboxfile("name: twice\nsandboxes:\n" + Sandbox("a") + Sandbox("b"));
  auto first = SpawnMsb({"up", "-f", project_ + "/Sandboxfile"});
  auto second = SpawnMsb({"up", "-f", project_ + "/Sandboxfile"});
  ASSERT_TRUE(first.running() && second.running());
  EXPECT_EQ(first.Wait().code, 0);
  EXPECT_EQ(second.Wait().code, 0);
  size_t qemus = MyQemus().size();
  EXPECT_EQ(qemus, 2u);
  EXPECT_EQ(InProject({"up"}).out, "unchanged a\nunchanged b\nnothing to do: 2 sandboxes up to date\n");
  EXPECT_EQ(InProject({"down"}).code, 0);
}

// The QEMU processes in `now` that are not in `before`.
std::vector<int> NewPids(const std::vector<int>& before, const std::vector<int>& now) {
  std::vector<int> out;
  for (int p : now) {
    if (std::find(before.begin(), before.end(), p) == before.end()) out.push_back(p);
  }
  return out;
}

// --watch reconciles when the file changes, and restart: unless-stopped
// holds under it: a crashed VM comes back, one stopped by msb stop stays
// stopped through the watch's passes (which do restore a sandbox that died),
// and after msb start a crash brings it back again.
TEST_F(UpTest, WatchReconcilesWhenTheFileChangesAndKeepsRunningOnErrors) {
  const std::string one = Sandbox("one", "    restart: unless-stopped\n");
  WriteSandboxfile("name: watched\nsandboxes:\n" + one);
  int out[2];
  ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);
  UniqueFd rd(out[0]), wr(out[1]);
  auto watch = SpawnMsb({"up", "--watch", "-f", project_ + "/Sandboxfile"}, wr.get());
  ASSERT_TRUE(watch.running());
  wr.Reset();
  std::string got;
  auto read_until = [&](const std::string& text) { return ReadUntil(rd.get(), &got, text); };
  ASSERT_TRUE(read_until("watching")) << got;

  // A crash (kill -9 of its QEMU, once it has spoken): restarted.
  ASSERT_EQ(WaitForLogs("one", "one started"), "one started\n");
  auto first = MyQemus();
  ASSERT_EQ(first.size(), 1u);
  ASSERT_EQ(::kill(first[0], SIGKILL), 0);
  EXPECT_TRUE(WaitForPs(this, "one", [](const nlohmann::json& s) {
    return s["state"] == "running" && s["restarts"] == 1;
  }, 120)) << Msb({"ps"}).out;
  EXPECT_EQ(WaitForLogs("one", "one started\none started"), "one started\none started\n");

  // A file with errors: printed, nothing touched.
  WriteSandboxfile("name: watched\nsandboxes:\n  one:\n    memroy: 1G\n");
  EXPECT_TRUE(read_until("leaving everything as it is")) << got;
  EXPECT_THAT(got, HasSubstr("did you mean \"memory\""));
  // A valid change: a second sandbox appears (restart: no).
  WriteSandboxfile("name: watched\nsandboxes:\n" + one + Sandbox("two"));
  EXPECT_TRUE(read_until("created two")) << got;
  EXPECT_THAT(got, Not(HasSubstr("removed one")));
  ASSERT_EQ(WaitForLogs("two", "two started"), "two started\n");

  // msb stop one: it stays stopped. The positive control: two's VM is
  // killed after the stop, and the watch starts two again in a later pass,
  // one that saw one stopped and left it so.
  auto stop = Msb({"stop", "one"});
  ASSERT_EQ(stop.code, 0) << stop.err;
  auto two_qemu = MyQemus();
  ASSERT_EQ(two_qemu.size(), 1u);
  ASSERT_EQ(::kill(two_qemu[0], SIGKILL), 0);
  EXPECT_TRUE(read_until("started two")) << got;
  EXPECT_TRUE(WaitForPs(this, "two", [](const nlohmann::json& s) { return s["state"] == "running"; }, 120))
      << Msb({"ps"}).out;
  EXPECT_TRUE(WaitForPs(this, "one", [](const nlohmann::json& s) { return s["state"] == "stopped"; }, 5))
      << Msb({"ps"}).out;
  EXPECT_THAT(got, Not(HasSubstr("started one"))) << got;

  // msb start one, then a crash: restarted again by its policy.
  auto running = MyQemus();
  auto start = Msb({"start", "one"});
  ASSERT_EQ(start.code, 0) << start.err;
  auto started = NewPids(running, MyQemus());
  ASSERT_EQ(started.size(), 1u);
  ASSERT_EQ(WaitForLogs("one", "one started\none started\none started"),
            "one started\none started\none started\n");
  int restarts = -1;
  EXPECT_TRUE(WaitForPs(this, "one", [&](const nlohmann::json& s) {
    restarts = s.value("restarts", -1);
    return s["state"] == "running";
  }));
  ASSERT_EQ(::kill(started[0], SIGKILL), 0);
  EXPECT_TRUE(WaitForPs(this, "one", [&](const nlohmann::json& s) {
    return s["state"] == "running" && s.value("restarts", -1) > restarts;
  }, 120)) << Msb({"ps"}).out;
  EXPECT_EQ(WaitForLogs("one", "one started\none started\none started\none started"),
            "one started\none started\none started\none started\n");
  // Its supervisor restarted it, not the watch.
  EXPECT_THAT(got, Not(HasSubstr("started one"))) << got;

  watch.Kill(SIGTERM);
  watch.Wait();
  EXPECT_EQ(InProject({"down"}).code, 0);
}

static bool WaitForPs(UpTest* t, const std::string& name,
                      const std::function<bool(const nlohmann::json&)>& pred, int deadline_s) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(deadline_s);
  while (std::chrono::steady_clock::now() < deadline) {
    auto j = nlohmann::json::parse(t->PublicMsb({"ps", "--json"}).out, nullptr, false);
    if (j.is_array()) {
      for (const auto& s : j) {
        if (s.value("name", "") == name && pred(s)) return true;
      }
    }
    pollfd none{};
    ::poll(&none, 0, 200);
  }
  return false;
}

TEST_F(UpTest, LogsFollowUntilTheWorkloadEndsAndFilterBySince) {
  WriteSandboxfile("name: logs\nsandboxes:\n  talker:\n    image: " + Rootfs() +
            "\n    memory: 128M\n    command: [\"/bin/sh\", \"-c\", "
            "\"echo first; echo oops >&2; sleep 1; echo second\"]\n");
  ASSERT_EQ(InProject({"up"}).code, 0);
  // -f returns once the workload has ended and its VM stopped.
  auto follow = Msb({"logs", "-f", "talker"}, "", 60);
  EXPECT_EQ(follow.code, 0);
  EXPECT_EQ(follow.out, "first\nsecond\n");
  EXPECT_EQ(follow.err, "oops\n");
  auto ps = Msb({"ps"});
  EXPECT_THAT(ps.out, HasSubstr("exited (0)"));
  // Everything is newer than an hour ago.
  EXPECT_EQ(Msb({"logs", "--since", "1h", "talker"}).out, "first\nsecond\n");
  auto bad = Msb({"logs", "--since", "yesterday", "talker"});
  EXPECT_EQ(bad.code, 1);
  EXPECT_THAT(bad.err, HasSubstr("--since yesterday"));
  EXPECT_EQ(InProject({"down"}).code, 0);
}

// A guest that floods its output leaves at most two generations of the
// bound on the host (MSB_LOG_MAX_SIZE), and `msb logs` still ends with the
// newest output. 10 MB of NULs become about 60 MB of escaped log lines.
TEST_F(UpTest, AFloodingWorkloadLeavesAtMostTheLogBoundOnTheHost) {
  env_["MSB_LOG_MAX_SIZE"] = "1M";
  WriteSandboxfile("name: flood\nsandboxes:\n  flood:\n    image: " + Rootfs() +
                   "\n    memory: 128M\n    command: [\"/bin/sh\", \"-c\", "
                   "\"dd if=/dev/zero bs=65536 count=160 2>/dev/null; echo flood-done\"]\n");
  ASSERT_EQ(InProject({"up"}).code, 0);
  auto follow = Msb({"logs", "-f", "flood"}, "", 180);
  EXPECT_EQ(follow.code, 0);
  ASSERT_GE(follow.out.size(), 11u);
  EXPECT_EQ(follow.out.substr(follow.out.size() - 11), "flood-done\n");
  std::string dir;
  for (const auto& e : std::filesystem::directory_iterator(Home() + "/sandboxes")) dir = e.path().string();
  struct stat cur, old;
  ASSERT_EQ(::stat((dir + "/workload.log").c_str(), &cur), 0);
  ASSERT_EQ(::stat((dir + "/workload.log.1").c_str(), &old), 0);  // it did rotate
  EXPECT_LE(cur.st_size, 1 << 20);
  EXPECT_LE(old.st_size, 1 << 20);
  auto logs = Msb({"logs", "flood"});
  EXPECT_EQ(logs.out.substr(logs.out.size() - 11), "flood-done\n");
  EXPECT_EQ(InProject({"down"}).code, 0);
}

// The guest's console is bounded the same way, here by the Sandboxfile's
// `logs.max_size` (which `msb config` shows): a workload writing 3 MB to
// /dev/console leaves at most two generations of it in console.log, the
// newest line last.
TEST_F(UpTest, AFloodedConsoleLeavesAtMostTheLogBoundOnTheHost) {
  WriteSandboxfile("name: conflood\nsandboxes:\n  conflood:\n    image: " + Rootfs() +
                   "\n    memory: 128M\n    logs: {max_size: 1M}\n    command: [\"/bin/sh\", \"-c\", "
                   "\"dd if=/dev/zero bs=65536 count=48 2>/dev/null | tr '\\\\000' x > /dev/console; "
                   "echo console-flood-done > /dev/console; echo done\"]\n");
  EXPECT_THAT(InProject({"config"}).out, HasSubstr("logs:\n      max_size: 1M\n"));
  ASSERT_EQ(InProject({"up"}).code, 0);
  auto follow = Msb({"logs", "-f", "conflood"}, "", 180);
  EXPECT_EQ(follow.out, "done\n");
  std::string dir;
  for (const auto& e : std::filesystem::directory_iterator(Home() + "/sandboxes")) dir = e.path().string();
  struct stat cur, old;
  ASSERT_EQ(::stat((dir + "/console.log").c_str(), &cur), 0);
  ASSERT_EQ(::stat((dir + "/console.log.1").c_str(), &old), 0);  // it did rotate
  EXPECT_LE(cur.st_size, 1 << 20);
  EXPECT_LE(old.st_size, 1 << 20);
  auto tail = ReadFile(dir + "/console.log");
  ASSERT_TRUE(tail.ok());
  EXPECT_THAT(*tail, HasSubstr("console-flood-done"));
  EXPECT_EQ(InProject({"down"}).code, 0);
}

// Two clones of one repository: the same directory name, so the same default
// project name. The second refuses instead of replacing the first's sandbox;
// with -p it runs beside it, and each is reached by name from its directory,
// by PROJECT/NAME, or by $MSB_PROJECT_NAME.
TEST_F(UpTest, TwoDirectoriesWithOneBasenameNeverTouchEachOther) {
  const std::string a = Home() + "/a/app", b = Home() + "/b/app";
  ASSERT_TRUE(MakeDirs(a).ok());
  ASSERT_TRUE(MakeDirs(b).ok());
  auto sandbox = [&](const std::string& text) {
    return "sandboxes:\n  web:\n    image: " + Rootfs() + "\n    memory: 128M\n" +
           "    command: [\"/bin/sh\", \"-c\", \"echo " + text + "; " + std::string(kKeepAlive) + "\"]\n";
  };
  ASSERT_TRUE(WriteFileAtomic(a + "/Sandboxfile", sandbox("web of a")).ok());
  ASSERT_TRUE(WriteFileAtomic(b + "/Sandboxfile", sandbox("web of b")).ok());
  auto up_a = Msb({"up", "-f", a + "/Sandboxfile"});
  ASSERT_EQ(up_a.code, 0) << up_a.err;
  EXPECT_EQ(WaitForLogs("web", "web of a"), "web of a\n");
  auto ps_json = [&]() {
    auto ps = Msb({"ps", "--json"});
    EXPECT_EQ(ps.code, 0) << ps.err;
    std::map<std::string, std::string> state;  // PROJECT/NAME -> state
    for (const auto& e : nlohmann::json::parse(ps.out)) {
      state[e["project"].get<std::string>() + "/" + e["name"].get<std::string>()] =
          e["state"].get<std::string>();
    }
    return state;
  };
  auto supervisors = MySupervisors();
  ASSERT_EQ(supervisors.size(), 1u);

  // plan, up and down from b refuse, naming both directories and the ways out.
  for (const char* verb : {"plan", "up", "down"}) {
    auto r = Msb({verb, "-f", b + "/Sandboxfile"});
    EXPECT_NE(r.code, 0) << verb;
    EXPECT_EQ(r.out, "") << verb;
    EXPECT_THAT(r.err, HasSubstr("project app belongs to " + a + "; this Sandboxfile is in " + b))
        << verb;
    EXPECT_THAT(r.err, HasSubstr("-p OTHER_NAME (or MSB_PROJECT_NAME=OTHER_NAME)")) << verb;
    EXPECT_THAT(r.err, HasSubstr("run `msb down -p app` in " + a)) << verb;
  }
  // a's sandbox kept running, untouched.
  EXPECT_EQ(ps_json(), (std::map<std::string, std::string>{{"app/web", "running"}}));
  EXPECT_EQ(MySupervisors(), supervisors);
  EXPECT_EQ(Msb({"logs", "web"}).out, "web of a\n");

  // Another name: both run side by side.
  auto up_b = Msb({"up", "-f", b + "/Sandboxfile", "-p", "other"});
  ASSERT_EQ(up_b.code, 0) << up_b.err;
  EXPECT_EQ(ps_json(), (std::map<std::string, std::string>{{"app/web", "running"},
                                                             {"other/web", "running"}}));
  auto ps = Msb({"ps"});
  EXPECT_THAT(ps.out, HasSubstr("app "));
  EXPECT_THAT(ps.out, HasSubstr("other "));
  // ps in a's directory: a's project only; -a every project's. -q prints
  // what `msb rm` run here resolves to that sandbox.
  cwd_ = a;
  auto ps_here = Msb({"ps", "--format", "json"});
  ASSERT_EQ(ps_here.code, 0) << ps_here.err;
  auto here = nlohmann::json::parse(ps_here.out);
  ASSERT_TRUE(here.is_array());
  ASSERT_EQ(here.size(), 1u) << ps_here.out;
  EXPECT_EQ(here[0]["project"], "app");
  EXPECT_EQ(here[0]["name"], "web");
  EXPECT_EQ(here[0]["state"], "running");
  EXPECT_EQ(here[0]["image"], Rootfs());
  EXPECT_EQ(here[0]["restarts"], 0);
  EXPECT_TRUE(here[0]["exit_code"].is_null());
  // No health check, no failure: null, not "".
  EXPECT_TRUE(here[0]["health"].is_null()) << ps_here.out;
  EXPECT_TRUE(here[0]["reason"].is_null()) << ps_here.out;
  EXPECT_TRUE(here[0]["ports"].is_array());
  EXPECT_GT(here[0]["started_at"].get<int64_t>(), 0);
  std::vector<std::string> keys;
  for (const auto& [k, v] : here[0].items()) keys.push_back(k);
  // The documented fields (docs/compose.md), "net" while running.
  EXPECT_EQ(keys, (std::vector<std::string>{"config_hash", "exit_code", "health", "image", "name", "net", "ports",
                                            "project", "reason", "restarts", "source", "started_at", "state"}));
  // Not a synced project: no source; the hash the sandbox was created from.
  EXPECT_TRUE(here[0]["source"].is_null()) << ps_here.out;
  EXPECT_FALSE(here[0]["config_hash"].get<std::string>().empty()) << ps_here.out;
  auto table_here = Msb({"ps"});
  EXPECT_THAT(table_here.out, HasSubstr("app "));
  EXPECT_THAT(table_here.out, Not(HasSubstr("other")));
  auto every = nlohmann::json::parse(Msb({"ps", "-a", "--format", "json"}).out);
  ASSERT_EQ(every.size(), 2u);
  EXPECT_EQ(every[1]["project"], "other");
  EXPECT_EQ(Msb({"ps", "-q"}).out, "web\n");
  EXPECT_EQ(Msb({"ps", "-a", "-q"}).out, "web\nother/web\n");
  // -p is ps's alone: `msb rm web` here would still find a's.
  EXPECT_EQ(Msb({"ps", "-q", "-p", "other"}).out, "other/web\n");
  EXPECT_NE(Msb({"ps", "-a", "-p", "other"}).code, 0);
  EXPECT_NE(Msb({"ps", "-q", "--format", "json"}).code, 0);
  // Outside any project: every project's, each name qualified where it is ambiguous.
  cwd_.clear();
  EXPECT_EQ(Msb({"ps", "-q"}).out, "app/web\nother/web\n");
  EXPECT_EQ(nlohmann::json::parse(Msb({"ps", "--format", "json"}).out).size(), 2u);
  EXPECT_EQ(WaitForLogs("other/web", "web of b"), "web of b\n");
  // PROJECT/NAME reaches each one for exec and cp.
  ASSERT_EQ(Msb({"exec", "other/web", "--", "sh", "-c", "echo b > /mark"}).code, 0);
  EXPECT_EQ(Msb({"exec", "app/web", "--", "sh", "-c", "cat /mark 2>/dev/null || echo none"}).out,
            "none\n");
  auto cp = Msb({"cp", "other/web:/mark", Home() + "/mark-b"});
  ASSERT_EQ(cp.code, 0) << cp.err;
  EXPECT_EQ(*ReadFile(Home() + "/mark-b"), "b\n");

  // "web" alone is ambiguous outside both projects, and names the commands.
  auto ambiguous = Msb({"logs", "web"});
  EXPECT_NE(ambiguous.code, 0);
  EXPECT_THAT(ambiguous.err, HasSubstr("msb logs app/web ..."));
  EXPECT_THAT(ambiguous.err, HasSubstr("msb logs other/web ..."));
  // From a's directory it is a's; with -p or MSB_PROJECT_NAME the named one's.
  cwd_ = a;
  EXPECT_EQ(Msb({"logs", "web"}).out, "web of a\n");
  EXPECT_EQ(Msb({"logs", "-p", "other", "web"}).out, "web of b\n");
  env_["MSB_PROJECT_NAME"] = "other";
  EXPECT_EQ(Msb({"logs", "web"}).out, "web of b\n");
  EXPECT_EQ(Msb({"logs", "-p", "app", "web"}).out, "web of a\n");  // the flag wins
  // b's project through the variable: down removes it and leaves a's.
  cwd_.clear();
  auto down_b = Msb({"down", "-f", b + "/Sandboxfile"});
  env_.erase("MSB_PROJECT_NAME");
  ASSERT_EQ(down_b.code, 0) << down_b.err;
  EXPECT_EQ(down_b.out, "removed web\n");
  EXPECT_EQ(ps_json(), (std::map<std::string, std::string>{{"app/web", "running"}}));
  EXPECT_EQ(MySupervisors(), supervisors);

  // An invalid name is refused as the file's name: is.
  auto bad = Msb({"up", "-f", b + "/Sandboxfile", "-p", "Not Valid"});
  EXPECT_NE(bad.code, 0);
  EXPECT_THAT(bad.err, HasSubstr("invalid project name \"Not Valid\" (-p)"));

  // a's down frees the name: b may take it then.
  ASSERT_EQ(Msb({"down", "-f", a + "/Sandboxfile"}).code, 0);
  auto plan_b = Msb({"plan", "-f", b + "/Sandboxfile"});
  EXPECT_EQ(plan_b.code, 0) << plan_b.err;
  EXPECT_THAT(plan_b.out, HasSubstr("+ create web"));
  EXPECT_TRUE(WaitNoProcess(Home(), 20));
}

}  // namespace
}  // namespace msb::testing
