// msb plan / up / down on real microVMs: the reconcile loop end to end.
#include <signal.h>
#include <poll.h>
#include <sys/stat.h>

#include <algorithm>

#include <filesystem>

#include "common/child.h"
#include "common/io.h"
#include "tests/integration/harness.h"

namespace msb::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class UpTest : public MsbTest {
 protected:
  void SetUp() override {
    MsbTest::SetUp();
    if (IsSkipped()) return;
    project_ = Home() + "/proj";
    ASSERT_TRUE(MakeDirs(project_).ok());
  }
  void WriteFile(const std::string& yaml) {
    ASSERT_TRUE(WriteFileAtomic(project_ + "/Sandboxfile", yaml).ok());
  }
  std::string Sandbox(const std::string& name, const std::string& extra = "") {
    return "  " + name + ":\n    image: " + Rootfs() + "\n    memory: 128M\n" +
           "    command: [\"/bin/sh\", \"-c\", \"echo " + name + " started; sleep 3600\"]\n" + extra;
  }
  MsbResult InProject(std::vector<std::string> args) {
    args.insert(args.begin() + 1, {"-f", project_ + "/Sandboxfile"});
    return Msb(args);
  }
  std::string project_;
};

TEST_F(UpTest, CreateNoChangeReplaceOrphanAndDown) {
  WriteFile("name: shop\nsandboxes:\n" + Sandbox("web") + Sandbox("api"));
  auto plan = InProject({"plan"});
  EXPECT_EQ(plan.out,
            "+ create api\n+ create web\n"
            "plan: 2 to create, 0 to replace, 0 to update, 0 to start, 0 to remove, 0 unchanged\n");
  auto up = InProject({"up"});
  ASSERT_EQ(up.code, 0) << up.err;
  EXPECT_THAT(up.out, HasSubstr("created web"));
  EXPECT_THAT(up.out, HasSubstr("created api"));
  EXPECT_EQ(WaitForLogs("web", "web started"), "web started\n");

  // A second up with nothing changed does nothing and says so.
  auto again = InProject({"up"});
  EXPECT_EQ(again.code, 0);
  EXPECT_EQ(again.out, "nothing to do: 2 sandboxes up to date\n");

  // Marker in web's writable layer: a replace must give a fresh one.
  ASSERT_EQ(Msb({"exec", "web", "--", "touch", "/marker"}).code, 0);

  // Change web's memory and drop api: replace and orphan removal.
  WriteFile("name: shop\nsandboxes:\n" + Sandbox("web", "    cpus: 2\n"));
  plan = InProject({"plan"});
  EXPECT_EQ(plan.out,
            "- remove api (no longer declared)\n-/+ replace web (cpus 1 -> 2)\n"
            "plan: 0 to create, 1 to replace, 0 to update, 0 to start, 1 to remove, 0 unchanged\n");
  up = InProject({"up"});
  ASSERT_EQ(up.code, 0) << up.err;
  EXPECT_THAT(up.out, HasSubstr("removed api"));
  EXPECT_THAT(up.out, HasSubstr("replaced web"));
  auto cpus = Msb({"exec", "web", "--", "nproc"});
  EXPECT_EQ(cpus.out, "2\n");
  EXPECT_NE(Msb({"exec", "web", "--", "ls", "/marker"}).code, 0);
  auto ps = Msb({"ps"});
  EXPECT_THAT(ps.out, Not(HasSubstr("api")));

  auto down = InProject({"down"});
  EXPECT_EQ(down.code, 0) << down.err;
  EXPECT_EQ(down.out, "removed web\n");
  EXPECT_TRUE(WaitNoProcess(Home(), 20));
  EXPECT_EQ(Msb({"ps", "--json"}).out, "[]\n");
}

