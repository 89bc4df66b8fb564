// cmake --install into a temporary prefix, then the installed msb on its own:
// the prefix moved elsewhere, the build and source trees hidden under empty
// mounts (a private mount namespace) and off PATH. It must find agentd in
// <prefix>/libexec/msb and boot a sandbox; its completions, man page and
// systemd unit sit at their standard paths.
#include <sys/stat.h>

#include <filesystem>

#include "common/io.h"
#include "tests/integration/harness.h"

namespace msb::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

class InstallTest : public MsbTest {
 protected:
  void SetUp() override {
    MsbTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    char tmpl[] = "/tmp/msb-install-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    tmp_ = tmpl;
  }
  void TearDown() override {
    MsbTest::TearDown();
    std::error_code ec;
    if (!tmp_.empty()) std::filesystem::remove_all(tmp_, ec);
  }

  // From now on Msb() runs `prefix`/bin/msb with the build and source trees
  // hidden and PATH holding only the system's directories.
  void UseInstalled(const std::string& prefix) {
    const std::string hide = "mount -t tmpfs msb-hidden '" + BuildDir() + "' && mount -t tmpfs msb-hidden '" +
                             SourceDir() + "' && shift && exec '" + prefix + "/bin/msb' \"$@\"";
    // The harness appends the build tree's msb; the script drops it.
    argv_prefix_ = {"unshare", "--mount", "--propagation", "private", "--", "sh", "-c", hide, "sh"};
    env_["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    env_["MSB_AGENTD"] = "";
  }

  std::string tmp_;
};

bool IsFile(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

TEST_F(InstallTest, InstalledMsbRunsASandboxWithoutTheBuildTree) {
  const std::string staged = tmp_ + "/staged", prefix = tmp_ + "/moved";
  auto inst = RunCapture({MSB_TEST_CMAKE, "--install", BuildDir(), "--prefix", staged});
  ASSERT_TRUE(inst.ok()) << inst.error().message();
  ASSERT_EQ(inst->status.code, 0) << inst->output;

  // The unit names the msb of the prefix it was installed to.
  auto unit = ReadFile(staged + "/lib/systemd/user/msb-up@.service");
  ASSERT_TRUE(unit.ok()) << unit.error().message();
  EXPECT_THAT(*unit, HasSubstr("\nExecStart=" + staged + "/bin/msb up --watch\n"));
  EXPECT_THAT(*unit, HasSubstr("\nWorkingDirectory=%f\n"));
  auto verify = RunCapture({"systemd-analyze", "verify", "--man=no",
                            staged + "/lib/systemd/user/msb-up@.service"});
  ASSERT_TRUE(verify.ok());
  EXPECT_EQ(verify->status.code, 0) << verify->output;
  EXPECT_EQ(verify->output, "");  // warnings (an unknown setting) exit 0 too
  auto sync_unit = ReadFile(staged + "/lib/systemd/user/msb-sync@.service");
  ASSERT_TRUE(sync_unit.ok()) << sync_unit.error().message();
  EXPECT_THAT(*sync_unit, HasSubstr("\nExecStart=" + staged + "/bin/msb sync -p %i $MSB_SYNC_ARGS\n"));
  EXPECT_THAT(*sync_unit, HasSubstr("\nKillMode=process\n"));
  auto verify_sync = RunCapture({"systemd-analyze", "verify", "--man=no",
                                 staged + "/lib/systemd/user/msb-sync@.service"});
  ASSERT_TRUE(verify_sync.ok());
  EXPECT_EQ(verify_sync->status.code, 0) << verify_sync->output;
  EXPECT_EQ(verify_sync->output, "");

  // Nothing installed points back at where it was installed (but the unit).
  std::filesystem::rename(staged, prefix);
  for (const char* rel : {"bin/msb", "libexec/msb/agentd", "share/bash-completion/completions/msb",
                          "share/zsh/site-functions/_msb", "share/man/man1/msb.1", "share/msb/kernel.config",
                          "share/msb/make-rootfs", "share/msb/fetch-debian-kernel", "lib/systemd/user/msb-up@.service",
                          "lib/systemd/user/msb-sync@.service"}) {
    EXPECT_TRUE(IsFile(prefix + "/" + rel)) << rel;
  }
  auto man = ReadFile(prefix + "/share/man/man1/msb.1");
  ASSERT_TRUE(man.ok());
  EXPECT_THAT(*man, HasSubstr(".TH MSB 1"));
  auto bash = ReadFile(prefix + "/share/bash-completion/completions/msb");
  ASSERT_TRUE(bash.ok());
  EXPECT_THAT(*bash, HasSubstr("complete -F _msb msb"));

  const std::string rootfs = tmp_ + "/rootfs";
  auto mk = RunCapture({prefix + "/share/msb/make-rootfs", rootfs});
  ASSERT_TRUE(mk.ok() && mk->status.code == 0) << (mk.ok() ? mk->output : mk.error().message());

  const MsbResult built_version = Msb({"--version"});
  UseInstalled(prefix);
  const MsbResult version = Msb({"--version"});
  EXPECT_EQ(version.code, 0) << version.err;
  EXPECT_EQ(version.out, built_version.out);
  EXPECT_THAT(version.out, HasSubstr("msb "));

  // The build tree really is out of reach in there.
  const MsbResult hidden = Msb({"run", rootfs, "--", "sh", "-c", "echo from-installed-$((6 * 7))"});
  EXPECT_EQ(hidden.code, 0) << hidden.err;
  EXPECT_EQ(hidden.out, "from-installed-42\n");
  EXPECT_TRUE(WaitNoProcess(Home(), 20));

  // Without its agentd, the installed msb says where it looked and how to
  // mend it; never scripts/setup, which an installed user does not have.
  std::filesystem::remove(prefix + "/libexec/msb/agentd");
  const MsbResult broken = Msb({"run", rootfs, "--", "true"});
  EXPECT_NE(broken.code, 0);
  EXPECT_THAT(broken.err, HasSubstr(prefix + "/libexec/msb/agentd"));
  EXPECT_THAT(broken.err, HasSubstr("cmake --install"));
  EXPECT_THAT(broken.err, Not(HasSubstr("scripts/setup")));
}

}  // namespace
}  // namespace msb::testing
