// vm::BuilderVm with a stand-in QEMU (tests/vm/fake_qemu.cc) that finds the
// agent socket from its own argv and speaks frames: the command line it gets
// (disks in order, escaped paths, the agent port), the channel, power-off,
// and that every failure leaves no process and no scratch directory.
// Booting a real guest in a builder VM is tests/image/flatten_test.cc's.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "agent/messages.h"
#include "agent/protocol.h"
#include "common/fd.h"
#include "common/io.h"
#include "vm/builder_vm.h"
#include "vm/qemu_cmdline.h"

namespace msb::vm {
namespace {

namespace sfs = std::filesystem;
using Clock = BuilderVm::Clock;

// Our children (every thread's /proc children list).
std::string Children() {
  std::string all;
  for (const auto& t : sfs::directory_iterator("/proc/self/task")) {
    auto c = ReadFile(t.path().string() + "/children");
    if (c.ok()) all += *c;
  }
  return all;
}

std::vector<std::string> Entries(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& e : sfs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

class BuilderVmTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A comma in $TMPDIR puts one into every path on the command line.
    char tmpl[] = "/tmp/msb-builder,test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    tmp_ = tmpl;
    ASSERT_TRUE(MakeDirs(tmp_ + "/scratch").ok());
    ::setenv("TMPDIR", (tmp_ + "/scratch").c_str(), 1);
    ::setenv("FAKE_QEMU_ARGV", (tmp_ + "/argv").c_str(), 1);
    ::unsetenv("FAKE_QEMU_MODE");
    options_.qemu = MSB_FAKE_QEMU;
    options_.kernel = "/k";
    options_.initramfs = "/i";
    options_.kernel_args = "x=1";
    // The stand-in QEMU writes its argv and reads the agent socket on the host.
    options_.jail = false;
    // It cannot save or load a VM: builder templates are flatten_test's.
    options_.boot_mode = "cold";
    boot_.name = "the test VM";
    boot_.scratch_prefix = "msb-bvt-";
    boot_.disks = {{tmp_ + "/target,1.ext4", "msb-target", false}, {tmp_ + "/layer.tar", "msb-layer-0", true}};
    boot_.deadline = Clock::now() + std::chrono::seconds(20);
  }
  void TearDown() override {
    ::unsetenv("TMPDIR");
    ::unsetenv("FAKE_QEMU_ARGV");
    ::unsetenv("FAKE_QEMU_MODE");
    sfs::remove_all(tmp_);
  }
  std::vector<std::string> FakeArgv() {
    auto text = ReadFile(tmp_ + "/argv");
    std::vector<std::string> out;
    if (!text.ok()) return out;
    size_t start = 0;
    for (size_t nl; (nl = text->find('\n', start)) != std::string::npos; start = nl + 1)
      out.push_back(text->substr(start, nl - start));
    return out;
  }
  std::string tmp_;
  BuilderVmOptions options_;
  BuilderVmBoot boot_;
};

TEST_F(BuilderVmTest, BootsConnectsAndPowersOff) {
  {
    auto vm = BuilderVm::Boot(options_, boot_);
    ASSERT_TRUE(vm.ok()) << vm.error().message();
    // The fake's hello arrives over the channel.
    auto hello = vm->channel().Receive(std::chrono::seconds(10));
    ASSERT_TRUE(hello.ok()) << hello.error().message();
    EXPECT_EQ(hello->kind, agent::FrameKind::kHello);
    auto scratch = Entries(tmp_ + "/scratch");
    ASSERT_EQ(scratch.size(), 1u);
    EXPECT_EQ(scratch[0].rfind("msb-bvt-", 0), 0u);
    const std::string dir = QemuEscape(tmp_ + "/scratch/" + scratch[0]);

    auto a = FakeArgv();
    auto has = [&](const std::string& x) { return std::count(a.begin(), a.end(), x) == 1; };
    EXPECT_TRUE(has("file,id=con,path=" + dir + "/console.log"));
    EXPECT_TRUE(has("socket,id=agent,path=" + dir + "/agent.sock"));
    EXPECT_TRUE(has(std::string("virtserialport,chardev=agent,name=") + agent::kPortName));
    EXPECT_TRUE(has("console=ttyS0 quiet panic=-1 reboot=t x=1"));
    // One vCPU by default (builder_vm.h says why).
    auto smp = std::find(a.begin(), a.end(), "-smp");
    ASSERT_NE(smp, a.end());
    ASSERT_NE(smp + 1, a.end());
    EXPECT_EQ(*(smp + 1), "1");
    // The disks in the order given: the target read-write, the layer read-only.
    const std::string target =
        "id=disk0,file=" + QemuEscape(tmp_) + "/target,,1.ext4,format=raw,if=none,discard=unmap";
    const std::string layer =
        "id=disk1,file=" + QemuEscape(tmp_) + "/layer.tar,format=raw,if=none,readonly=on";
    auto t = std::find(a.begin(), a.end(), target);
    auto l = std::find(a.begin(), a.end(), layer);
    ASSERT_NE(t, a.end());
    ASSERT_NE(l, a.end());
    EXPECT_LT(t, l);
    EXPECT_TRUE(has("virtio-blk-device,drive=disk0,serial=msb-target"));
    EXPECT_TRUE(has("virtio-blk-device,drive=disk1,serial=msb-layer-0"));
    // No sandbox devices: no QMP, network, shares or shared memory.
    for (const std::string& x : a) {
      EXPECT_EQ(x.find("qmp"), std::string::npos) << x;
      EXPECT_EQ(x.find("netdev"), std::string::npos) << x;
      EXPECT_EQ(x.find("vhost-user"), std::string::npos) << x;
      EXPECT_EQ(x.find("memfd"), std::string::npos) << x;
    }

    // The fake exits 0 on the shutdown frame: PowerOff reaps it without killing.
    ExitStatus st = vm->PowerOff(Clock::now() + std::chrono::seconds(10));
    EXPECT_EQ(st.ToString(), "exited with code 0");
    EXPECT_FALSE(vm->process().running());
    EXPECT_EQ(Children(), "");
  }
  // Gone with the BuilderVm: its scratch directory.
  EXPECT_TRUE(Entries(tmp_ + "/scratch").empty());
}

// Disks padded for a builder template: target + 1, 2, 4, 8, 16 or 20 layers.
TEST(BuilderTemplateLayout, PaddedDiskCounts) {
  const std::vector<std::pair<size_t, size_t>> want = {{0, 2}, {1, 2}, {2, 2}, {3, 3}, {4, 5},  {5, 5},
                                                       {6, 9}, {9, 9}, {10, 17}, {17, 17}, {18, 21},
                                                       {21, 21}, {22, 22}, {30, 30}};
  for (auto [n, padded] : want) EXPECT_EQ(PaddedDiskCount(n), padded) << n;
}

TEST_F(BuilderVmTest, TheVmmRunsJailed) {
  // The jail binds what the VM is given: they have to exist.
  options_.kernel = tmp_ + "/k";
  options_.initramfs = tmp_ + "/i";
  for (const std::string& f : {options_.kernel, options_.initramfs, boot_.disks[0].path, boot_.disks[1].path})
    ASSERT_TRUE(WriteFileAtomic(f, "x", 0600).ok()) << f;
  options_.jail = true;
  ::unsetenv("FAKE_QEMU_ARGV");
  ::setenv("FAKE_QEMU_REPORT", "1", 1);
  auto vm = BuilderVm::Boot(options_, boot_);
  ::unsetenv("FAKE_QEMU_REPORT");
  ASSERT_TRUE(vm.ok()) << vm.error().message();
  // The report is written before the hello.
  auto hello = vm->channel().Receive(std::chrono::seconds(10));
  ASSERT_TRUE(hello.ok()) << hello.error().message();
  auto scratch = Entries(tmp_ + "/scratch");
  ASSERT_EQ(scratch.size(), 1u);
  const std::string dir = tmp_ + "/scratch/" + scratch[0];
  auto report = ReadFile(dir + "/qemu.log");
  ASSERT_TRUE(report.ok());
  // A newline first, so that every line, the first too, follows one.
  *report = "\n" + *report;
  auto line = [&](const std::string& key) {
    size_t at = report->find("\n" + key);
    if (at == std::string::npos) return std::string();
    at += 1;
    return report->substr(at, report->find('\n', at) - at);
  };
  const std::string uid = line("Uid:");
  ASSERT_FALSE(uid.empty()) << *report;
  EXPECT_EQ(uid.find("\t0\t"), std::string::npos) << uid;
  EXPECT_EQ(line("CapEff:"), "CapEff:\t0000000000000000");
  EXPECT_EQ(line("CapPrm:"), "CapPrm:\t0000000000000000");
  EXPECT_EQ(line("NoNewPrivs:"), "NoNewPrivs:\t1");
  char host_net[256] = {};
  ASSERT_GT(::readlink("/proc/self/ns/net", host_net, sizeof host_net - 1), 0);
  EXPECT_NE(line("net "), std::string("net ") + host_net);
  EXPECT_NE(line("net "), "");
  // Its root holds the VM's files and the program itself, nothing else of
  // the host outside the system's libraries.
  std::vector<std::string> files;
  for (size_t at = 0; (at = report->find("\nfile ", at)) != std::string::npos; ++at)
    files.push_back(report->substr(at + 6, report->find('\n', at + 1) - at - 6));
  std::sort(files.begin(), files.end());
  std::vector<std::string> want = {options_.initramfs, options_.kernel, tmp_ + "/layer.tar",
                                   tmp_ + "/target,1.ext4", dir + "/agent.sock",
                                   dir + "/console.log", "/etc/ld.so.cache"};
  if (std::string(MSB_FAKE_QEMU).rfind("/usr/", 0) != 0) want.push_back(MSB_FAKE_QEMU);
  std::sort(want.begin(), want.end());
  EXPECT_EQ(files, want) << *report;
  // The read-only disk stays read-only to it.
  EXPECT_NE(report->find("\nwrite " + tmp_ + "/layer.tar Permission denied\n"), std::string::npos) << *report;
  EXPECT_EQ(vm->PowerOff(Clock::now() + std::chrono::seconds(10)).ToString(), "exited with code 0");
}

// Under TCG with more than one vCPU the guest kernel is told the TSCs agree
// and the delay loop's rate, from tsc_early_khz at HZ 250; with one vCPU or
// without a known rate, nothing is added.
TEST_F(BuilderVmTest, TcgVcpusSkipTheirCalibration) {
  struct Case {
    int cpus;
    std::string args, want;
  } cases[] = {
      {2, "tsc_early_khz=2000000", "console=ttyS0 quiet panic=-1 reboot=t tsc_early_khz=2000000 tsc=reliable lpj=8000000"},
      {1, "tsc_early_khz=2000000", "console=ttyS0 quiet panic=-1 reboot=t tsc_early_khz=2000000"},
      {2, "x=1", "console=ttyS0 quiet panic=-1 reboot=t x=1"},
  };
  for (const Case& c : cases) {
    options_.cpus = c.cpus;
    options_.kernel_args = c.args;
    {
      auto vm = BuilderVm::Boot(options_, boot_);
      ASSERT_TRUE(vm.ok()) << vm.error().message();
      auto hello = vm->channel().Receive(std::chrono::seconds(10));
      ASSERT_TRUE(hello.ok()) << hello.error().message();
      auto a = FakeArgv();
      EXPECT_EQ(std::count(a.begin(), a.end(), c.want), 1) << c.want;
      auto smp = std::find(a.begin(), a.end(), "-smp");
      ASSERT_NE(smp, a.end());
      EXPECT_EQ(*(smp + 1), std::to_string(c.cpus));
      vm->PowerOff(Clock::now() + std::chrono::seconds(10));
    }
  }
}

TEST_F(BuilderVmTest, PowerOffKillsAGuestThatDoesNotStop) {
  ::setenv("FAKE_QEMU_MODE", "deaf", 1);
  auto vm = BuilderVm::Boot(options_, boot_);
  ASSERT_TRUE(vm.ok()) << vm.error().message();
  auto start = Clock::now();
  ExitStatus st = vm->PowerOff(Clock::now() + std::chrono::milliseconds(300));
  EXPECT_EQ(st.signal, SIGKILL);
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5));
  EXPECT_FALSE(vm->process().running());
  EXPECT_EQ(Children(), "");
}

