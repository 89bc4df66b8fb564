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
  auto a = VirtiofsdArgv("/usr/lib/qemu/virtiofsd", "/a,b\\c", 3);
  ASSERT_GE(a.size(), 4u);
  EXPECT_EQ(a[1], "--fd=3");
  EXPECT_EQ(a[2], "-o");
  EXPECT_EQ(a[3], "source=/a\\,b\\\\c");
  // Every capability virtiofsd keeps by default is dropped.
  EXPECT_NE(std::find(a.begin(), a.end(),
                      "modcaps=-chown:-dac_override:-fowner:-fsetid:-setgid:-setuid:-mknod:-setfcap"),
            a.end());
  EXPECT_NE(std::find(a.begin(), a.end(), "--rlimit-nofile=0"), a.end());
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

// A stand-in for virtiofsd, run in the file server's jail: reports (into
// reports/ beside it, named after the share's `name` file) whether fd 3 is a
// listening socket and what it may do to its source, then waits as virtiofsd
// does.
constexpr const char* kFakeDaemon = R"sh(#!/bin/sh
src=""
for a in "$@"; do case "$a" in source=*) src="${a#source=}";; esac; done
report="$(dirname "$0")/reports/$(cat "$src/name").report"
{
case "$(readlink /proc/self/fd/3)" in socket:*) echo "fd3 socket";; *) echo "fd3 missing";; esac
if echo changed > "$src/file" 2>/dev/null; then echo "write ok"; else echo "write refused"; fi
if echo new > "$src/new" 2>/dev/null; then echo "create ok"; else echo "create refused"; fi
if chmod 4755 "$src/file" 2>/dev/null; then echo "setuid ok"; else echo "setuid refused"; fi
if chown 1234:1234 "$src/file" 2>/dev/null; then echo "chown ok"; else echo "chown refused"; fi
} > "$report.tmp"
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
    // The daemon runs as the share's owner: it must reach itself and the
    // reports directory.
    ASSERT_EQ(::chmod(tmp_.path().c_str(), 0755), 0);
    ASSERT_TRUE(MakeDirs(tmp_.path() + "/reports").ok());
    ASSERT_EQ(::chmod((tmp_.path() + "/reports").c_str(), 0777), 0);
    for (const char* d : {"ro", "rw"}) {
      ASSERT_TRUE(MakeDirs(tmp_.path() + "/" + d).ok());
      ASSERT_TRUE(WriteFileAtomic(tmp_.path() + "/" + d + "/file", "original\n").ok());
      ASSERT_TRUE(WriteFileAtomic(tmp_.path() + "/" + d + "/name", d).ok());
    }
  }
  void TearDown() override { ::unsetenv("MSB_VIRTIOFSD"); }
  TempDir tmp_;
  std::string fake_;
};

// A line of /proc/<pid>/status, as the host sees it ("Uid:\t0\t0\t0\t0").
std::string StatusLine(pid_t pid, const std::string& key) {
  auto text = ReadFile("/proc/" + std::to_string(pid) + "/status");
  if (!text.ok()) return "";
  size_t at = text->find("\n" + key + ":");
  if (at == std::string::npos) return "";
  size_t end = text->find('\n', at + 1);
  return text->substr(at + 1, end - at - 1);
}

TEST_F(VirtiofsDaemonsTest, EachDaemonIsJailedAsTheShareOwner) {
  if (::geteuid() != 0) GTEST_SKIP() << "serving a share as its owner needs root";
  // The writable share belongs to someone other than root.
  constexpr uid_t kOwner = 4242;
  for (const char* p : {"/rw", "/rw/file", "/rw/name"})
    ASSERT_EQ(::chown((tmp_.path() + p).c_str(), kOwner, kOwner), 0) << p;
  VirtiofsDaemons d;
  std::vector<VmShare> shares = {{tmp_.path() + "/ro", "msbfs0", true},
                                 {tmp_.path() + "/rw", "msbfs1", false}};
  ASSERT_TRUE(d.Start(shares, tmp_.path(), tmp_.path() + "/virtiofsd.log").ok());
  ASSERT_EQ(d.Pids().size(), 2u);
  ASSERT_TRUE(WaitFor(tmp_.path() + "/reports/ro.report", 10000)) << *ReadFile(tmp_.path() + "/virtiofsd.log");
  ASSERT_TRUE(WaitFor(tmp_.path() + "/reports/rw.report", 10000)) << *ReadFile(tmp_.path() + "/virtiofsd.log");
  // Read-only is the host's: nothing gets written.
  EXPECT_EQ(*ReadFile(tmp_.path() + "/reports/ro.report"),
            "fd3 socket\nwrite refused\ncreate refused\nsetuid refused\nchown refused\n");
  // Writable: the data lands, owned by the share's owner, without set-id bits
  // and without the guest's choice of owner.
  EXPECT_EQ(*ReadFile(tmp_.path() + "/reports/rw.report"),
            "fd3 socket\nwrite ok\ncreate ok\nsetuid refused\nchown refused\n");
  EXPECT_EQ(*ReadFile(tmp_.path() + "/ro/file"), "original\n");
  EXPECT_EQ(*ReadFile(tmp_.path() + "/rw/file"), "changed\n");
  for (const char* p : {"/rw/file", "/rw/new"}) {
    struct stat st;
    ASSERT_EQ(::stat((tmp_.path() + p).c_str(), &st), 0) << p;
    EXPECT_EQ(st.st_uid, kOwner) << p;
    EXPECT_EQ(st.st_gid, kOwner) << p;
    EXPECT_EQ(st.st_mode & (S_ISUID | S_ISGID), 0u) << p;
  }
  // The read-only view was private to the daemon: the host can still write.
  EXPECT_TRUE(WriteFileAtomic(tmp_.path() + "/ro/file", "host\n").ok());
  // What the host sees of the daemons: the owner's uid, no privilege gain,
  // a seccomp filter.
  auto pids = d.Pids();
  ASSERT_EQ(pids.size(), 2u);
  EXPECT_EQ(StatusLine(pids[0], "Uid"), "Uid:\t0\t0\t0\t0");
  EXPECT_EQ(StatusLine(pids[1], "Uid"), "Uid:\t4242\t4242\t4242\t4242");
  for (pid_t p : pids) {
    EXPECT_EQ(StatusLine(p, "NoNewPrivs"), "NoNewPrivs:\t1");
    EXPECT_EQ(StatusLine(p, "Seccomp"), "Seccomp:\t2");
    // Its own user namespace.
    EXPECT_NE(fs::read_symlink("/proc/" + std::to_string(p) + "/ns/user"), fs::read_symlink("/proc/self/ns/user"));
  }
  // The sockets exist where QEMU looks for them.
  struct stat st;
  ASSERT_EQ(::stat(ShareSocket(tmp_.path(), 0).c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
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
