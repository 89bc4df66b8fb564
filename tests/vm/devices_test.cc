// Volume disks and virtio-fs shares on the QEMU command line, and the
// virtiofsd children: the listening socket on fd 3, the read-only view of a
// `:ro` share (checked with a stand-in daemon that tries to write), and that
// none outlives its owner.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "common/io.h"
#include "schema/model.h"
#include "vm/spec.h"
#include "vm/virtiofs.h"

namespace msb::vm {
namespace {

namespace fs = std::filesystem;

VmSpec BaseSpec() {
  VmSpec s;
  s.dir = "/run/sb";
  s.kernel = "/k";
  s.initramfs = "/i";
  s.base_disk = "/base.ext4";
  s.upper_disk = "/run/sb/upper.ext4";
  return s;
}

// The virtio-mmio devices a command line asks for (each takes one transport).
int VirtioDevices(const std::vector<std::string>& argv) {
  int n = 0;
  for (size_t i = 0; i + 1 < argv.size(); ++i) {
    if (argv[i] != "-device") continue;
    const std::string& d = argv[i + 1];
    // virtserialport sits on virtio-serial-device's bus, not on a transport.
    if (d.rfind("virtio-", 0) == 0 || d.rfind("vhost-user-", 0) == 0) ++n;
  }
  return n;
}

TEST(DevicesTest, VolumesAndSharesOnTheCommandLine) {
  VmSpec s = BaseSpec();
  s.volumes = {{"/home/v/data.ext4", VolumeSerial(0), false}, {"/home/v/a,b.ext4", VolumeSerial(1), true}};
  s.shares = {{"/src", ShareTag(0), false}, {"/cfg", ShareTag(1), true}};
  auto a = QemuArgv(s, "qemu");
  auto has = [&](const std::string& x) { return std::find(a.begin(), a.end(), x) != a.end(); };
  EXPECT_TRUE(has("id=vol0,file=/home/v/data.ext4,format=raw,if=none,discard=unmap"));
  EXPECT_TRUE(has("virtio-blk-device,drive=vol0,serial=msb-vol-0"));
  EXPECT_TRUE(has("id=vol1,file=/home/v/a,,b.ext4,format=raw,if=none,readonly=on"));
  EXPECT_TRUE(has("socket,id=fs0,path=/run/sb/fs0.sock"));
  EXPECT_TRUE(has("vhost-user-fs-device,chardev=fs0,tag=msbfs0"));
  EXPECT_TRUE(has("vhost-user-fs-device,chardev=fs1,tag=msbfs1"));
  // Serials fit virtio-blk's 20 bytes for every index a sandbox can have.
  EXPECT_LE(VolumeSerial(schema::kMaxMounts).size(), 20u);
}

TEST(DevicesTest, TheMostMountsASandboxMayHaveFitMicrovmsTransports) {
  VmSpec s = BaseSpec();
  // msb's own devices (base, upper, virtio-serial, rng, later the network)
  // stay within what the schema reserves for them.
  const int system = VirtioDevices(QemuArgv(s, "qemu"));
  EXPECT_LE(system, schema::kSystemDevices);
  for (int i = 0; i < schema::kMaxMounts; ++i) {
    if (i % 2 == 0) s.volumes.push_back({"/v" + std::to_string(i), VolumeSerial(s.volumes.size()), false});
    else s.shares.push_back({"/s" + std::to_string(i), ShareTag(s.shares.size()), false});
  }
  const int all = VirtioDevices(QemuArgv(s, "qemu"));
  EXPECT_EQ(all, system + schema::kMaxMounts);
  EXPECT_LE(all, schema::kVirtioTransports);
}

TEST(DevicesTest, SpecJsonRoundTripsAndOldSpecsHaveNone) {
  VmSpec s = BaseSpec();
  s.volumes = {{"/d.ext4", "msb-vol-0", true}};
  s.shares = {{"/src", "msbfs0", true}};
  auto back = VmSpecFromJson(ToJson(s));
  ASSERT_TRUE(back.ok()) << back.error().message();
  ASSERT_EQ(back->volumes.size(), 1u);
  EXPECT_EQ(back->volumes[0].path, "/d.ext4");
  EXPECT_TRUE(back->volumes[0].read_only);
  ASSERT_EQ(back->shares.size(), 1u);
  EXPECT_EQ(back->shares[0].tag, "msbfs0");
  auto j = ToJson(s);
  j.erase("volumes");
  j.erase("shares");
  auto old = VmSpecFromJson(j);
  ASSERT_TRUE(old.ok());
  EXPECT_TRUE(old->volumes.empty());
  EXPECT_TRUE(old->shares.empty());
  j["shares"] = "nonsense";
  EXPECT_FALSE(VmSpecFromJson(j).ok());
}

TEST(DevicesTest, VirtiofsdArgvEscapesTheSource) {
  auto a = VirtiofsdArgv("/usr/lib/qemu/virtiofsd", {"/a,b\\c", "msbfs0", true}, 3);
  ASSERT_GE(a.size(), 4u);
  EXPECT_EQ(a[1], "--fd=3");
  EXPECT_EQ(a[2], "-o");
  EXPECT_EQ(a[3], "source=/a\\,b\\\\c");
  EXPECT_NE(std::find(a.begin(), a.end(), "modcaps=-mknod"), a.end());
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/msb-virtiofs-test-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { fs::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A stand-in for virtiofsd: reports whether fd 3 is a listening socket and
// whether it can write into its source, then waits for a connection on fd 3
// and exits when the peer closes it (as virtiofsd does).
constexpr const char* kFakeDaemon = R"sh(#!/bin/sh
src=""
for a in "$@"; do case "$a" in source=*) src="${a#source=}";; esac; done
report="$src.report"
case "$(readlink /proc/self/fd/3)" in socket:*) echo "fd3 socket";; *) echo "fd3 missing";; esac > "$report.tmp"
if echo changed > "$src/file" 2>/dev/null; then echo "write ok" >> "$report.tmp"; else echo "write refused" >> "$report.tmp"; fi
mv "$report.tmp" "$report"
exec sleep 600
)sh";