TEST_F(BuilderVmTest, AQemuThatExitsAtStartIsNamedAndLeavesNothing) {
  ::setenv("FAKE_QEMU_MODE", "exit", 1);
  auto vm = BuilderVm::Boot(options_, boot_);
  ASSERT_FALSE(vm.ok());
  const std::string& m = vm.error().message();
  EXPECT_EQ(m.rfind("the test VM exited at start (exited with code 3)", 0), 0u) << m;
  EXPECT_NE(m.find("QEMU:\nfake qemu: refusing to start"), std::string::npos) << m;
  EXPECT_EQ(Children(), "");
  EXPECT_TRUE(Entries(tmp_ + "/scratch").empty());
}

TEST_F(BuilderVmTest, TheDeadlineKillsAQemuThatNeverConnects) {
  ::setenv("FAKE_QEMU_MODE", "hang", 1);
  boot_.deadline = Clock::now() + std::chrono::milliseconds(300);
  auto vm = BuilderVm::Boot(options_, boot_);
  ASSERT_FALSE(vm.ok());
  EXPECT_EQ(vm.error().message().rfind("the test VM did not start in time", 0), 0u) << vm.error().message();
  EXPECT_EQ(Children(), "");
  EXPECT_TRUE(Entries(tmp_ + "/scratch").empty());
}

