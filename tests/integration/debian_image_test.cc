// The Debian test image (scripts/make-debian-image) as `msb run IMAGE`: the
// project's guest kernel boots the Debian root file system, and the clients the
// HTTPS end-to-end tests need run in it. Not a test of Debian's packages.
#include "tests/integration/harness.h"

namespace msb::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::ContainsRegex;

class DebianImageTest : public MsbTest {
 protected:
  void SetUp() override {
    MsbTest::SetUp();
    if (IsSkipped()) return;
    auto rootfs = DebianRootfs();
    ASSERT_TRUE(rootfs.ok()) << rootfs.error().message();
    rootfs_ = *rootfs;
  }
  std::string rootfs_;
};

TEST_F(DebianImageTest, CurlPythonSslAndTheCaBundleWork) {
  // One boot for every check: under TCG the boot is most of the time.
  const std::string script =
      "set -e\n"
      "curl --version\n"
      "python3 -c 'import ssl; print(\"python-ssl:\", ssl.OPENSSL_VERSION)'\n"
      "openssl version\n"
      "printf 'ca-bundle: %s certificates\\n' "
      "\"$(grep -c 'BEGIN CERTIFICATE' /etc/ssl/certs/ca-certificates.crt)\"\n";
  auto r = Msb({"run", rootfs_, "--", "sh", "-c", script}, "", 300);
  ASSERT_EQ(r.code, 0) << r.out << r.err;
  // curl built against OpenSSL, with HTTPS.
  EXPECT_THAT(r.out, ContainsRegex("curl [0-9.]+ [^\n]* OpenSSL/3\\.")) << r.out;
  EXPECT_THAT(r.out, ContainsRegex("Protocols: [^\n]* https")) << r.out;
  // python3's ssl module loads, and the openssl command runs.
  EXPECT_THAT(r.out, HasSubstr("python-ssl: OpenSSL 3.0.")) << r.out;
  EXPECT_THAT(r.out, HasSubstr("\nOpenSSL 3.0.")) << r.out;
  // The bundle update-ca-certificates wrote, with Mozilla's roots in it.
  EXPECT_THAT(r.out, ContainsRegex("ca-bundle: [1-9][0-9][0-9]+ certificates")) << r.out;
}

}  // namespace
}  // namespace msb::testing
