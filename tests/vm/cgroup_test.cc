// vm/cgroup.h: finding controllers in mountinfo text (v1, v2, both, none),
// what a group's files receive, in a directory tree standing in for the
// cgroup mounts; and joining, leaving and undoing on this host's real cgroup
// v1 hierarchies.
#include "vm/cgroup.h"

#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "common/io.h"
#include "common/sha256.h"
#include "vm/spec.h"

namespace msb::vm {
namespace {

using ::testing::HasSubstr;

std::string Read(const std::string& path) {
  auto text = ReadFile(path);
  return text.ok() ? *text : "(missing)";
}

class FakeCgroupsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/msb-cgroup-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(root_); }

  // A mount point under root_; for "cgroup2", its cgroup.controllers says `v2`.
  std::string Mount(const std::string& name, const std::string& v2 = "") {
    std::string dir = root_ + "/" + name;
    EXPECT_TRUE(MakeDirs(dir).ok());
    if (!v2.empty()) EXPECT_TRUE(WriteFileAtomic(dir + "/cgroup.controllers", v2 + "\n").ok());
    return dir;
  }
  static std::string Line(int id, const std::string& mount, const std::string& fstype,
                          const std::string& super) {
    return std::to_string(id) + " 25 0:" + std::to_string(id) + " / " + mount +
           " rw,nosuid,nodev,noexec,relatime shared:" + std::to_string(id) + " - " + fstype + " " +
           fstype + " " + super + "\n";
  }

  std::string root_;
};

TEST_F(FakeCgroupsTest, V1HierarchiesAreUsedWhenV2HasNoneOfTheControllers) {
  // This project's machines: v1 controllers, a v2 mount with only hugetlb.
  const std::string mountinfo =
      Line(30, Mount("cpu"), "cgroup", "rw,cpu") + Line(31, Mount("cpuacct"), "cgroup", "rw,cpuacct") +
      Line(32, Mount("memory"), "cgroup", "rw,memory") + Line(33, Mount("pids"), "cgroup", "rw,pids") +
      Line(34, Mount("systemd"), "cgroup", "rw,name=systemd") +
      Line(35, Mount("unified", "hugetlb"), "cgroup2", "rw") +
      "22 1 0:20 / /proc rw - proc proc rw\n";
  CgroupHost host = ParseCgroupHost(mountinfo);
  ASSERT_EQ(host.controllers.size(), 3u);
  EXPECT_TRUE(host.missing.empty());
  EXPECT_EQ(host.controllers[0].name, "memory");
  EXPECT_EQ(host.controllers[0].mount, root_ + "/memory");
  EXPECT_FALSE(host.controllers[0].v2);
  EXPECT_EQ(host.controllers[1].mount, root_ + "/pids");
  EXPECT_EQ(host.controllers[2].mount, root_ + "/cpu");
  EXPECT_EQ(host.Dirs("msb/p-a-01234567"),
            (std::vector<std::string>{root_ + "/memory/msb/p-a-01234567", root_ + "/pids/msb/p-a-01234567",
                                      root_ + "/cpu/msb/p-a-01234567"}));
  EXPECT_EQ(CgroupNotice(host, true), "");
}

TEST_F(FakeCgroupsTest, CoMountedV1ControllersShareOneDirectory) {
  const std::string mountinfo = Line(30, Mount("cpu,cpuacct"), "cgroup", "rw,cpu,cpuacct") +
                                Line(31, Mount("memory"), "cgroup", "rw,memory") +
                                Line(32, Mount("pids"), "cgroup", "rw,pids");
  CgroupHost host = ParseCgroupHost(mountinfo);
  ASSERT_EQ(host.controllers.size(), 3u);
  EXPECT_EQ(host.controllers[2].mount, root_ + "/cpu,cpuacct");
  EXPECT_EQ(host.Dirs("g").size(), 3u);
}

