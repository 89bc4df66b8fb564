// Tests of vm/kernel.h: the cache key, the config check, FindKernel's lookup
// order and its missing-kernel message. Builds no kernel.
#include "vm/kernel.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>

#include "common/io.h"

namespace msb::vm {
namespace {

// Sets an environment variable for the scope of the object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const std::optional<std::string>& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    if (value) {
      ::setenv(name, value->c_str(), 1);
    } else {
      ::unsetenv(name);
    }
  }
  ~ScopedEnv() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};

class TempDir {
 public:
  TempDir() {
    std::string tmpl = std::filesystem::temp_directory_path().string() + "/msb-kernel-test-XXXXXX";
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(KernelCacheKey, IsStableHexSha256) {
  std::string a = KernelCacheKey("6.1.192-2", "CONFIG_NET=y\n");
  EXPECT_EQ(a, KernelCacheKey("6.1.192-2", "CONFIG_NET=y\n"));
  ASSERT_EQ(a.size(), 64u);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos);
}

TEST(KernelCacheKey, ChangesWithFragmentAndVersion) {
  std::string base = KernelCacheKey("6.1.192-2", "CONFIG_NET=y\n");
  EXPECT_NE(base, KernelCacheKey("6.1.192-2", "CONFIG_NET=y\nCONFIG_INET=y\n"));
  EXPECT_NE(base, KernelCacheKey("6.1.192-2", "CONFIG_NET=y \n"));
  EXPECT_NE(base, KernelCacheKey("6.1.193-1", "CONFIG_NET=y\n"));
  // The boundary between version and fragment is part of the key.
  EXPECT_NE(KernelCacheKey("6.1", "1CONFIG_NET=y\n"), KernelCacheKey("6.11", "CONFIG_NET=y\n"));
}

TEST(KernelConfigFragment, IsTheCheckedInFile) {
  auto file = ReadFile(std::string(MSB_TEST_SOURCE_DIR) + "/vm/kernel.config");
  ASSERT_TRUE(file.ok()) << file.error().message();
  EXPECT_EQ(*file, KernelConfigFragment());
}

TEST(KernelConfigFragment, AsksForWhatTheGuestNeeds) {
  std::string_view f = KernelConfigFragment();
  for (const char* opt : {"CONFIG_64BIT=y", "CONFIG_PVH=y", "CONFIG_KERNEL_LZ4=y",
                          "CONFIG_VIRTIO_MMIO=y", "CONFIG_VIRTIO_BLK=y", "CONFIG_VIRTIO_NET=y",
                          "CONFIG_VIRTIO_CONSOLE=y", "CONFIG_VIRTIO_FS=y", "CONFIG_OVERLAY_FS=y",
                          "CONFIG_EXT4_FS=y", "CONFIG_SERIAL_8250_CONSOLE=y",
                          "CONFIG_BLK_DEV_INITRD=y", "CONFIG_DEVTMPFS_MOUNT=y",
                          "CONFIG_HW_RANDOM_VIRTIO=y", "CONFIG_SECCOMP_FILTER=y",
                          "# CONFIG_MODULES is not set", "CONFIG_ACPI=y", "CONFIG_PCI=y"}) {
    EXPECT_NE(f.find(std::string(opt) + "\n"), std::string_view::npos) << opt;
  }
}

TEST(CheckKernelConfig, AcceptsAConfigThatHonoursTheFragment) {
  std::string fragment = "# comment\nCONFIG_NET=y\nCONFIG_NR_CPUS=64\n# CONFIG_PCI is not set\n";
  std::string dot = "CONFIG_NET=y\nCONFIG_INET=y\nCONFIG_NR_CPUS=64\n# CONFIG_PCI is not set\n";
  EXPECT_TRUE(CheckKernelConfig(fragment, dot).ok());
  // An option absent from .config counts as "not set".
  EXPECT_TRUE(CheckKernelConfig("# CONFIG_PCI is not set\n", "CONFIG_NET=y\n").ok());
}

TEST(CheckKernelConfig, NamesEveryDroppedOrChangedOption) {
  std::string fragment = "CONFIG_NET=y\nCONFIG_EROFS_FS=y\nCONFIG_NR_CPUS=64\n# CONFIG_PCI is not set\n";
  std::string dot = "CONFIG_NET=y\n# CONFIG_EROFS_FS is not set\nCONFIG_NR_CPUS=8\nCONFIG_PCI=y\n";
  auto st = CheckKernelConfig(fragment, dot);
  ASSERT_FALSE(st.ok());
  const std::string& m = st.error().message();
  EXPECT_NE(m.find("CONFIG_EROFS_FS: asked for y, got n"), std::string::npos) << m;
  EXPECT_NE(m.find("CONFIG_NR_CPUS: asked for 64, got 8"), std::string::npos) << m;
  EXPECT_NE(m.find("CONFIG_PCI: asked for n, got y"), std::string::npos) << m;
  EXPECT_EQ(m.find("CONFIG_NET:"), std::string::npos) << m;
}

TEST(CheckKernelConfig, ReportsAnOptionMissingFromDotConfig) {
  auto st = CheckKernelConfig("CONFIG_NO_SUCH_THING=y\n", "CONFIG_NET=y\n");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("CONFIG_NO_SUCH_THING: asked for y, got unset"),
            std::string::npos)
      << st.error().message();
}

