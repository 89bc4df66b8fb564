// `msb login` against a real TLS + Basic docker-registry: good credentials are
// stored in $MSB_HOME/auth.json with mode 0600 and then used by a pull;
// refused ones are not stored; `msb logout` removes them.
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>

#include "common/child.h"
#include "common/io.h"
#include "image/pull.h"
#include "tests/support/dir_target.h"
#include "tests/support/registry_server.h"

namespace msb::image {
namespace {

std::string Quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += "'\\''";
    else out += c;
  }
  return out + "'";
}

class LoginTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/msb-login-test-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    home_ = dir_ + "/home";
    ASSERT_TRUE(MakeDirs(home_).ok());
    auto r = msb::testing::RegistryServer::Start(msb::testing::RegistryMode::kTlsBasic, dir_ + "/reg");
    ASSERT_TRUE(r.ok()) << r.error().message();
    reg_ = std::move(*r);
  }
  void TearDown() override {
    reg_.reset();
    std::filesystem::remove_all(dir_);
  }

  RunResult Msb(const std::string& args, const std::string& stdin_text) {
    std::string msb = std::string(MSB_TEST_BUILD_DIR) + "/bin/msb";
    std::string cmd = "printf %s " + Quote(stdin_text) + " | env MSB_HOME=" + Quote(home_) + " HOME=" +
                      Quote(dir_) + " DOCKER_CONFIG=" + Quote(dir_ + "/nodocker") + " " + msb + " " + args +
                      " </dev/stdin";
    auto r = RunCapture({"sh", "-c", cmd});
    EXPECT_TRUE(r.ok());
    return r.ok() ? *r : RunResult{};
  }

  std::string dir_, home_;
  std::unique_ptr<msb::testing::RegistryServer> reg_;
};

TEST_F(LoginTest, StoresCheckedCredentialsThatPullsUse) {
  std::string flags = " --registry-ca " + reg_->host_port() + "=" + reg_->ca_file();
  auto bad = Msb("login " + reg_->host_port() + " -u " + reg_->username() + " --password-stdin" + flags, "nope\n");
  EXPECT_EQ(bad.status.ShellCode(), 1) << bad.output;
  EXPECT_NE(bad.output.find("refused the credentials"), std::string::npos) << bad.output;
  EXPECT_NE(::access((home_ + "/auth.json").c_str(), F_OK), 0);

  auto good = Msb("login " + reg_->host_port() + " -u " + reg_->username() + " --password-stdin" + flags,
                  reg_->password() + "\n");
  ASSERT_EQ(good.status.ShellCode(), 0) << good.output;
  EXPECT_NE(good.output.find("Login succeeded for " + reg_->host_port()), std::string::npos) << good.output;
  struct stat st;
  ASSERT_EQ(::stat((home_ + "/auth.json").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  CredentialStore store{home_ + "/auth.json", ""};
  auto creds = store.Lookup(reg_->host_port());
  ASSERT_TRUE(creds.ok()) << creds.error().message();
  ASSERT_TRUE(creds->has_value());
  EXPECT_EQ((*creds)->username, reg_->username());
  EXPECT_EQ((*creds)->password, reg_->password());

  // A pull with what login stored.
  auto layout = msb::testing::CachedTestLayout("1.0");
  ASSERT_TRUE(layout.ok()) << layout.error().message();
  ASSERT_TRUE(reg_->Push(*layout, "1.0", "team/api:1.0").ok());
  PullOptions o;
  o.registries.registries[reg_->host_port()].ca_file = reg_->ca_file();
  o.credentials = **creds;
  msb::testing::DirTarget target(dir_ + "/blobs");
  auto pulled = Pull(ImageReference{reg_->host_port(), "team/api", "1.0", ""}, o, target);
  ASSERT_TRUE(pulled.ok()) << pulled.error().message();
  EXPECT_TRUE(target.HasBlob(pulled->manifest_digest));
  o.credentials->password = "changed";
  auto refused = Pull(ImageReference{reg_->host_port(), "team/api", "1.0", ""}, o, target);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message().find("refused the credentials"), std::string::npos);

  auto out = Msb("logout " + reg_->host_port(), "");
  EXPECT_EQ(out.status.ShellCode(), 0) << out.output;
  auto gone = store.Lookup(reg_->host_port());
  ASSERT_TRUE(gone.ok());
  EXPECT_FALSE(gone->has_value());
}

TEST_F(LoginTest, UntrustedRegistryIsRefusedWithAHint) {
  auto r = Msb("login " + reg_->host_port() + " -u " + reg_->username() + " --password-stdin", reg_->password());
  EXPECT_EQ(r.status.ShellCode(), 1) << r.output;
  EXPECT_NE(r.output.find("TLS verification of " + reg_->host_port() + " failed"), std::string::npos) << r.output;
  EXPECT_NE(::access((home_ + "/auth.json").c_str(), F_OK), 0);
}

}  // namespace
}  // namespace msb::image