TEST_F(UpTest, DependenciesStartFirstAndADeadSupervisorIsRestoredByUp) {
  WriteFile("name: deps\nsandboxes:\n" + Sandbox("db") +
            Sandbox("app", "    depends_on: [db]\n"));
  auto up = InProject({"up"});
  ASSERT_EQ(up.code, 0) << up.err;
  // db was created before app started: its line comes first.
  EXPECT_LT(up.out.find("created db"), up.out.find("created app")) << up.out;

  // kill -9 of db's supervisor: its VM dies with it, ps tells, up restores it.
  std::vector<int> sups;
  for (int pid : ProcessesMatching("supervisor")) {
    auto cmd = ProcessesMatching(Home());
    if (std::find(cmd.begin(), cmd.end(), pid) != cmd.end()) sups.push_back(pid);
  }
  ASSERT_EQ(sups.size(), 2u);
  auto db_json = Msb({"ps", "--json"});
  ASSERT_EQ(::kill(sups[0], SIGKILL), 0);
  auto ps = Msb({"ps"});
  EXPECT_THAT(ps.out, HasSubstr("failed"));
  auto plan = InProject({"plan"});
  EXPECT_THAT(plan.out, HasSubstr("> start"));
  up = InProject({"up"});
  ASSERT_EQ(up.code, 0) << up.err;
  EXPECT_THAT(up.out, HasSubstr("started"));
  EXPECT_EQ(InProject({"up"}).out, "nothing to do: 2 sandboxes up to date\n");
  // Exactly two VMs: nothing duplicated.
  int qemus = 0;
  for (int pid : ProcessesMatching("qemu-system")) {
    auto mine = ProcessesMatching(Home());
    if (std::find(mine.begin(), mine.end(), pid) != mine.end()) ++qemus;
  }
  EXPECT_EQ(qemus, 2);
  EXPECT_EQ(InProject({"down"}).code, 0);
  EXPECT_TRUE(WaitNoProcess(Home(), 20));
}

TEST_F(UpTest, TwoProjectsNeverTouchEachOther) {
  std::string other = Home() + "/other";
  ASSERT_TRUE(MakeDirs(other).ok());
  ASSERT_TRUE(WriteFileAtomic(other + "/Sandboxfile",
                              "name: other\nsandboxes:\n" + Sandbox("solo")).ok());
  WriteFile("name: mine\nsandboxes:\n" + Sandbox("solo2"));
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
  WriteFile("name: crash\nsandboxes:\n" + Sandbox("a") + Sandbox("b") + Sandbox("c"));
  // Start an up and kill it as soon as its first sandbox is recorded.
  SpawnOptions o;
  o.argv = {BuildDir() + "/orchestrator/msb", "up", "-f",
            project_ + "/Sandboxfile"};
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) env.push_back(*e);
  for (auto& [k, v] : env_) env.push_back(k + "=" + v);
  o.env = env;
  auto child = ChildProcess::Spawn(o);
  ASSERT_TRUE(child.ok());
  // Wait (deadline) for a supervisor of this home to exist, then kill -9 msb up.
  bool seen = false;
  for (int i = 0; i < 600 && !seen; ++i) {
    for (int pid : ProcessesMatching("supervisor")) {
      auto mine = ProcessesMatching(Home());
      if (std::find(mine.begin(), mine.end(), pid) != mine.end()) seen = true;
    }
    if (!seen) {
      pollfd none{};
      ::poll(&none, 0, 50);
    }
  }
  ASSERT_TRUE(seen);
  child->Kill(SIGKILL);
  child->Wait();
  auto up = InProject({"up"});
  ASSERT_EQ(up.code, 0) << up.err;
  EXPECT_EQ(InProject({"up"}).out, "nothing to do: 3 sandboxes up to date\n");
  int qemus = 0;
  for (int pid : ProcessesMatching("qemu-system")) {
    auto mine = ProcessesMatching(Home());
    if (std::find(mine.begin(), mine.end(), pid) != mine.end()) ++qemus;
  }
  EXPECT_EQ(qemus, 3);
  EXPECT_EQ(InProject({"down"}).code, 0);
  EXPECT_TRUE(WaitNoProcess(Home(), 20));
}

TEST_F(UpTest, QuickstartExampleRunsAsIs) {
  std::string src = SourceDir();
  std::string file = src + "/examples/quickstart/Sandboxfile";
  struct stat st;
  if (::stat((src + "/examples/quickstart/rootfs").c_str(), &st) != 0) {
    GTEST_SKIP() << "examples/quickstart/rootfs is built by scripts/setup";
  }
  ASSERT_EQ(Msb({"up", "-f", file}).code, 0);
  EXPECT_EQ(WaitForLogs("hello", "hello from msb"), "hello from msb\n");
  EXPECT_EQ(Msb({"down", "-f", file}).code, 0);
}

}  // namespace
}  // namespace msb::testing