bool WaitFor(const std::string& path, int deadline_ms) {
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(deadline_ms);
  while (std::chrono::steady_clock::now() < end) {
    if (::access(path.c_str(), F_OK) == 0) return true;
    ::poll(nullptr, 0, 20);
  }
  return ::access(path.c_str(), F_OK) == 0;
}

class VirtiofsDaemonsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fake_ = tmp_.path() + "/fake-virtiofsd";
    ASSERT_TRUE(WriteFileAtomic(fake_, kFakeDaemon, 0755).ok());
    ::setenv("MSB_VIRTIOFSD", fake_.c_str(), 1);
    // The reports land beside each shared directory, outside it.
    for (const char* d : {"ro", "rw"}) {
      ASSERT_TRUE(MakeDirs(tmp_.path() + "/" + d).ok());
      ASSERT_TRUE(WriteFileAtomic(tmp_.path() + "/" + d + "/file", "original\n").ok());
    }
  }
  void TearDown() override { ::unsetenv("MSB_VIRTIOFSD"); }
  TempDir tmp_;
  std::string fake_;
};

TEST_F(VirtiofsDaemonsTest, ReadOnlySharesAreReadOnlyForTheDaemonOnly) {
  if (::geteuid() != 0) GTEST_SKIP() << "a private mount namespace needs root";
  VirtiofsDaemons d;
  std::vector<VmShare> shares = {{tmp_.path() + "/ro", "msbfs0", true},
                                 {tmp_.path() + "/rw", "msbfs1", false}};
  ASSERT_TRUE(d.Start(shares, tmp_.path(), tmp_.path() + "/virtiofsd.log").ok());
  ASSERT_EQ(d.Pids().size(), 2u);
  ASSERT_TRUE(WaitFor(tmp_.path() + "/ro.report", 10000));
  ASSERT_TRUE(WaitFor(tmp_.path() + "/rw.report", 10000));
  EXPECT_EQ(*ReadFile(tmp_.path() + "/ro.report"), "fd3 socket\nwrite refused\n");
  EXPECT_EQ(*ReadFile(tmp_.path() + "/rw.report"), "fd3 socket\nwrite ok\n");
  EXPECT_EQ(*ReadFile(tmp_.path() + "/ro/file"), "original\n");
  EXPECT_EQ(*ReadFile(tmp_.path() + "/rw/file"), "changed\n");
  // The read-only view was private to the daemon: the host can still write.
  EXPECT_TRUE(WriteFileAtomic(tmp_.path() + "/ro/file", "host\n").ok());
  // The sockets exist where QEMU looks for them.
  struct stat st;
  ASSERT_EQ(::stat(ShareSocket(tmp_.path(), 0).c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  auto pids = d.Pids();
  d.Stop();
  for (pid_t p : pids) EXPECT_NE(::kill(p, 0), 0);
  EXPECT_TRUE(d.Reap().empty());
}

TEST_F(VirtiofsDaemonsTest, ADaemonThatExitsIsReapedAndNamed) {
  ASSERT_TRUE(WriteFileAtomic(fake_, "#!/bin/sh\nexit 7\n", 0755).ok());
  VirtiofsDaemons d;
  ASSERT_TRUE(d.Start({{tmp_.path() + "/rw", "msbfs0", false}}, tmp_.path(), tmp_.path() + "/log").ok());
  std::vector<std::string> gone;
  auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (gone.empty() && std::chrono::steady_clock::now() < end) {
    gone = d.Reap();
    if (gone.empty()) ::poll(nullptr, 0, 20);
  }
  ASSERT_EQ(gone.size(), 1u);
  EXPECT_EQ(gone[0], "virtiofsd for " + tmp_.path() + "/rw exited with code 7");
}

TEST_F(VirtiofsDaemonsTest, RefusesAFileAndAMissingSource) {
  VirtiofsDaemons d;
  auto st = d.Start({{tmp_.path() + "/rw/file", "msbfs0", false}}, tmp_.path(), tmp_.path() + "/log");
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("is not a directory"), std::string::npos);
  // The first share started and the second failed: none is left running.
  st = d.Start({{tmp_.path() + "/rw", "msbfs0", false}, {tmp_.path() + "/missing", "msbfs1", false}},
               tmp_.path(), tmp_.path() + "/log");
  ASSERT_FALSE(st.ok());
  EXPECT_TRUE(d.Pids().empty());
}

}  // namespace
}  // namespace msb::vm
