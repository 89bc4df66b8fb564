// The jail of every VMM and file server (vm/jail.h), read from /proc on real
// microVMs started by `msb up`, `msb restart` and `msb run`: QEMU and each
// virtiofsd run as ids other than root's, with no capabilities, no_new_privs,
// a seccomp filter, their own network, mount and PID namespaces, and a root
// that holds only the sandbox's files. And the guest's ids never become host
// ids: what it creates on a read-write share belongs to the share's owner,
// never setuid, never a device.
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include "common/io.h"
#include "tests/integration/harness.h"

namespace msb::testing {
namespace {

using ::testing::HasSubstr;

// The contents of /proc/<pid>/<name>; "" when the process is gone.
std::string ProcFile(int pid, const std::string& name) {
  auto text = ReadFile("/proc/" + std::to_string(pid) + "/" + name);
  return text.ok() ? *text : "";
}

std::string Ns(int pid, const std::string& kind) {
  std::error_code ec;
  return std::filesystem::read_symlink("/proc/" + std::to_string(pid) + "/ns/" + kind, ec).string();
}

// Every non-directory a process's root holds, outside /proc, /dev and the
// system's programs and libraries (/usr and its links).
std::set<std::string> RootFiles(int pid) {
  namespace fs = std::filesystem;
  const std::string root = "/proc/" + std::to_string(pid) + "/root";
  std::set<std::string> out;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string p = it->path().string().substr(root.size());
    if (p == "/proc" || p == "/usr" || p == "/dev") {
      it.disable_recursion_pending();
      continue;
    }
    std::error_code e2;
    if (!it->is_directory(e2) && !it->is_symlink(e2)) out.insert(p);
  }
  return out;
}

class JailTest : public ProjectTest {
 protected:
  // The truths every VMM and file server must show.
  void ExpectConfined(int pid, const std::string& what) {
    auto st = ProcStatus(pid);
    ASSERT_FALSE(st.empty()) << what << " " << pid << " is gone";
    EXPECT_EQ(st["CapEff"], "0000000000000000") << what;
    EXPECT_EQ(st["CapPrm"], "0000000000000000") << what;
    EXPECT_EQ(st["CapBnd"], "0000000000000000") << what;
    EXPECT_EQ(st["NoNewPrivs"], "1") << what;
    EXPECT_EQ(st["Seccomp"], "2") << what;
    for (const char* ns : {"net", "mnt", "ipc"})
      EXPECT_NE(Ns(pid, ns), Ns(::getpid(), ns)) << what << " shares the host's " << ns << " namespace";
  }
  // QEMU of the sandbox whose directory is `dir`: not root, and a root that
  // holds that sandbox's files and what it boots, nothing else of the host.
  void ExpectQemuJailed(int pid) {
    const std::string cmd = ProcFile(pid, "cmdline");
    const std::string prefix = Home() + "/sandboxes/";
    size_t at = cmd.find(prefix);
    ASSERT_NE(at, std::string::npos) << cmd;
    const std::string dir = cmd.substr(at, cmd.find('/', at + prefix.size()) - at);
    SCOPED_TRACE("QEMU " + std::to_string(pid) + " of " + dir);
    ExpectConfined(pid, "QEMU");
    auto st = ProcStatus(pid);
    EXPECT_NE(st["Uid"].rfind("0\t", 0), 0u) << st["Uid"];
    EXPECT_NE(st["Gid"].rfind("0\t", 0), 0u) << st["Gid"];
    EXPECT_EQ(st["Groups"], "");
    EXPECT_NE(Ns(pid, "pid"), Ns(::getpid(), "pid"));
    auto files = RootFiles(pid);
    EXPECT_EQ(files.count(dir + "/upper.ext4"), 1u) << ::testing::PrintToString(files);
    for (const std::string& f : files) {
      const bool own = f.rfind(dir + "/", 0) == 0;
      const bool boots = f.rfind(Home() + "/images/", 0) == 0 || f.rfind(Home() + "/initramfs/", 0) == 0 ||
                         f.rfind(Home() + "/volumes/", 0) == 0 || f.find("/kernels/") != std::string::npos;
      EXPECT_TRUE(own || boots || f == "/etc/ld.so.cache") << f << " is in QEMU's jail";
    }
  }
  // Every QEMU and virtiofsd of this test's home.
  void ExpectAllJailed(size_t qemus, size_t file_servers) {
    auto q = MyQemus();
    EXPECT_EQ(q.size(), qemus);
    for (int pid : q) ExpectQemuJailed(pid);
    auto v = Mine("virtiofsd");
    // virtiofsd forks once into its own sandbox: two processes a share.
    EXPECT_EQ(v.size(), 2 * file_servers);
    for (int pid : v) ExpectConfined(pid, "virtiofsd " + std::to_string(pid));
  }
  MsbResult Exec(const std::string& name, const std::string& script) {
    return Msb({"exec", name, "--", "/bin/sh", "-c", script});
  }
};

TEST_F(JailTest, EveryVmmAndFileServerOfUpRestartAndRunIsJailed) {
  ASSERT_TRUE(MakeDirs(project_ + "/rw").ok());
  ASSERT_TRUE(MakeDirs(project_ + "/ro").ok());
  WriteSandboxfile("name: jail\nsandboxes:\n  a:\n    image: " + Rootfs() +
                   "\n    memory: 128M\n    command: " + std::string(kKeepAliveCommand) + "\n"
                   "    volumes:\n      - ./rw:/rw\n      - ./ro:/ro:ro\n      - data:/data\n"
                   "  b:\n    image: " + Rootfs() +
                   "\n    memory: 128M\n    command: " + std::string(kKeepAliveCommand) + "\n"
                   "volumes:\n  data: { size: 64M }\n");
  auto up = InProject({"up"});
  ASSERT_EQ(up.code, 0) << up.err;
  {
    SCOPED_TRACE("after up");
    ExpectAllJailed(2, 2);
  }
  // Two sandboxes, two jails: neither QEMU sees the other's disk.
  auto q = MyQemus();
  ASSERT_EQ(q.size(), 2u);
  EXPECT_NE(ProcStatus(q[0])["Uid"], ProcStatus(q[1])["Uid"]);

  auto restarted = Msb({"restart", "jail/a"});
  ASSERT_EQ(restarted.code, 0) << restarted.err;
  {
    SCOPED_TRACE("after restart");
    ExpectAllJailed(2, 2);
  }

  auto run = Msb({"run", "-q", "--keep", "--name", "solo", Rootfs(), "--", "true"});
  ASSERT_EQ(run.code, 0) << run.err;
  {
    SCOPED_TRACE("after run");
    ExpectAllJailed(3, 2);
  }
  EXPECT_EQ(Msb({"rm", "solo"}).code, 0);
  EXPECT_EQ(InProject({"down"}).code, 0);
}

TEST_F(JailTest, GuestIdsNeverBecomeHostIds) {
  const std::string rw = project_ + "/rw";
  ASSERT_TRUE(MakeDirs(rw).ok());
  ASSERT_EQ(::chown(rw.c_str(), 4242, 4343), 0);
  WriteSandboxfile("name: ids\nsandboxes:\n  a:\n    image: " + Rootfs() +
                   "\n    memory: 128M\n    command: " + std::string(kKeepAliveCommand) + "\n"
                   "    volumes:\n      - ./rw:/rw\n");
  auto up = InProject({"up"});
  ASSERT_EQ(up.code, 0) << up.err;
  // The guest's root copies a program in and tries every way to make it a
  // host identity: setuid and setgid bits, another owner, a device node.
  auto r = Exec("a",
                "cp /bin/busybox /rw/x; echo cp $?; chmod 4755 /rw/x; echo chmod4755 $?; "
                "chmod 2755 /rw/x; echo chmod2755 $?; chown 1234:1234 /rw/x; echo chown $?; "
                "chown 0:0 /rw/x; echo chown0 $?; mknod /rw/disk b 8 0; echo mknod $?; "
                "mkdir /rw/d; chmod 2777 /rw/d; echo chmoddir $?; touch /rw/d/f; echo touch $?; "
                "chmod 755 /rw/x; echo chmod755 $?");
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("cp 0\n"));
  EXPECT_THAT(r.out, HasSubstr("chmod4755 1\n"));
  EXPECT_THAT(r.out, HasSubstr("chmod2755 1\n"));
  EXPECT_THAT(r.out, HasSubstr("chown 1\n"));
  EXPECT_THAT(r.out, HasSubstr("mknod 1\n"));
  EXPECT_THAT(r.out, HasSubstr("chmoddir 1\n"));
  EXPECT_THAT(r.out, HasSubstr("touch 0\n"));
  EXPECT_THAT(r.out, HasSubstr("chmod755 0\n"));
  // On the host: the share's owner owns it all, no set-id bit, no device.
  for (const std::string& f : {rw + "/x", rw + "/d", rw + "/d/f"}) {
    struct stat st;
    ASSERT_EQ(::stat(f.c_str(), &st), 0) << f;
    EXPECT_EQ(st.st_uid, 4242u) << f;
    EXPECT_EQ(st.st_gid, 4343u) << f;
    EXPECT_EQ(st.st_mode & (S_ISUID | S_ISGID), 0u) << f;
  }
  struct stat dev;
  EXPECT_NE(::lstat((rw + "/disk").c_str(), &dev), 0);
  EXPECT_EQ(InProject({"down"}).code, 0);
}

}  // namespace
}  // namespace msb::testing
