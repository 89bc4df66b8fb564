// The control group of every sandbox (vm/cgroup.h), read from the host's
// cgroup v1 hierarchies on real microVMs started by `msb up`: each sandbox's
// supervisor, QEMU and virtiofsd are in its own group in the memory, pids and
// cpu hierarchies, with the limits its Sandboxfile implies, and the group is
// gone with the sandbox, also when its supervisor was killed.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <set>

#include "common/io.h"
#include "tests/integration/harness.h"

namespace msb::testing {
namespace {

constexpr const char* kControllers[] = {"memory", "pids", "cpu"};
// The stated overhead over the VM's memory (README, vm/cgroup.h).
constexpr uint64_t kOverhead = 384ull << 20;

// controller -> group path, from /proc/PID/cgroup (v1 lines "N:a,b:/path").
std::map<std::string, std::string> Groups(int pid) {
  std::map<std::string, std::string> out;
  std::ifstream f("/proc/" + std::to_string(pid) + "/cgroup");
  for (std::string line; std::getline(f, line);) {
    size_t a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    std::string list = line.substr(a + 1, b - a - 1) + ",";
    for (size_t s = 0, e; (e = list.find(',', s)) != std::string::npos; s = e + 1) {
      out[list.substr(s, e - s)] = line.substr(b + 1);
    }
  }
  return out;
}

std::string Read(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) return "(" + text.error().message() + ")";
  std::string s = *text;
  while (!s.empty() && s.back() == '\n') s.pop_back();
  return s;
}

std::set<int> Members(const std::string& controller, const std::string& group) {
  std::set<int> out;
  std::ifstream f("/sys/fs/cgroup/" + controller + group + "/cgroup.procs");
  for (int pid; f >> pid;) out.insert(pid);
  return out;
}

std::string Cmdline(int pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/cmdline");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  std::replace(s.begin(), s.end(), '\0', ' ');
  return s;
}

bool GroupExists(const std::string& controller, const std::string& group) {
  struct stat st;
  return ::stat(("/sys/fs/cgroup/" + controller + group).c_str(), &st) == 0;
}

class CgroupTest : public ProjectTest {
 protected:
  void SetUp() override {
    ProjectTest::SetUp();
    if (IsSkipped()) return;
    if (::geteuid() != 0) GTEST_SKIP() << "creating cgroups needs root";
    for (const char* c : kControllers) {
      if (!GroupExists(c, "")) GTEST_SKIP() << "no cgroup v1 " << c << " hierarchy at /sys/fs/cgroup/" << c;
    }
  }

