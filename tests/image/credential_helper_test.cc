// image/credential_helper.cc and the helper choice in registry_config.cc:
// real docker-credential-* shell scripts written by the test on PATH. What a
// helper receives (argv, stdin), what its answers mean, and its bounds.
#include "image/credential_helper.h"

#include <sys/stat.h>

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "common/io.h"
#include "image/registry_config.h"

namespace msb::image {
namespace {

class HelperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/msb-helper-test-XXXXXX";
    dir_ = ::mkdtemp(tmpl);
    const char* path = std::getenv("PATH");
    old_path_ = path != nullptr ? path : "/usr/bin:/bin";
    ::setenv("PATH", (dir_ + ":" + old_path_).c_str(), 1);
  }
  void TearDown() override {
    ::setenv("PATH", old_path_.c_str(), 1);
    std::filesystem::remove_all(dir_);
  }
  // docker-credential-NAME with body as its shell script; it appends its
  // argv and stdin to DIR/NAME.calls first.
  void Helper(const std::string& name, const std::string& body) {
    std::string path = dir_ + "/docker-credential-" + name;
    std::string script = "#!/bin/sh\nin=$(cat)\nprintf '%s|%s\\n' \"$*\" \"$in\" >> " + dir_ + "/" + name +
                         ".calls\n" + body + "\n";
    ASSERT_TRUE(WriteFileAtomic(path, script, 0755).ok());
  }
  std::string Calls(const std::string& name) {
    auto t = ReadFile(dir_ + "/" + name + ".calls");
    return t.ok() ? *t : "";
  }
  std::string dir_, old_path_;
};

TEST_F(HelperTest, GetSendsTheServerUrlOnStdinAndParsesTheAnswer) {
  Helper("ok", R"(echo '{"ServerURL":"x","Username":"alice","Secret":"s3cr3t-from-helper"}')");
  auto c = HelperGet("ok", "reg.example:5000");
  ASSERT_TRUE(c.ok()) << c.error().message();
  ASSERT_TRUE(c->has_value());
  EXPECT_EQ((*c)->username, "alice");
  EXPECT_EQ((*c)->password, "s3cr3t-from-helper");
  EXPECT_EQ(Calls("ok"), "get|reg.example:5000\n");
  auto hub = HelperGet("ok", "docker.io");
  ASSERT_TRUE(hub.ok());
  EXPECT_EQ(Calls("ok"), "get|reg.example:5000\nget|https://index.docker.io/v1/\n");
}

TEST_F(HelperTest, NotFoundIsAnonymous) {
  Helper("empty", "echo 'credentials not found in native keychain'; exit 1");
  auto c = HelperGet("empty", "reg.example");
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_FALSE(c->has_value());
}

TEST_F(HelperTest, FailuresNameTheHelperTheRegistryAndWhatToDo) {
  Helper("locked", "echo 'the keychain is locked' >&2; exit 3");
  auto c = HelperGet("locked", "reg.example");
  ASSERT_FALSE(c.ok());
  const std::string& m = c.error().message();
  EXPECT_NE(m.find("docker-credential-locked"), std::string::npos) << m;
  EXPECT_NE(m.find("reg.example"), std::string::npos) << m;
  EXPECT_NE(m.find("the keychain is locked"), std::string::npos) << m;
  EXPECT_NE(m.find("credHelpers"), std::string::npos) << m;

  auto missing = HelperGet("not-installed-anywhere", "reg.example");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message().find("docker-credential-not-installed-anywhere"), std::string::npos);
  EXPECT_NE(missing.error().message().find("not on PATH"), std::string::npos) << missing.error().message();

  auto path = HelperGet("../evil", "reg.example");
  ASSERT_FALSE(path.ok());
  EXPECT_NE(path.error().message().find("not a helper name"), std::string::npos);
}

