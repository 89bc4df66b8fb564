// Booting Debian's cloud kernel (scripts/fetch-debian-kernel) when the tuned
// guest kernel is not built: msb finds it under $MSB_HOME/kernels/debian,
// says so once, puts the guest's modules in the initramfs, and agentd loads
// them before it mounts the root (virtio-blk), the agent port
// (virtio-console), the network (virtio-net) and the overlay root.
#include <filesystem>
#include <string>

#include "tests/integration/harness.h"

namespace msb::testing {
namespace {

using ::testing::HasSubstr;

class DebianKernelTest : public MsbTest {
 protected:
  void SetUp() override {
    const char* dir = std::getenv("MSB_TEST_DEBIAN_KERNEL");
    if (dir == nullptr || *dir == '\0') {
      GTEST_SKIP() << "MSB_TEST_DEBIAN_KERNEL is not set: scripts/test sets it to what "
                      "scripts/fetch-debian-kernel fetched";
    }
    version_ = std::filesystem::path(dir).filename().string();
    // The harness wants a kernel; this test needs only Debian's.
    ::setenv("MSB_KERNEL", (std::string(dir) + "/boot/vmlinuz-" + version_).c_str(), 1);
    MsbTest::SetUp();
    if (HasFatalFailure() || IsSkipped()) return;
    // A fresh home with no tuned kernel and Debian's as the one fetched.
    std::filesystem::create_directories(Home() + "/kernels/debian");
    std::filesystem::create_directory_symlink(std::filesystem::canonical(dir),
                                              Home() + "/kernels/debian/" + version_);
    env_.erase("MSB_KERNEL");
    ::unsetenv("MSB_KERNEL");
  }
  std::string version_;
};

TEST_F(DebianKernelTest, ASandboxBootsItWithTheModulesItNeeds) {
  auto r = Msb({"run", Rootfs(), "--", "sh", "-c",
                "uname -r; cut -d' ' -f1 /proc/modules; ls /sys/class/net; "
                "grep ' / ' /proc/mounts | cut -d' ' -f3"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr(version_ + "\n"));
  for (const char* m : {"virtio_mmio", "virtio_blk", "virtio_net", "virtio_console", "virtiofs", "overlay"}) {
    EXPECT_THAT(r.out, HasSubstr(std::string(m) + "\n")) << m;
  }
  EXPECT_THAT(r.out, HasSubstr("eth0\n"));
  EXPECT_THAT(r.out, HasSubstr("overlay\n"));
  // One note, naming the version and how to get the tuned kernel.
  EXPECT_THAT(r.err, HasSubstr("booting Debian's kernel " + version_));
  EXPECT_THAT(r.err, HasSubstr("msb kernel build"));
  EXPECT_EQ(r.err.find("booting Debian's kernel"), r.err.rfind("booting Debian's kernel")) << r.err;
}

}  // namespace
}  // namespace msb::testing
