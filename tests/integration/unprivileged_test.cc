// msb run by an ordinary user (README "What needs root"): a second local user
// with its own MSB_HOME brings up a sandbox with a read-write and a read-only
// bind mount, a named volume and a published port, execs into it, copies a
// file in, loads an image archive and runs it (a builder VM), and takes it
// all down. Its QEMU and virtiofsd run as that user with no capabilities;
// what the guest writes on the share belongs to that user; msb says once
// that the sandboxes have no cgroup limits.
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "common/io.h"
#include "tests/integration/harness.h"

namespace msb::testing {
namespace {

using ::testing::HasSubstr;

class UnprivilegedTest : public ProjectTest {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root: it runs msb as a second local user";
    ProjectTest::SetUp();
    if (IsSkipped()) return;
    passwd* pw = ::getpwnam("msbtest-user");
    if (pw == nullptr) {
      auto made = RunCapture({"useradd", "-r", "-M", "-s", "/usr/sbin/nologin", "msbtest-user"});
      ASSERT_TRUE(made.ok() && made->status.code == 0) << (made.ok() ? made->output : made.error().message());
      pw = ::getpwnam("msbtest-user");
    }
    ASSERT_NE(pw, nullptr);
    uid_ = pw->pw_uid;
    gid_ = pw->pw_gid;
    ASSERT_NE(uid_, 0u);
    // The user's own copy of the kernel: root's cache is not theirs to read.
    const std::string kernel = Home() + "/vmlinux";
    std::error_code ec;
    std::filesystem::copy_file(env_["MSB_KERNEL"], kernel, ec);
    ASSERT_FALSE(ec) << ec.message();
    env_["MSB_KERNEL"] = kernel;
    env_["HOME"] = Home();
    ASSERT_TRUE(MakeDirs(project_ + "/rw").ok());
    ASSERT_TRUE(MakeDirs(project_ + "/site").ok());
    ASSERT_TRUE(WriteFileAtomic(project_ + "/site/index.html", "served to an ordinary user\n").ok());
    // An image archive to load: one layer holding busybox.
    auto archive = RunCapture({"/bin/sh", "-ec",
                               "cd " + Home() +
                                   " && umoci init --layout layout && umoci new --image layout:v1"
                                   " && umoci unpack --rootless --image layout:v1 bundle >/dev/null"
                                   " && mkdir -p bundle/rootfs/bin && cp /bin/busybox bundle/rootfs/bin/busybox"
                                   " && umoci repack --image layout:v1 bundle >/dev/null && rm -rf bundle"
                                   " && skopeo copy -q oci:layout:v1 docker-archive:busybox.tar:busybox:v1"});
    ASSERT_TRUE(archive.ok());
    ASSERT_EQ(archive->status.code, 0) << archive->output;
    auto own = RunCapture({"chown", "-R", std::to_string(uid_) + ":" + std::to_string(gid_), Home()});
    ASSERT_TRUE(own.ok() && own->status.code == 0);
    argv_prefix_ = {"setpriv", "--reuid=" + std::to_string(uid_), "--regid=" + std::to_string(gid_),
                    "--clear-groups", "--"};
  }

  uid_t uid_ = 0;
  gid_t gid_ = 0;
};

TEST_F(UnprivilegedTest, AnOrdinaryUserRunsSharesVolumesPortsExecCpAndImages) {
  const uint16_t port = FreeLoopbackPort();
  WriteSandboxfile("name: plain\nsandboxes:\n  web:\n    image: " + Rootfs() +
                   "\n    memory: 128M\n    command: [\"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/site\"]\n"
                   "    volumes:\n      - ./rw:/rw\n      - ./site:/site:ro\n      - data:/data\n"
                   "    ports:\n      - \"" + std::to_string(port) + ":80\"\n"
                   "    healthcheck: { command: [\"wget\", \"-q\", \"-O\", \"/dev/null\", \"http://127.0.0.1/\"], "
                   "interval: 1s, retries: 30 }\n"
                   "volumes:\n  data: { size: 64M }\n");
  auto own = RunCapture({"chown", std::to_string(uid_), project_ + "/Sandboxfile"});
  ASSERT_TRUE(own.ok() && own->status.code == 0);

  // --wait: until the server answers its health check.
  auto up = InProject({"up", "--wait"});
  ASSERT_EQ(up.code, 0) << up.err;
  EXPECT_THAT(up.err, HasSubstr("msb: note: sandboxes run without host cgroup limits"));

  // The published port reaches the guest's server, which reads the share.
  std::string error;
  EXPECT_THAT(HostHttpGet(port, 60, &error), HasSubstr("served to an ordinary user")) << error;

  auto exec = Msb({"exec", "web", "--", "/bin/sh", "-c",
                   "echo shared > /rw/f && echo kept > /data/f && cat /data/f && "
                   "if touch /site/nope 2>/dev/null; then echo ro-writable; fi"});
  ASSERT_EQ(exec.code, 0) << exec.err;
  EXPECT_EQ(exec.out, "kept\n");
  struct stat st;
  ASSERT_EQ(::stat((project_ + "/rw/f").c_str(), &st), 0);
  EXPECT_EQ(st.st_uid, uid_);
  EXPECT_FALSE(std::filesystem::exists(project_ + "/site/nope"));

  auto cp = Msb({"cp", project_ + "/site/index.html", "web:/tmp/copied"});
  ASSERT_EQ(cp.code, 0) << cp.err;
  auto cat = Msb({"exec", "web", "--", "cat", "/tmp/copied"});
  EXPECT_EQ(cat.out, "served to an ordinary user\n") << cat.err;

  // Every VMM and file server runs as the user, with nothing more.
  const std::string uid = std::to_string(uid_);
  std::vector<int> jailed = MyQemus();
  EXPECT_EQ(jailed.size(), 1u);
  for (int pid : Mine("virtiofsd")) jailed.push_back(pid);
  EXPECT_EQ(jailed.size(), 1u + 2 * 2);  // two shares, two processes each
  for (int pid : jailed) {
    auto s = ProcStatus(pid);
    EXPECT_EQ(s["Uid"].substr(0, s["Uid"].find('\t')), uid) << pid;
    EXPECT_EQ(s["CapEff"], "0000000000000000") << pid;
    EXPECT_EQ(s["NoNewPrivs"], "1") << pid;
  }

  // An image archive, flattened in a builder VM the user starts.
  auto load = Msb({"load", Home() + "/busybox.tar"});
  ASSERT_EQ(load.code, 0) << load.err;
  auto run = Msb({"run", "-q", "busybox:v1", "--", "busybox", "echo", "from the image"});
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_EQ(run.out, "from the image\n");

  auto down = InProject({"down"});
  ASSERT_EQ(down.code, 0) << down.err;
  EXPECT_TRUE(WaitNoProcess(Home(), 20));
}

}  // namespace
}  // namespace msb::testing
