// The supervisor's bounds against a hostile guest, on real microVMs under
// TCG, observed from the host:
//   - a guest agent that sends 10^7 one-byte frames and never reads its port
//     grows the supervisor's resident memory by less than its budget, and
//     another sandbox answers meanwhile;
//   - a guest that opens 8192 DNS-over-TCP connections with a zero window
//     (raw frames from its own init) is refused flows once the budget is
//     spent, and the supervisor's resident memory grows by less than it;
//   - under `ulimit -n 1024`, a guest opening 1100 UDP flows leaves
//     `msb exec` working and the supervisor idle;
//   - two sandboxes of one project connecting to each other at once through
//     their supervisors all get through.
#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <sstream>

#include "common/fd.h"
#include "common/io.h"
#include "tests/integration/harness.h"

namespace msb::testing {
namespace {

using ::testing::HasSubstr;

// The supervisor's memory budget (vm/supervisor.h kMemoryBudget), in KiB.
constexpr long kBudgetKiB = 64 * 1024;

// The file's text; "" when it cannot be read.
std::string Text(const std::string& path) {
  auto r = ReadFile(path);
  return r.ok() ? *r : std::string();
}

class BoundsTest : public ProjectTest {
 protected:
  // The sandbox directory whose spec.json names `name`.
  std::string SandboxDir(const std::string& name) {
    for (const auto& e : std::filesystem::directory_iterator(Home() + "/sandboxes")) {
      auto text = ReadFile(e.path().string() + "/spec.json");
      if (!text.ok()) continue;
      auto j = nlohmann::json::parse(*text, nullptr, false);
      if (j.is_object() && j.value("name", "") == name) return e.path().string();
    }
    return "";
  }
  // The pid of the supervisor of the sandbox in dir; -1 when none.
  int SupervisorOf(const std::string& dir) {
    for (int pid : MySupervisors()) {
      auto cmd = ReadFile("/proc/" + std::to_string(pid) + "/cmdline");
      if (cmd.ok() && cmd->find(dir + '\0') != std::string::npos) return pid;
    }
    return -1;
  }
  // Waits for text in the file at path (inotify on its directory); the
  // file's content then, or at the deadline.
  static std::string WaitForFileText(const std::string& path, const std::string& text, int deadline_s) {
    UniqueFd in(::inotify_init1(IN_CLOEXEC | IN_NONBLOCK));
    ::inotify_add_watch(in.get(), std::filesystem::path(path).parent_path().c_str(),
                        IN_MODIFY | IN_CREATE | IN_CLOSE_WRITE);
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(deadline_s);
    for (;;) {
      auto got = ReadFile(path);
      if (got.ok() && got->find(text) != std::string::npos) return *got;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) return got.ok() ? *got : std::string();
      pollfd p{in.get(), POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) > 0) {
        char buf[4096];
        while (::read(in.get(), buf, sizeof buf) > 0) {
        }
      }
    }
  }
  // A field of /proc/PID/status in KiB ("VmHWM:	  1234 kB"); -1 when absent.
  static long KiB(int pid, const std::string& field) {
    auto st = ProcStatus(pid);
    auto it = st.find(field);
    return it == st.end() ? -1 : std::strtol(it->second.c_str(), nullptr, 10);
  }
  // User and system CPU time of pid, in seconds.
  static double CpuSeconds(int pid) {
    auto stat = ReadFile("/proc/" + std::to_string(pid) + "/stat");
    if (!stat.ok()) return -1;
    std::istringstream in(stat->substr(stat->rfind(')') + 2));
    std::string field;
    double ticks = 0;
    for (int i = 3; i <= 15 && in >> field; ++i) {
      if (i == 14 || i == 15) ticks += std::stod(field);
    }
    return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
  }
  std::string Calm() {
    return "  calm:\n    image: " + Rootfs() + "\n    memory: 128M\n    command: " + std::string(kKeepAliveCommand) + "\n";
  }
  // A second project on this home with one ordinary sandbox, `calm`.
  void UpCalm() {
    std::string dir = Home() + "/calm";
    ASSERT_TRUE(MakeDirs(dir).ok());
    ASSERT_TRUE(WriteFileAtomic(dir + "/Sandboxfile", "name: calm\nsandboxes:\n" + Calm()).ok());
    auto up = Msb({"up", "-f", dir + "/Sandboxfile"});
    ASSERT_EQ(up.code, 0) << up.out << up.err;
  }
  void DownCalm() { EXPECT_EQ(Msb({"down", "-f", Home() + "/calm/Sandboxfile"}).code, 0); }
  const nlohmann::json* Entry(const nlohmann::json& ps, const std::string& name) {
    if (!ps.is_array()) return nullptr;
    for (const auto& e : ps) {
      if (e.is_object() && e.value("name", "") == name) return &e;
    }
    return nullptr;
  }
};