  // The group of sandbox `name`: its supervisor's, the same in every
  // hierarchy, named msb/<project>-<name>-<8 hex>.
  std::string GroupOf(const std::string& project, const std::string& name) {
    for (int pid : MySupervisors()) {
      auto g = Groups(pid);
      const std::string prefix = "/msb/" + project + "-" + name + "-";
      if (g["memory"].rfind(prefix, 0) != 0) continue;
      EXPECT_EQ(g["memory"].size(), prefix.size() + 8) << g["memory"];
      EXPECT_EQ(g["pids"], g["memory"]);
      EXPECT_EQ(g["cpu"], g["memory"]);
      return g["memory"];
    }
    ADD_FAILURE() << "no supervisor of " << project << "/" << name << " is in a group of its own";
    return "";
  }
};

TEST_F(CgroupTest, EachSandboxHasItsGroupWithItsLimitsUntilItIsRemoved) {
  ASSERT_TRUE(MakeDirs(project_ + "/rw").ok());
  WriteSandboxfile("name: cgroups\nsandboxes:\n  a:\n    image: " + Rootfs() +
                   "\n    memory: 128M\n    cpus: 1\n    command: " + std::string(kKeepAliveCommand) + "\n"
                   "    volumes:\n      - ./rw:/rw\n"
                   "  b:\n    image: " + Rootfs() +
                   "\n    memory: 192M\n    cpus: 2\n    command: " + std::string(kKeepAliveCommand) + "\n");
  auto up = InProject({"up"});
  ASSERT_EQ(up.code, 0) << up.err;
  EXPECT_EQ(up.err.find("cgroup"), std::string::npos) << up.err;

  const std::string a = GroupOf("cgroups", "a"), b = GroupOf("cgroups", "b");
  ASSERT_FALSE(a.empty());
  ASSERT_FALSE(b.empty());
  EXPECT_NE(a, b);

  // Every supervisor, QEMU and virtiofsd of this home is in one of the two
  // groups, and each group holds its sandbox's: a has a share (virtiofsd forks
  // once into its own sandbox: two processes), b has none.
  std::map<std::string, std::multiset<std::string>> kinds;
  for (const std::string& group : {a, b}) {
    const auto members = Members("memory", group);
    EXPECT_EQ(Members("pids", group), members) << group;
    EXPECT_EQ(Members("cpu", group), members) << group;
    for (int pid : members) {
      const std::string cmd = Cmdline(pid);
      kinds[group].insert(cmd.find(" supervisor ") != std::string::npos ? "supervisor"
                          : cmd.find("qemu-system") != std::string::npos ? "qemu"
                          : cmd.find("virtiofsd") != std::string::npos  ? "virtiofsd"
                                                                        : cmd);
    }
  }
  EXPECT_EQ(kinds[a], (std::multiset<std::string>{"qemu", "supervisor", "virtiofsd", "virtiofsd"}));
  EXPECT_EQ(kinds[b], (std::multiset<std::string>{"qemu", "supervisor"}));
  std::vector<int> all = MySupervisors();
  for (int pid : MyQemus()) all.push_back(pid);
  for (int pid : Mine("virtiofsd")) all.push_back(pid);
  EXPECT_EQ(all.size(), 6u);
  for (int pid : all) {
    const std::string g = Groups(pid)["memory"];
    EXPECT_TRUE(g == a || g == b) << Cmdline(pid) << " is in " << g;
  }

  // Limits: memory and memory+swap are the VM's memory plus the overhead,
  // the CPU quota is `cpus` periods, and the process count is bounded.
  const std::string ma = "/sys/fs/cgroup/memory" + a, mb = "/sys/fs/cgroup/memory" + b;
  EXPECT_EQ(Read(ma + "/memory.limit_in_bytes"), std::to_string((128ull << 20) + kOverhead));
  EXPECT_EQ(Read(mb + "/memory.limit_in_bytes"), std::to_string((192ull << 20) + kOverhead));
  if (::access((ma + "/memory.memsw.limit_in_bytes").c_str(), F_OK) == 0) {
    EXPECT_EQ(Read(ma + "/memory.memsw.limit_in_bytes"), std::to_string((128ull << 20) + kOverhead));
  }
  EXPECT_EQ(Read("/sys/fs/cgroup/cpu" + a + "/cpu.cfs_period_us"), "100000");
  EXPECT_EQ(Read("/sys/fs/cgroup/cpu" + a + "/cpu.cfs_quota_us"), "100000");
  EXPECT_EQ(Read("/sys/fs/cgroup/cpu" + b + "/cpu.cfs_quota_us"), "200000");
  EXPECT_EQ(Read("/sys/fs/cgroup/pids" + a + "/pids.max"), "1024");
  // The memory really is counted there: the guest's RAM is QEMU's.
  EXPECT_GT(std::stoull(Read(ma + "/memory.usage_in_bytes")), 16ull << 20);

  // A restart keeps the sandbox in its group.
  auto restarted = Msb({"restart", "cgroups/a"});
  ASSERT_EQ(restarted.code, 0) << restarted.err;
  EXPECT_EQ(GroupOf("cgroups", "a"), a);
  const std::vector<int> qemus = MyQemus();
  EXPECT_EQ(qemus.size(), 2u);
  for (int pid : qemus) {
    const std::string g = Groups(pid)["memory"];
    EXPECT_TRUE(g == a || g == b) << "QEMU " << pid << " is in " << g;
  }

  // A supervisor killed outright cannot remove its group; removing the
  // sandbox does.
  int killed = 0;
  for (int pid : Members("memory", b)) {
    if (Cmdline(pid).find(" supervisor ") != std::string::npos && ::kill(pid, SIGKILL) == 0) ++killed;
  }
  EXPECT_EQ(killed, 1) << "b's supervisor, killed so that it cannot clean up";
  auto down = InProject({"down"});
  ASSERT_EQ(down.code, 0) << down.err;
  for (const char* c : kControllers) {
    EXPECT_FALSE(GroupExists(c, a)) << c << a << " outlived its sandbox";
    EXPECT_FALSE(GroupExists(c, b)) << c << b << " outlived its sandbox";
  }
}

}  // namespace
}  // namespace msb::testing
