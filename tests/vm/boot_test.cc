// Integration: boots the built guest kernel under TCG on the shared microvm
// command line (vm/qemu_cmdline.h) with an initramfs that BuildInitramfs made
// around a static test init (tests/vm/test_init.c), and checks the init's
// marker on the serial console and that QEMU exits by itself.
// Skipped when no kernel is built (msb kernel build).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/child.h"
#include "common/fd.h"
#include "vm/initramfs.h"
#include "vm/kernel.h"
#include "vm/qemu_cmdline.h"

namespace msb::vm {
namespace {

constexpr char kMarker[] = "msb-test-init: hello from the guest";
// Generous: a boot takes well under a second on an idle machine, but CI runs
// tests side by side on two cores.
constexpr auto kBootDeadline = std::chrono::seconds(90);

struct Boot {
  std::string output;
  std::optional<ExitStatus> status;  // unset when the deadline passed
};

Boot BootOnce(const std::string& kernel, const std::string& initrd) {
  int p[2];
  EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
  UniqueFd rd(p[0]), wr(p[1]);
  // The machine every VM of msb runs on, with the console on stdout.
  MicrovmConfig m;
  m.qemu = "qemu-system-x86_64";
  m.memory_mib = 256;
  m.kernel = kernel;
  m.initramfs = initrd;
  m.kernel_args = TscKernelArg();
  QemuCommandLine cmd = QemuCommandLine::ForMicrovm(m);
  cmd.AttachSerialStdio();
  SpawnOptions opts;
  opts.argv = std::move(cmd).TakeArgv();
  opts.stdin_fd = -2;
  opts.stdout_fd = wr.get();
  opts.stderr_fd = wr.get();
  auto child = ChildProcess::Spawn(opts);
  Boot boot;
  if (!child.ok()) {
    ADD_FAILURE() << child.error().message();
    return boot;
  }
  wr.Reset();
  auto deadline = std::chrono::steady_clock::now() + kBootDeadline;
  char buf[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return boot;  // ChildProcess kills QEMU
    struct pollfd pfd = {rd.get(), POLLIN, 0};
    int r = ::poll(&pfd, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    ssize_t n = ::read(rd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // QEMU closed its output: it is exiting
    boot.output.append(buf, static_cast<size_t>(n));
  }
  boot.status = child->Wait();
  return boot;
}

TEST(Boot, TrivialInitRunsAndPowersOff) {
  auto kernel = FindKernel();
  if (!kernel.ok()) GTEST_SKIP() << kernel.error().message();

  std::string tmpl = std::filesystem::temp_directory_path().string() + "/msb-boot-test-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
  const std::string dir = tmpl;
  const std::string initrd = dir + "/initramfs.cpio";
  auto st = BuildInitramfs(MSB_TEST_INIT, initrd);
  ASSERT_TRUE(st.ok()) << st.error().message();

  Boot boot = BootOnce(*kernel, initrd);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);

  ASSERT_TRUE(boot.status.has_value())
      << "QEMU did not exit within " << kBootDeadline.count() << " s; output:\n" << boot.output;
  EXPECT_NE(boot.output.find(kMarker), std::string::npos) << "output:\n" << boot.output;
  EXPECT_EQ(boot.status->ShellCode(), 0) << boot.status->ToString() << "\n" << boot.output;
  // A panic (e.g. init not found) would also end QEMU with panic=-1: rule it out.
  EXPECT_EQ(boot.output.find("Kernel panic"), std::string::npos) << boot.output;
}

}  // namespace
}  // namespace msb::vm
