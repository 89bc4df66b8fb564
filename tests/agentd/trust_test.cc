// InstallCa on a temporary directory standing in for the guest root: system
// bundles absent, plain, linked (absolutely, relatively, hard) or escaping the
// root; a second install replacing the first; an empty CA undoing it; modes;
// and the environment a process gets.
#include "agentd/trust.h"

#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "agentd/spawn.h"
#include "common/io.h"

namespace msb::agent {
namespace {

namespace fs = std::filesystem;

const std::string kPemA = "-----BEGIN CERTIFICATE-----\nQUFBQQ==\n-----END CERTIFICATE-----\n";
const std::string kPemB = "-----BEGIN CERTIFICATE-----\nQkJCQg==\n-----END CERTIFICATE-----\n";
const std::string kSystem = "-----BEGIN CERTIFICATE-----\nU1lTVEVN\n-----END CERTIFICATE-----\n";

std::string Block(const std::string& pem) {
  return std::string(kCaBlockBegin) + "\n" + pem + std::string(kCaBlockEnd) + "\n";
}

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t p = text.find(what); p != std::string::npos; p = text.find(what, p + 1)) ++n;
  return n;
}

class TrustTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/msb-agentd-trust-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    top_ = tmpl;
    root_ = top_ + "/root";
    ASSERT_TRUE(MakeDirs(root_).ok());
  }
  void TearDown() override { fs::remove_all(top_); }

  // A file below the root, its directories created, mode 0644.
  void Put(const std::string& guest_path, const std::string& text) {
    std::string p = root_ + guest_path;
    ASSERT_TRUE(MakeDirs(p.substr(0, p.rfind('/'))).ok());
    std::ofstream(p) << text;
    ASSERT_EQ(::chmod(p.c_str(), 0644), 0);
  }
  void Link(const std::string& target, const std::string& guest_path) {
    std::string p = root_ + guest_path;
    ASSERT_TRUE(MakeDirs(p.substr(0, p.rfind('/'))).ok());
    fs::create_symlink(target, p);
  }
  std::string Get(const std::string& guest_path) {
    auto r = ReadFile(root_ + guest_path);
    return r.ok() ? *r : "<" + r.error().message() + ">";
  }
  bool Exists(const std::string& guest_path) {
    struct stat st;
    return ::lstat((root_ + guest_path).c_str(), &st) == 0;
  }
  unsigned Mode(const std::string& guest_path) {
    struct stat st;
    if (::stat((root_ + guest_path).c_str(), &st) != 0) return 0;
    return st.st_mode & 07777;
  }

  std::string top_, root_;
};

TEST_F(TrustTest, NoSystemBundle) {
  ASSERT_TRUE(InstallCa(root_, kPemA).ok());
  EXPECT_EQ(Get(kCaFile), kPemA);
  EXPECT_EQ(Get(kCaBundle), Block(kPemA));
  for (const char* b : kSystemCaBundles) EXPECT_FALSE(Exists(b)) << b;
  EXPECT_EQ(Mode(kCaFile), 0644u);
  EXPECT_EQ(Mode(kCaBundle), 0644u);
}

TEST_F(TrustTest, DebianBundleGetsOneBlock) {
  Put("/etc/ssl/certs/ca-certificates.crt", kSystem);
  ASSERT_TRUE(InstallCa(root_, kPemA).ok());
  EXPECT_EQ(Get("/etc/ssl/certs/ca-certificates.crt"), kSystem + Block(kPemA));
  EXPECT_EQ(Get(kCaBundle), kSystem + Block(kPemA));
  EXPECT_EQ(Get(kCaFile), kPemA);
  EXPECT_EQ(Mode("/etc/ssl/certs/ca-certificates.crt"), 0644u);
  // Nothing left behind by the atomic writes.
  size_t entries = 0;
  for (const auto& e : fs::directory_iterator(root_ + "/etc/ssl/certs")) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1u);
}