TEST_F(BoundsTest, AnAgentFloodingOneByteFramesWithoutReadingStaysUnderTheBudget) {
  UpCalm();
  env_["MSB_AGENTD"] = MSB_TEST_FLOOD_INIT;
  WriteSandboxfile("name: flood\nsandboxes:\n  flood:\n    image: " + Rootfs() +
                   "\n    memory: 128M\n    command: [\"true\"]\n");
  auto up = InProject({"up"});
  env_.erase("MSB_AGENTD");
  ASSERT_EQ(up.code, 0) << up.out << up.err;
  std::string dir = SandboxDir("flood");
  int sup = SupervisorOf(dir);
  ASSERT_GT(sup, 0);
  const long before = KiB(sup, "VmRSS");
  // Every frame was read: the guest's writes would block otherwise.
  std::string console = WaitForFileText(dir + "/console.log", "flood-init: 10000000 frames sent", 120);
  ASSERT_THAT(console, HasSubstr("flood-init: 10000000 frames sent")) << dir;
  // The budget bounds what the supervisor buffers; its code and libraries
  // were resident before the guest did anything.
  long hwm = KiB(sup, "VmHWM");
  EXPECT_GT(before, 0);
  EXPECT_LT(hwm - before, kBudgetKiB) << "peak " << hwm << " KiB, " << before << " KiB at boot";
  std::cout << "supervisor resident memory: " << before << " KiB at boot, peak " << hwm << " KiB\n";
  // The output reached the workload log, and the other sandbox answers.
  EXPECT_THAT(Msb({"logs", "flood"}).out, HasSubstr("xxxxxxxx"));
  auto calm = Msb({"exec", "calm", "--", "echo", "alive"});
  EXPECT_EQ(calm.out, "alive\n") << calm.err;
  EXPECT_EQ(InProject({"down"}).code, 0);
  DownCalm();
  EXPECT_TRUE(WaitNoProcess(Home(), 30));
}