TEST_F(FakeCgroupsTest, V2IsPreferredAndItsGroupGetsEveryLimitInOneDirectory) {
  const std::string v2 = Mount("unified", "cpuset cpu io memory hugetlb pids rdma misc");
  const std::string mountinfo = Line(30, Mount("memory"), "cgroup", "rw,memory") +
                                Line(35, v2, "cgroup2", "rw,nsdelegate,memory_recursiveprot");
  CgroupHost host = ParseCgroupHost(mountinfo);
  ASSERT_EQ(host.controllers.size(), 3u);
  for (const auto& c : host.controllers) {
    EXPECT_TRUE(c.v2) << c.name;
    EXPECT_EQ(c.mount, v2);
  }
  ASSERT_EQ(host.Dirs("msb/x").size(), 1u);

  CgroupLimits limits;
  limits.memory_bytes = 640ull << 20;
  limits.cpus = 2;
  ASSERT_TRUE(JoinCgroup(host, "msb/x", limits, 4242).ok());
  EXPECT_EQ(Read(v2 + "/cgroup.subtree_control"), "+memory +pids +cpu");
  EXPECT_EQ(Read(v2 + "/msb/cgroup.subtree_control"), "+memory +pids +cpu");
  EXPECT_EQ(Read(v2 + "/msb/x/memory.max"), std::to_string(640ull << 20));
  EXPECT_EQ(Read(v2 + "/msb/x/pids.max"), "1024");
  EXPECT_EQ(Read(v2 + "/msb/x/cpu.max"), "200000 100000");
  EXPECT_EQ(Read(v2 + "/msb/x/cgroup.procs"), "4242");
}

TEST_F(FakeCgroupsTest, EachControllerComesFromWhereTheHostHasIt) {
  const std::string v2 = Mount("unified", "memory");
  const std::string mountinfo = Line(30, Mount("cpu"), "cgroup", "rw,cpu") +
                                Line(32, Mount("pids"), "cgroup", "rw,pids") + Line(35, v2, "cgroup2", "rw");
  CgroupHost host = ParseCgroupHost(mountinfo);
  ASSERT_EQ(host.controllers.size(), 3u);
  EXPECT_TRUE(host.controllers[0].v2);
  EXPECT_FALSE(host.controllers[1].v2);
  EXPECT_FALSE(host.controllers[2].v2);
  ASSERT_TRUE(JoinCgroup(host, "msb/y", CgroupLimits{.memory_bytes = 1 << 30, .pids = 64, .cpus = 1}, 7).ok());
  EXPECT_EQ(Read(v2 + "/msb/y/memory.max"), "1073741824");
  EXPECT_EQ(Read(v2 + "/msb/cgroup.subtree_control"), "+memory");
  EXPECT_EQ(Read(root_ + "/pids/msb/y/pids.max"), "64");
  EXPECT_EQ(Read(root_ + "/cpu/msb/y/cpu.cfs_period_us"), "100000");
  EXPECT_EQ(Read(root_ + "/cpu/msb/y/cpu.cfs_quota_us"), "100000");
  EXPECT_EQ(Read(root_ + "/cpu/msb/y/cgroup.procs"), "7");
}

TEST_F(FakeCgroupsTest, AReusedV1GroupGetsSwapHeldToTheNewLimitEvenWhenItGrows) {
  const std::string mountinfo = Line(31, Mount("memory"), "cgroup", "rw,memory");
  const std::string dir = root_ + "/memory/msb/z";
  ASSERT_TRUE(MakeDirs(dir).ok());
  ASSERT_TRUE(WriteFileAtomic(dir + "/memory.memsw.limit_in_bytes", "100").ok());
  CgroupHost host = ParseCgroupHost(mountinfo);
  ASSERT_EQ(host.controllers.size(), 1u);
  ASSERT_TRUE(JoinCgroup(host, "msb/z", CgroupLimits{.memory_bytes = 5000}, 9).ok());
  EXPECT_EQ(Read(dir + "/memory.limit_in_bytes"), "5000");
  EXPECT_EQ(Read(dir + "/memory.memsw.limit_in_bytes"), "5000");
}

TEST_F(FakeCgroupsTest, MissingControllersAreNamedOnce) {
  const std::string mountinfo = Line(32, Mount("pids"), "cgroup", "rw,pids") +
                                Line(35, Mount("unified", "hugetlb"), "cgroup2", "rw");
  CgroupHost host = ParseCgroupHost(mountinfo);
  ASSERT_EQ(host.controllers.size(), 1u);
  ASSERT_EQ(host.missing.size(), 2u);
  const std::string notice = CgroupNotice(host, true);
  EXPECT_THAT(notice, HasSubstr("memory (no cgroup v1 hierarchy or v2 mount has it)"));
  EXPECT_THAT(notice, HasSubstr("cpu (no cgroup v1 hierarchy or v2 mount has it)"));
  EXPECT_THAT(notice, ::testing::Not(HasSubstr("pids")));

  EXPECT_EQ(ParseCgroupHost("").missing.size(), 3u);
  EXPECT_THAT(CgroupNotice(host, false), HasSubstr("needs msb to run as root"));
}