TEST_F(TrustTest, ModeIs0644WhateverItWas) {
  Put("/etc/pki/tls/certs/ca-bundle.crt", kSystem);
  ASSERT_EQ(::chmod((root_ + "/etc/pki/tls/certs/ca-bundle.crt").c_str(), 0600), 0);
  mode_t old = ::umask(077);
  Status s = InstallCa(root_, kPemA);
  ::umask(old);
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ(Mode("/etc/pki/tls/certs/ca-bundle.crt"), 0644u);
  EXPECT_EQ(Mode(kCaFile), 0644u);
  EXPECT_EQ(Mode(kCaBundle), 0644u);
}

TEST_F(TrustTest, LinkedBundlesAreWrittenOnceThroughTheLink) {
  // Alpine: /etc/ssl/cert.pem -> certs/ca-certificates.crt; Fedora-like:
  // ca-bundle.crt an absolute link, resolved inside the root, not the host's.
  Put("/etc/ssl/certs/ca-certificates.crt", kSystem);
  Link("certs/ca-certificates.crt", "/etc/ssl/cert.pem");
  Link("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt");
  ASSERT_TRUE(InstallCa(root_, kPemA).ok());
  std::string bundle = Get("/etc/ssl/certs/ca-certificates.crt");
  EXPECT_EQ(bundle, kSystem + Block(kPemA));
  EXPECT_EQ(Count(bundle, kPemA), 1u);
  EXPECT_TRUE(fs::is_symlink(root_ + "/etc/ssl/cert.pem"));
  EXPECT_TRUE(fs::is_symlink(root_ + "/etc/pki/tls/certs/ca-bundle.crt"));
  EXPECT_EQ(Get("/etc/ssl/cert.pem"), bundle);
  EXPECT_EQ(Get(kCaBundle), kSystem + Block(kPemA));
}

TEST_F(TrustTest, HardLinkedBundlesBothGetTheBlock) {
  Put("/etc/ssl/certs/ca-certificates.crt", kSystem);
  fs::create_hard_link(root_ + "/etc/ssl/certs/ca-certificates.crt", root_ + "/etc/ssl/cert.pem");
  ASSERT_TRUE(InstallCa(root_, kPemA).ok());
  EXPECT_EQ(Get("/etc/ssl/certs/ca-certificates.crt"), kSystem + Block(kPemA));
  EXPECT_EQ(Get("/etc/ssl/cert.pem"), kSystem + Block(kPemA));
}

TEST_F(TrustTest, LinksCannotLeaveTheRoot) {
  std::ofstream(top_ + "/outside.pem") << kSystem;
  Link("../../../outside.pem", "/etc/ssl/cert.pem");  // ".." stops at the root
  Link(top_ + "/outside.pem", "/etc/ssl/certs/ca-certificates.crt");
  Link("loop", "/etc/pki/tls/certs/loop");
  Link("loop", "/etc/pki/tls/certs/ca-bundle.crt");
  ASSERT_TRUE(InstallCa(root_, kPemA).ok());
  auto outside = ReadFile(top_ + "/outside.pem");
  ASSERT_TRUE(outside.ok());
  EXPECT_EQ(*outside, kSystem);
  EXPECT_EQ(Get(kCaBundle), Block(kPemA));
}

TEST_F(TrustTest, ASecondInstallReplacesTheBlock) {
  Put("/etc/ssl/certs/ca-certificates.crt", kSystem);
  ASSERT_TRUE(InstallCa(root_, kPemA).ok());
  ASSERT_TRUE(InstallCa(root_, kPemB).ok());
  for (const std::string& path : {std::string("/etc/ssl/certs/ca-certificates.crt"), std::string(kCaBundle)}) {
    std::string text = Get(path);
    EXPECT_EQ(text, kSystem + Block(kPemB)) << path;
    EXPECT_EQ(Count(text, kPemA), 0u) << path;
    EXPECT_EQ(Count(text, kPemB), 1u) << path;
    EXPECT_EQ(Count(text, std::string(kCaBlockBegin)), 1u) << path;
  }
  EXPECT_EQ(Get(kCaFile), kPemB);
}