TEST_F(BuilderVmTest, AMissingQemuIsAnErrorWithNothingLeft) {
  options_.qemu = tmp_ + "/no-such-qemu";
  auto vm = BuilderVm::Boot(options_, boot_);
  ASSERT_FALSE(vm.ok());
  EXPECT_EQ(Children(), "");
  EXPECT_TRUE(Entries(tmp_ + "/scratch").empty());
}

TEST(BoundedGuestTextTest, ReplacesControlBytesAndBounds) {
  EXPECT_EQ(BoundedGuestText("ok\nline\x1b[2J\x7f"), "ok\nline?[2J?");
  std::string big(3000, 'a');
  std::string out = BoundedGuestText(big);
  EXPECT_EQ(out.size(), 2003u);
  EXPECT_EQ(out.substr(2000), "...");
}

TEST(GuestLogTailTest, LastLinesOfAHugeLogReadFromItsEndOnly) {
  char tmpl[] = "/tmp/msb-tail-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  std::string path = std::string(tmpl) + "/console.log";
  EXPECT_EQ(GuestLogTail(path, 3), "");  // missing
  // 64 MiB of one line, then three short ones with a control byte.
  {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
    ASSERT_TRUE(fd);
    std::string chunk(1 << 20, 'x');
    for (int i = 0; i < 64; ++i) ASSERT_TRUE(WriteAll(fd.get(), chunk).ok());
    ASSERT_TRUE(WriteAll(fd.get(), "\none\ntwo\x1b\nthree\n").ok());
  }
  EXPECT_EQ(GuestLogTail(path, 2), "two?\nthree\n");
  // More lines asked than the last 16 KiB hold: what is there, bounded.
  std::string all = GuestLogTail(path, 100);
  EXPECT_EQ(all.size(), 2003u);
  EXPECT_EQ(all.substr(0, 4), "...x");
  EXPECT_EQ(all.substr(all.size() - 16), "\none\ntwo?\nthree\n");
  std::filesystem::remove_all(tmpl);
}

TEST(LastLinesTest, CountsLinesFromTheEnd) {
  EXPECT_EQ(LastLines("a\nb\nc\n", 2), "b\nc\n");
  EXPECT_EQ(LastLines("a\nb\nc", 2), "b\nc");
  EXPECT_EQ(LastLines("a\nb\n", 5), "a\nb\n");
  EXPECT_EQ(LastLines("", 3), "");
}

}  // namespace
}  // namespace msb::vm