TEST_F(BoundsTest, ZeroWindowDnsFlowsAreRefusedOnceTheBudgetIsSpent) {
  UpCalm();
  env_["MSB_AGENTD"] = MSB_TEST_NETFLOOD_INIT;
  WriteSandboxfile("name: dnsflood\nsandboxes:\n  dnsflood:\n    image: " + Rootfs() +
                   "\n    memory: 128M\n    command: [\"true\"]\n");
  auto up = InProject({"up"});
  env_.erase("MSB_AGENTD");
  ASSERT_EQ(up.code, 0) << up.out << up.err;
  std::string dir = SandboxDir("dnsflood");
  int sup = SupervisorOf(dir);
  ASSERT_GT(sup, 0);
  const long before = KiB(sup, "VmRSS");
  std::string console = WaitForFileText(dir + "/console.log", " unanswered", 120);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(console, m, std::regex("(\\d+) flows accepted, (\\d+) refused, (\\d+) unanswered")))
      << console;
  std::cout << m[0] << "\n";
  int accepted = std::stoi(m[1]), refused = std::stoi(m[2]), unanswered = std::stoi(m[3]);
  EXPECT_EQ(accepted + refused + unanswered, 8192);
  EXPECT_GT(accepted, 0);
  EXPECT_GT(refused, 0) << "8192 zero-window flows fit the budget";
  // The budget bounds what the supervisor buffers; its code and libraries
  // were resident before the guest did anything.
  long hwm = KiB(sup, "VmHWM");
  EXPECT_GT(before, 0);
  EXPECT_LT(hwm - before, kBudgetKiB) << "peak " << hwm << " KiB, " << before << " KiB at boot";
  std::cout << "supervisor resident memory: " << before << " KiB at boot, peak " << hwm << " KiB\n";
  // Accepted flows are held (their answers wait on a closed window) until
  // their persist timers give up.
  auto ps = nlohmann::json::parse(Msb({"ps", "--json"}).out, nullptr, false);
  const auto* e = Entry(ps, "dnsflood");
  ASSERT_NE(e, nullptr) << ps;
  int held = (*e)["net"].value("tcp_flows", -1);
  EXPECT_GT(held, 0) << *e;
  EXPECT_LE(held, accepted) << *e;
  auto calm = Msb({"exec", "calm", "--", "echo", "alive"});
  EXPECT_EQ(calm.out, "alive\n") << calm.err;
  EXPECT_EQ(InProject({"down"}).code, 0);
  DownCalm();
  EXPECT_TRUE(WaitNoProcess(Home(), 30));
}

