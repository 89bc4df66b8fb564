// The host's own addresses as the policy sees them (net/address.h
// HostAddresses): an address the host gains after a sandbox started is the
// host's at once, not "public". msb runs inside a network namespace this
// test creates; the test adds a public address there, listens on it, and a
// real guest's connection to it is refused without reaching the server.
#include <poll.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include "tests/integration/harness.h"
#include "tests/integration/test_hosts.h"

namespace msb::testing {
namespace {

using ::testing::HasSubstr;

class HostAddressesTest : public ProjectTest {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root for network namespaces";
    ProjectTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    std::string why;
    ASSERT_TRUE(hosts_.Create(&why)) << why;
    // msb, its supervisor and their host sockets live in the namespace: its
    // addresses are "the host's".
    argv_prefix_ = {"ip", "netns", "exec", hosts_.name()};
  }
  NamespaceHosts hosts_;
};

TEST_F(HostAddressesTest, AnAddressGainedAfterStartIsTheHostsAtOnce) {
  WriteSandboxfile("name: hostaddr\nsandboxes:\n  box:\n    image: " + Rootfs() +
                   "\n    memory: 128M\n    command: " + std::string(kKeepAliveCommand) + "\n");
  auto up = InProject({"up"});
  ASSERT_EQ(up.code, 0) << up.err;

  // A public address the host gains now, with a server on it.
  const std::string gained = "11.22.33.44";
  auto add = Sh("ip -n " + hosts_.name() + " addr add " + gained + "/32 dev lo 2>&1");
  ASSERT_EQ(add.code, 0) << add.out;
  std::string why;
  UniqueFd server = hosts_.Listen(gained, 0, &why);
  ASSERT_TRUE(server) << why;
  const std::string port = std::to_string(PortOf(server));

  // Refused means a reset from the stack, which decided at the SYN: nc's
  // timeout on a slow machine would also fail it, and prove nothing.
  auto nc = Msb({"exec", "box", "--", "/bin/sh", "-c",
                 "if nc -w 20 " + gained + " " + port + " </dev/null 2>&1; then echo reached; else echo failed; fi"});
  ASSERT_EQ(nc.code, 0) << nc.err;
  EXPECT_THAT(nc.out, HasSubstr("Connection refused")) << nc.out;
  EXPECT_THAT(nc.out, HasSubstr("failed\n")) << nc.out;
  // A denied flow opens no host socket, now or later; so nothing reached
  // the server.
  auto ps = Msb({"ps", "--json"});
  ASSERT_EQ(ps.code, 0) << ps.err;
  auto listed = nlohmann::json::parse(ps.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(listed.is_array() && listed.size() == 1u && listed[0].contains("net")) << ps.out;
  EXPECT_EQ(listed[0]["net"].value("host_sockets", -1), 0) << ps.out;
  pollfd p{server.get(), POLLIN, 0};
  EXPECT_EQ(::poll(&p, 1, 0), 0) << "the guest reached the host's new address " << gained;

  EXPECT_EQ(InProject({"down"}).code, 0);
}

}  // namespace
}  // namespace msb::testing