TEST(FindKernel, MissingKernelSaysHowToBuildIt) {
  TempDir home;
  ScopedEnv h("MSB_HOME", home.path());
  ScopedEnv k(kKernelEnv, std::nullopt);
  auto r = FindKernel();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), "no guest kernel found; build it with: msb kernel build");
  EXPECT_EQ(r.error().code(), ErrorCode::kNotFound);
}

TEST(FindKernel, EnvironmentOverrideWins) {
  TempDir home;
  ScopedEnv h("MSB_HOME", home.path());
  std::string mine = home.path() + "/my-vmlinux";
  ASSERT_TRUE(WriteFileAtomic(mine, "not really a kernel").ok());
  ScopedEnv k(kKernelEnv, mine);
  auto r = FindKernel();
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(*r, mine);
}

TEST(FindKernel, EnvironmentOverrideMustExist) {
  TempDir home;
  ScopedEnv h("MSB_HOME", home.path());
  ScopedEnv k(kKernelEnv, home.path() + "/nothing-here");
  auto r = FindKernel();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("MSB_KERNEL=" + home.path() + "/nothing-here"),
            std::string::npos)
      << r.error().message();
}

TEST(FindKernel, EmptyOverrideMeansUnset) {
  TempDir home;
  ScopedEnv h("MSB_HOME", home.path());
  ScopedEnv k(kKernelEnv, std::string());
  auto r = FindKernel();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().message(), kNoKernelMessage);
}

// Lays out a finished cache entry for the embedded fragment, the way
// BuildKernel leaves it, and returns the image path.
std::string FakeCachedBuild(const std::string& home, const std::string& version) {
  std::string dir = home + "/kernels/" + KernelCacheKey(version, KernelConfigFragment());
  EXPECT_TRUE(MakeDirs(dir).ok());
  EXPECT_TRUE(WriteFileAtomic(dir + "/vmlinux", "fake").ok());
  EXPECT_TRUE(WriteFileAtomic(dir + "/bzImage", "fake").ok());
  EXPECT_TRUE(WriteFileAtomic(dir + "/fragment", KernelConfigFragment()).ok());
  EXPECT_TRUE(WriteFileAtomic(dir + "/source-version", version + "\n").ok());
  return dir + "/vmlinux";
}

TEST(FindKernel, FindsTheCachedBuildOfThisFragment) {
  TempDir home;
  ScopedEnv h("MSB_HOME", home.path());
  ScopedEnv k(kKernelEnv, std::nullopt);
  auto version = KernelSourceVersion();
  std::string image = FakeCachedBuild(home.path(), version.ok() ? *version : "unknown");
  auto r = FindKernel();
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(*r, image);
}

TEST(FindKernel, IgnoresBuildsOfAnotherFragmentOrUnfinishedOnes) {
  TempDir home;
  ScopedEnv h("MSB_HOME", home.path());
  ScopedEnv k(kKernelEnv, std::nullopt);
  auto version = KernelSourceVersion();
  std::string v = version.ok() ? *version : "unknown";
  // Another fragment's build.
  std::string other = home.path() + "/kernels/" + KernelCacheKey(v, "CONFIG_OTHER=y\n");
  ASSERT_TRUE(MakeDirs(other).ok());
  ASSERT_TRUE(WriteFileAtomic(other + "/vmlinux", "fake").ok());
  ASSERT_TRUE(WriteFileAtomic(other + "/fragment", "CONFIG_OTHER=y\n").ok());
  // An interrupted build of this fragment.
  std::string key = KernelCacheKey(v, KernelConfigFragment());
  std::string partial = home.path() + "/kernels/.build-" + key + "-abc123/result";
  ASSERT_TRUE(MakeDirs(partial).ok());
  ASSERT_TRUE(WriteFileAtomic(partial + "/vmlinux", "half").ok());
  auto r = FindKernel();
  ASSERT_FALSE(r.ok()) << *r;
  EXPECT_EQ(r.error().message(), kNoKernelMessage);
}

TEST(BuildKernel, ReturnsACachedBuildAtOnce) {
  auto version = KernelSourceVersion();
  if (!version.ok()) GTEST_SKIP() << version.error().message();
  TempDir home;
  ScopedEnv h("MSB_HOME", home.path());
  ScopedEnv k(kKernelEnv, std::nullopt);
  std::string image = FakeCachedBuild(home.path(), *version);
  std::string said;
  KernelBuildOptions opts;
  opts.progress = [&](std::string_view line) { said += std::string(line) + "\n"; };
  auto start = std::chrono::steady_clock::now();
  auto r = BuildKernel(opts);
  auto took = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(*r, image);
  EXPECT_NE(said.find("cached"), std::string::npos) << said;
  EXPECT_LT(took, std::chrono::seconds(1));
}

TEST(HostTscKhz, IsAPlausibleClockRate) {
  auto khz = HostTscKhz();
  if (!khz.ok()) GTEST_SKIP() << khz.error().message();
  EXPECT_GT(*khz, 100'000);     // 100 MHz
  EXPECT_LT(*khz, 10'000'000);  // 10 GHz
  auto again = HostTscKhz();
  ASSERT_TRUE(again.ok());
  // Two measurements agree to 1% even on a busy machine.
  EXPECT_NEAR(static_cast<double>(*again), static_cast<double>(*khz), *khz / 100.0);
  EXPECT_EQ(TscKernelArg().rfind("tsc_early_khz=", 0), 0u);
}

}  // namespace
}  // namespace msb::vm