TEST_F(BoundsTest, UnderUlimit1024ManyUdpFlowsLeaveExecWorkingAndTheSupervisorIdle) {
  auto debian = DebianRootfs();
  ASSERT_TRUE(debian.ok()) << debian.error().message();
  WriteSandboxfile("name: fds\nsandboxes:\n  box:\n    image: " + *debian +
                   "\n    memory: 256M\n    command: " + std::string(kKeepAliveCommand) + "\n"
                   "    network:\n      rules:\n        - allow@host:udp:9\n");
  argv_prefix_ = {"prlimit", "--nofile=1024:1024", "--"};
  auto up = InProject({"up"});
  argv_prefix_.clear();
  ASSERT_EQ(up.code, 0) << up.out << up.err;
  int sup = SupervisorOf(SandboxDir("box"));
  ASSERT_GT(sup, 0);
  EXPECT_THAT(Text("/proc/" + std::to_string(sup) + "/limits"),
              ::testing::ContainsRegex("Max open files +1024 +1024"));
  // 1100 sockets, each a flow of its own (the guest's port differs).
  auto flood = Msb({"exec", "box", "--", "python3", "-c",
                    "import resource, socket\n"
                    "resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))\n"
                    "s = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(1100)]\n"
                    "for x in s: x.sendto(b'x', ('10.0.2.2', 9))\n"
                    "print('sent', len(s))\n"});
  ASSERT_EQ(flood.code, 0) << flood.err;
  EXPECT_EQ(flood.out, "sent 1100\n");
  auto ps = nlohmann::json::parse(Msb({"ps", "--json"}).out, nullptr, false);
  const auto* e = Entry(ps, "box");
  ASSERT_NE(e, nullptr) << ps;
  int flows = (*e)["net"].value("udp_flows", -1);
  EXPECT_GT(flows, 500) << *e;
  EXPECT_LT(flows, 1024 - 64) << "the flows left no reserve: " << *e;
  // Two control connections at once both work, and the supervisor idles
  // meanwhile: without a reserve the second accept fails, and a listener
  // spinning on it would burn a whole core for as long as the first one
  // lasts. The first exec is held open on a FIFO until the second has
  // answered and a third opens the gate, so the three always overlap however
  // slow the machine; the supervisor's CPU is compared with the wall time of
  // that overlap.
  double before = CpuSeconds(sup);
  const auto held_from = std::chrono::steady_clock::now();
  std::string held_out = Home() + "/held.out";
  UniqueFd out(::open(held_out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  ChildProcess held = SpawnMsb(
      {"exec", "box", "--", "sh", "-c", "mkfifo /tmp/gate && echo started && cat /tmp/gate && echo released"},
      out.get());
  EXPECT_THAT(WaitForFileText(held_out, "started", 60), HasSubstr("started"));
  auto t = Msb({"exec", "box", "--", "echo", "second"}, "", 60);
  EXPECT_EQ(t.out, "second\n") << t.err;
  EXPECT_EQ(Msb({"exec", "box", "--", "sh", "-c", "echo go > /tmp/gate"}, "", 60).code, 0);
  held.Wait();
  double spent = CpuSeconds(sup) - before;
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - held_from).count();
  EXPECT_THAT(Text(held_out), HasSubstr("go\nreleased"));
  EXPECT_LT(spent, 0.5 * wall) << "supervisor CPU seconds over " << wall << " s of held exec";
  std::cout << flows << " UDP flows held; supervisor CPU over " << wall << " s of held exec: " << spent << " s\n";
  EXPECT_EQ(InProject({"down"}).code, 0);
  EXPECT_TRUE(WaitNoProcess(Home(), 30));
}

TEST_F(BoundsTest, TwoSupervisorsConnectingToEachOtherAtOnceBothGetThrough) {
  std::mt19937 rng(std::random_device{}());
  const std::string ta = "a-" + std::to_string(rng()), tb = "b-" + std::to_string(rng());
  auto sandbox = [&](const std::string& name, const std::string& token) {
    return "  " + name + ":\n    image: " + Rootfs() + "\n    memory: 128M\n" +
           "    command: [\"/bin/sh\", \"-c\", \"mkdir -p /www; echo " + token +
           " > /www/index.html; exec httpd -f -p 80 -h /www\"]\n" +
           "    network:\n      policy: group\n" +
           "    healthcheck:\n      command: [\"wget\", \"-q\", \"-O\", \"/tmp/h\", \"http://127.0.0.1/\"]\n"
           "      interval: 1s\n";
  };
  WriteSandboxfile("name: pair\nsandboxes:\n" + sandbox("a", ta) + sandbox("b", tb));
  auto up = InProject({"up", "--wait", "--wait-timeout", "120"});
  ASSERT_EQ(up.code, 0) << up.out << up.err;
  // Eight loops of five fetches in each guest, both guests at once: each
  // supervisor opens flows to the other while answering the other's.
  auto loops = [](const std::string& peer) {
    return "for j in 1 2 3 4 5 6 7 8; do (for i in 1 2 3 4 5; do wget -q -O - http://" + peer +
           "/ 2>/dev/null; done) & done; wait";
  };
  std::string out_a = Home() + "/a.out", out_b = Home() + "/b.out";
  UniqueFd fa(::open(out_a.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  UniqueFd fb(::open(out_b.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  ChildProcess pa = SpawnMsb({"exec", "a", "--", "sh", "-c", loops("b")}, fa.get());
  ChildProcess pb = SpawnMsb({"exec", "b", "--", "sh", "-c", loops("a")}, fb.get());
  pa.Wait();
  pb.Wait();
  auto count = [](const std::string& text, const std::string& token) {
    size_t n = 0;
    for (size_t at = text.find(token); at != std::string::npos; at = text.find(token, at + 1)) ++n;
    return n;
  };
  std::string got_a = Text(out_a), got_b = Text(out_b);
  EXPECT_EQ(count(got_a, tb), 40u) << got_a;
  EXPECT_EQ(count(got_b, ta), 40u) << got_b;
  EXPECT_EQ(InProject({"down"}).code, 0);
  EXPECT_TRUE(WaitNoProcess(Home(), 30));
}

}  // namespace
}  // namespace msb::testing