TEST_F(TrustTest, NoCaUndoesAnEarlierInstall) {
  Put("/etc/ssl/certs/ca-certificates.crt", kSystem);
  ASSERT_TRUE(InstallCa(root_, kPemA).ok());
  ASSERT_TRUE(InstallCa(root_, "").ok());
  EXPECT_EQ(Get("/etc/ssl/certs/ca-certificates.crt"), kSystem);
  EXPECT_FALSE(Exists(kCaFile));
  EXPECT_FALSE(Exists(kCaBundle));
  // Never installed: nothing is created or touched.
  ASSERT_TRUE(InstallCa(root_, "").ok());
  EXPECT_FALSE(Exists(kCaBundle));
}

TEST_F(TrustTest, FailureNamesWhatAndWhere) {
  Put("/usr/local/share/ca-certificates", "a file, not a directory");
  Status s = InstallCa(root_, kPemA);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().message().rfind("installing the sandbox CA: writing " + std::string(kCaFile) + ": ", 0), 0u)
      << s.error().message();
  EXPECT_NE(s.error().message().find("/usr/local/share/ca-certificates is not a directory"), std::string::npos)
      << s.error().message();
  EXPECT_FALSE(InstallCa(top_ + "/missing", kPemA).ok());
}

TEST(ReplaceCaBlockTest, Text) {
  EXPECT_EQ(ReplaceCaBlock("", kPemA), Block(kPemA));
  EXPECT_EQ(ReplaceCaBlock("x", kPemA), "x\n" + Block(kPemA));
  // A PEM without its final newline still closes the block on a line of its own.
  EXPECT_EQ(ReplaceCaBlock("x\n", "-----BEGIN CERTIFICATE-----"),
            "x\n" + std::string(kCaBlockBegin) + "\n-----BEGIN CERTIFICATE-----\n" +
                std::string(kCaBlockEnd) + "\n");
  // Blocks anywhere (CRLF markers too) are taken out; an unterminated one runs
  // to the end.
  std::string crlf =
      "a\r\n" + std::string(kCaBlockBegin) + "\r\nold\r\n" + std::string(kCaBlockEnd) + "\r\nb\r\n";
  EXPECT_EQ(ReplaceCaBlock(crlf, ""), "a\r\nb\r\n");
  EXPECT_EQ(ReplaceCaBlock("a\n" + Block(kPemA) + "b\n" + Block(kPemB), kPemB), "a\nb\n" + Block(kPemB));
  EXPECT_EQ(ReplaceCaBlock("a\n" + std::string(kCaBlockBegin) + "\nold\n", ""), "a\n");
  // Idempotent.
  std::string once = ReplaceCaBlock(kSystem, kPemA);
  EXPECT_EQ(ReplaceCaBlock(once, kPemA), once);
}

TEST(CaEnvTest, BootEnvWins) {
  auto env = BuildEnv({CaEnv(), {"SSL_CERT_FILE=/mine.pem"}}, "/root", false);
  auto has = [&](const std::string& kv) { return std::find(env.begin(), env.end(), kv) != env.end(); };
  EXPECT_TRUE(has("SSL_CERT_FILE=/mine.pem"));
  EXPECT_TRUE(has(std::string("REQUESTS_CA_BUNDLE=") + kCaBundle));
  EXPECT_TRUE(has(std::string("CURL_CA_BUNDLE=") + kCaBundle));
  EXPECT_TRUE(has(std::string("GIT_SSL_CAINFO=") + kCaBundle));
  EXPECT_TRUE(has(std::string("NODE_EXTRA_CA_CERTS=") + kCaFile));
  EXPECT_EQ(CaEnv().size(), 5u);
}

}  // namespace
}  // namespace msb::agent