TEST_F(HelperTest, BadAnswersAreRefusedWithoutQuotingThem) {
  Helper("garbled", "echo 'Username=bob Secret=leaky-secret'");
  auto c = HelperGet("garbled", "reg.example");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().message().find("leaky-secret"), std::string::npos) << c.error().message();
  EXPECT_NE(c.error().message().find("Username"), std::string::npos);

  Helper("token", R"(echo '{"Username":"<token>","Secret":"refresh-token"}')");
  auto t = HelperGet("token", "reg.example");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.error().message().find("identity token"), std::string::npos);
  EXPECT_EQ(t.error().message().find("refresh-token"), std::string::npos);
}

TEST_F(HelperTest, OutputAndTimeAreBounded) {
  Helper("flood", "exec cat /dev/zero");
  auto big = HelperGet("flood", "reg.example");
  ASSERT_FALSE(big.ok());
  EXPECT_NE(big.error().message().find("more than " + std::to_string(kHelperOutputLimit) + " bytes"),
            std::string::npos)
      << big.error().message();

  // A helper that waits forever on a FIFO nobody writes.
  ASSERT_EQ(::mkfifo((dir_ + "/never").c_str(), 0600), 0);
  Helper("hang", "exec cat " + dir_ + "/never");
  auto slow = HelperGet("hang", "reg.example", std::chrono::milliseconds(300));
  ASSERT_FALSE(slow.ok());
  EXPECT_EQ(slow.error().code(), ErrorCode::kTimeout);
  EXPECT_NE(slow.error().message().find("did not answer for registry reg.example"), std::string::npos)
      << slow.error().message();
}

TEST_F(HelperTest, StoreAndEraseSpeakTheProtocol) {
  Helper("keep", "case \"$1\" in store) printf '%s' \"$in\" > " + dir_ + "/kept ;; erase) rm -f " + dir_ +
                     "/kept ;; esac");
  ASSERT_TRUE(HelperStore("keep", "reg.example", Credentials{"bob", "pw-stored"}).ok());
  auto kept = ReadFile(dir_ + "/kept");
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(*kept, R"({"Secret":"pw-stored","ServerURL":"reg.example","Username":"bob"})");
  EXPECT_EQ(Calls("keep").substr(0, 6), "store|");  // argv is the verb alone
  ASSERT_TRUE(HelperErase("keep", "reg.example").ok());
  EXPECT_NE(::access((dir_ + "/kept").c_str(), F_OK), 0);
  EXPECT_NE(Calls("keep").find("erase|reg.example\n"), std::string::npos);
}

TEST_F(HelperTest, CredHelpersWinOverCredsStoreWhichWinsOverAuths) {
  Helper("per-host", R"(echo '{"Username":"from-per-host","Secret":"a"}')");
  Helper("store", R"(echo '{"Username":"from-store","Secret":"b"}')");
  CredentialStore store{dir_ + "/msb/auth.json", dir_ + "/config.json"};
  ASSERT_TRUE(WriteFileAtomic(store.docker_config,
                              R"({"auths": {"reg.example": {"auth": "ZnJvbS1hdXRoczpj"}, "other.example": {"auth": "ZnJvbS1hdXRoczpj"}},
                                  "credsStore": "store",
                                  "credHelpers": {"reg.example": "per-host"}})")
                  .ok());
  auto a = store.Lookup("reg.example");
  ASSERT_TRUE(a.ok()) << a.error().message();
  EXPECT_EQ((*a)->username, "from-per-host");
  auto b = store.Lookup("other.example");
  ASSERT_TRUE(b.ok()) << b.error().message();
  EXPECT_EQ((*b)->username, "from-store");
  EXPECT_EQ(*store.HelperFor("reg.example"), "per-host");

  ASSERT_TRUE(WriteFileAtomic(store.docker_config, R"({"auths": {"other.example": {"auth": "ZnJvbS1hdXRoczpj"}}})").ok());
  auto c = store.Lookup("other.example");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ((*c)->username, "from-auths");
  EXPECT_EQ(*store.HelperFor("other.example"), "");
}

}  // namespace
}  // namespace msb::image