TEST_F(FakeCgroupsTest, EscapedMountPointsAreUnescaped) {
  const std::string dir = Mount("with space");
  CgroupHost host = ParseCgroupHost(Line(31, root_ + "/with\\040space", "cgroup", "rw,memory"));
  ASSERT_EQ(host.controllers.size(), 1u);
  EXPECT_EQ(host.controllers[0].mount, dir);
}

TEST(SandboxCgroupTest, NameAndLimitsFollowTheSpec) {
  EXPECT_EQ(SandboxCgroupName("proj", "db", "/h/sandboxes/abc"),
            "msb/proj-db-" + Sha256Hex("/h/sandboxes/abc").substr(0, 8));
  EXPECT_NE(SandboxCgroupName("proj", "db", "/h1/sandboxes/abc"),
            SandboxCgroupName("proj", "db", "/h2/sandboxes/abc"));
  VmSpec spec;
  spec.memory_bytes = 256ull << 20;
  spec.cpus = 3;
  CgroupLimits l = SandboxCgroupLimits(spec);
  EXPECT_EQ(l.memory_bytes, (256ull << 20) + kVmmMemoryOverhead);
  EXPECT_EQ(l.cpus, 3);
  EXPECT_EQ(l.pids, kSandboxPidsMax);
}

// The host's own hierarchies (cgroup v1 on this project's machines).
class HostCgroupsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "creating cgroups needs root";
    host_ = DetectCgroupHost();
    if (!host_.missing.empty()) GTEST_SKIP() << CgroupNotice(host_, true);
    name_ = "msb/unit-test-" + std::to_string(::getpid());
  }
  void TearDown() override {
    if (!name_.empty()) (void)RemoveCgroup(host_, name_);
  }
  static std::string GroupLine(pid_t pid, const std::string& controller) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/cgroup");
    for (std::string line; std::getline(f, line);) {
      size_t a = line.find(':'), b = line.find(':', a + 1);
      std::string list = "," + line.substr(a + 1, b - a - 1) + ",";
      if (list.find("," + controller + ",") != std::string::npos) return line.substr(b + 1);
    }
    return "";
  }

  CgroupHost host_;
  std::string name_;
};

TEST_F(HostCgroupsTest, AChildJoinsWithItsLimitsAndTheGroupGoesWhenItLeaves) {
  int gate[2];
  ASSERT_EQ(::pipe(gate), 0);
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(gate[1]);
    char c;
    (void)!::read(gate[0], &c, 1);  // until the parent closes its end
    ::_exit(0);
  }
  ::close(gate[0]);
  CgroupLimits limits{.memory_bytes = 300ull << 20, .pids = 77, .cpus = 2};
  ASSERT_TRUE(JoinCgroup(host_, name_, limits, child).ok());
  for (const auto& c : host_.controllers) EXPECT_EQ(GroupLine(child, c.name), "/" + name_) << c.name;
  auto dirs = host_.Dirs(name_);
  for (const auto& d : dirs) EXPECT_EQ(Read(d + "/cgroup.procs"), std::to_string(child) + "\n");
  EXPECT_EQ(Read(dirs[0] + "/memory.limit_in_bytes"), std::to_string(300ull << 20) + "\n");
  EXPECT_EQ(Read(dirs[1] + "/pids.max"), "77\n");
  EXPECT_EQ(Read(dirs[2] + "/cpu.cfs_quota_us"), "200000\n");

  // With a member, the group cannot go; once it has left, it does.
  Status busy = RemoveCgroup(host_, name_);
  EXPECT_FALSE(busy.ok());
  EXPECT_THAT(busy.error().message(), HasSubstr("still in it"));
  ASSERT_TRUE(LeaveCgroup(host_, name_, child).ok());
  for (const auto& c : host_.controllers) EXPECT_EQ(GroupLine(child, c.name), "/") << c.name;
  for (const auto& d : dirs) EXPECT_FALSE(std::filesystem::exists(d)) << d;
  ::close(gate[1]);
  int status;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
}

TEST_F(HostCgroupsTest, AFailedJoinLeavesNothingCreated) {
  // A process that is gone cannot join: the first write to cgroup.procs fails.
  pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) ::_exit(0);
  int status;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  Status st = JoinCgroup(host_, name_, CgroupLimits{.memory_bytes = 300ull << 20}, child);
  ASSERT_FALSE(st.ok());
  EXPECT_THAT(st.error().message(), HasSubstr("cgroup.procs"));
  for (const auto& d : host_.Dirs(name_)) EXPECT_FALSE(std::filesystem::exists(d)) << d;
}

}  // namespace
}  // namespace msb::vm
