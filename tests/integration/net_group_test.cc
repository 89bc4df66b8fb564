// Published ports and sandbox-to-sandbox traffic on real microVMs under TCG.
// One `msb up` of a project (srv, cli, iso, locked) plus one sandbox of a
// second project on the same MSB_HOME carries every check:
//   - a published TCP port reaches busybox httpd in srv from this process, a
//     published UDP port reaches an echo server in srv and its reply returns;
//   - cli (profile group) fetches http://srv/ by name; srv's name resolves to
//     its group address; iso (profile none) cannot reach srv by name or
//     address; locked (deny:ingress@group:tcp:80) refuses cli;
//   - the second project's sandbox reaches srv neither by name nor by srv's
//     group address;
//   - a port published on 127.0.0.2 serves there and is refused on 127.0.0.1;
//   - `msb ps` shows the published ports and the denied-flow counts.
// A second test: a published host port already taken makes `msb up` fail,
// naming the port, before any VM starts.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "common/fd.h"
#include "common/io.h"
#include "tests/integration/harness.h"

namespace msb::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

UniqueFd Loopback(int type, uint16_t port, bool do_bind) {
  UniqueFd fd(::socket(AF_INET, type | SOCK_CLOEXEC, 0));
  // As the supervisor binds: connections in TIME_WAIT do not hold the port.
  int one = 1;
  if (type == SOCK_STREAM) ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  int rc = do_bind ? ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a)
                   : ::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a);
  EXPECT_EQ(rc, 0) << (do_bind ? "bind " : "connect ") << port << ": " << strerror(errno);
  return fd;
}

// Whether a TCP socket binds ip:port now (SO_REUSEADDR, as the supervisor binds).
bool BindsOn(const std::string& ip, uint16_t port) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  ::inet_pton(AF_INET, ip.c_str(), &a.sin_addr);
  return ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
}

// A TCP port free on both 127.0.0.1 and 127.0.0.2 right now; 0 when none was found.
uint16_t FreeOnBothLoopbacks() {
  for (int i = 0; i < 20; ++i) {
    uint16_t p = FreeLoopbackPort(SOCK_STREAM);
    if (BindsOn("127.0.0.2", p)) return p;
  }
  return 0;
}

// GET / from 127.0.0.1:port (harness HostHttpGet), expecting to connect.
std::string HttpGet(uint16_t port, int deadline_s) {
  std::string error;
  std::string got = HostHttpGet(port, deadline_s, &error);
  EXPECT_EQ(error, "");
  return got;
}

// Sends `msg` to 127.0.0.1:port over UDP until a datagram comes back (the echo
// server may still be starting: datagrams before it binds are lost) or the
// deadline passes; returns the reply, empty on none.
std::string UdpEcho(uint16_t port, const std::string& msg, int deadline_s) {
  UniqueFd fd = Loopback(SOCK_DGRAM, port, false);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(deadline_s);
  while (std::chrono::steady_clock::now() < deadline) {
    (void)::send(fd.get(), msg.data(), msg.size(), 0);
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, 500) <= 0) continue;  // resend: UDP promises nothing
    char buf[2048];
    ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n > 0) return std::string(buf, static_cast<size_t>(n));
  }
  return "";
}

// vm::GroupAddress, recomputed here so the test checks the product's answer.
std::string GroupAddress(const std::string& name) {
  uint32_t h = 2166136261u;
  for (unsigned char c : name) h = (h ^ c) * 16777619u;
  return "10.201." + std::to_string(1 + h % 254) + "." + std::to_string(1 + (h / 254) % 254);
}

const nlohmann::json* Entry(const nlohmann::json& ps, const std::string& name) {
  if (!ps.is_array()) return nullptr;
  for (const auto& e : ps) {
    if (e.is_object() && e.value("name", "") == name) return &e;
  }
  return nullptr;
}

uint64_t Denied(const nlohmann::json* e) {
  if (e == nullptr || !e->contains("net") || !(*e)["net"].is_object()) return 0;
  const auto& n = (*e)["net"];
  return n.contains("denied") && n["denied"].is_number_unsigned() ? n["denied"].get<uint64_t>() : 0;
}

class NetGroupTest : public ProjectTest {
 protected:
  std::string Sandbox(const std::string& name, const std::string& command, const std::string& extra) {
    return "  " + name + ":\n    image: " + Rootfs() + "\n    memory: 128M\n    command: [\"/bin/sh\", \"-c\", \"" +
           command + "\"]\n" + extra;
  }
  static std::string Web(const std::string& token) {
    return "mkdir -p /www; echo " + token + " > /www/index.html; ";
  }
  static constexpr const char* kHealth =
      "    healthcheck:\n      command: [\"wget\", \"-q\", \"-O\", \"/tmp/h\", \"http://127.0.0.1/\"]\n"
      "      interval: 1s\n";
  // Shell: what NAME resolves to with the sandbox's DNS (busybox nslookup),
  // then http://NAME/ fetched into /tmp/o (busybox wget: -T crashes it in this
  // guest, so busybox timeout bounds it). Prints "addr<TAG>=...",
  // "rc<TAG>=..." and the page.
  static std::string FetchByName(const std::string& name, const std::string& tag) {
    return "a=$(nslookup " + name + " 2>/dev/null | awk '/^Address: /{a=$2} END{print a}'); echo addr" + tag +
           "=$a; rm -f /tmp/o; timeout 20 wget -q -O /tmp/o http://" + name + "/ 2>&1; echo rc" + tag +
           "=$?; cat /tmp/o 2>/dev/null; ";
  }
  static std::string FetchAddress(const std::string& ip, const std::string& tag) {
    return "rm -f /tmp/o; timeout 20 wget -q -O /tmp/o http://" + ip + "/ 2>&1; echo rc" + tag +
           "=$?; cat /tmp/o 2>/dev/null; ";
  }
  // Runs sh -c script in sandbox; its stdout.
  std::string Exec(const std::string& sandbox, const std::string& script) {
    auto r = Msb({"exec", sandbox, "--", "sh", "-c", script}, "", 60);
    return r.out;
  }
};

TEST_F(NetGroupTest, PublishedPortsGroupByNameProjectsApartAndIngressRules) {
  std::mt19937 rng(std::random_device{}());
  const std::string token = "srv-" + std::to_string(rng());
  const std::string locked_token = "locked-" + std::to_string(rng());
  const uint16_t http_port = FreeLoopbackPort(SOCK_STREAM), udp_port = FreeLoopbackPort(SOCK_DGRAM);
  // A port published on 127.0.0.2 only (free there and on 127.0.0.1 now).
  const uint16_t other_port = FreeOnBothLoopbacks();
  ASSERT_NE(other_port, 0);
  // The UDP echo server (static; busybox has none) reaches the guest by a
  // read-only bind mount.
  std::string bin = Home() + "/bin";
  ASSERT_TRUE(MakeDirs(bin).ok());
  std::filesystem::copy_file(MSB_TEST_UDP_ECHO, bin + "/udp_echo");
  ::chmod((bin + "/udp_echo").c_str(), 0755);

  WriteSandboxfile(
      "name: alpha\nsandboxes:\n" +
      Sandbox("srv", Web(token) + "/opt/t/udp_echo 7 & exec httpd -f -p 80 -h /www",
              "    volumes:\n      - " + bin + ":/opt/t:ro\n" + "    ports:\n      - " +
                  std::to_string(http_port) + ":80\n      - " + std::to_string(udp_port) + ":7/udp\n" +
                  "      - 127.0.0.2:" + std::to_string(other_port) + ":80\n" +
                  "    network:\n      policy: group\n" + kHealth) +
      Sandbox("locked", Web(locked_token) + "exec httpd -f -p 80 -h /www",
              std::string("    network:\n      policy: group\n      rules:\n        - deny:ingress@group:tcp:80\n") +
                  kHealth) +
      Sandbox("cli", kKeepAlive, "    network:\n      policy: group\n") +
      Sandbox("iso", kKeepAlive, "    network:\n      policy: none\n"));
  // A second project on the same MSB_HOME, its sandbox free to reach its own group.
  std::string beta = Home() + "/beta";
  ASSERT_TRUE(MakeDirs(beta).ok());
  ASSERT_TRUE(WriteFileAtomic(beta + "/Sandboxfile",
                              "name: beta\nsandboxes:\n" +
                                  Sandbox("intruder", kKeepAlive, "    network:\n      policy: group\n"))
                  .ok());

  auto up = InProject({"up", "--wait", "--wait-timeout", "120"});
  ASSERT_EQ(up.code, 0) << up.out << up.err;
  auto up_beta = Msb({"up", "--wait", "-f", beta + "/Sandboxfile"});
  ASSERT_EQ(up_beta.code, 0) << up_beta.out << up_beta.err;

  // From the host: the published TCP port serves srv's page.
  std::string page = HttpGet(http_port, 30);
  EXPECT_THAT(page, HasSubstr("200 OK")) << page;
  EXPECT_THAT(page, HasSubstr(token + "\n")) << page;
  // Published on 127.0.0.2: served there, and nothing listens on
  // 127.0.0.1 at that port (the connection is refused, not left hanging).
  std::string other_error;
  std::string other_page = HostHttpAt("127.0.0.2", other_port, "GET", "/", "", 30, &other_error);
  EXPECT_EQ(other_error, "");
  EXPECT_THAT(other_page, HasSubstr(token + "\n")) << other_page;
  HostHttpAt("127.0.0.1", other_port, "GET", "/", "", 5, &other_error);
  EXPECT_THAT(other_error, HasSubstr("Connection refused")) << other_error;
  // The published UDP port: the guest's echo answers this datagram.
  std::string ping = "udp-" + std::to_string(rng());
  EXPECT_EQ(UdpEcho(udp_port, ping, 30), ping);

  // By name within the project; srv's name is its group address.
  const std::string srv_ip = GroupAddress("srv");
  std::string out = Exec("cli", FetchByName("srv", "srv") + FetchByName("locked", "locked"));
  EXPECT_THAT(out, HasSubstr("addrsrv=" + srv_ip + "\nrcsrv=0\n" + token + "\n")) << out;
  // locked denies its group peers port 80 (its own health check still passes).
  EXPECT_THAT(out, HasSubstr("addrlocked=" + GroupAddress("locked") + "\n")) << out;
  EXPECT_THAT(out, HasSubstr("rclocked=1")) << out;
  EXPECT_THAT(out, Not(HasSubstr(locked_token))) << out;

  // Profile none: neither the name nor the address gets through.
  out = Exec("iso", FetchByName("srv", "name") + FetchAddress(srv_ip, "ip"));
  EXPECT_THAT(out, HasSubstr("rcname=1")) << out;
  EXPECT_THAT(out, HasSubstr("rcip=1")) << out;
  EXPECT_THAT(out, Not(HasSubstr(token))) << out;

  // Another project: srv is neither a name nor a reachable address there.
  out = Exec("intruder", FetchByName("srv", "name") + FetchAddress(srv_ip, "ip"));
  EXPECT_THAT(out, HasSubstr("addrname=\n")) << out;
  EXPECT_THAT(out, HasSubstr("rcname=1")) << out;
  EXPECT_THAT(out, HasSubstr("rcip=1")) << out;
  EXPECT_THAT(out, Not(HasSubstr(token))) << out;
  // And srv still serves its own project afterwards (the refusals were the policy's).
  EXPECT_THAT(Exec("cli", FetchByName("srv", "again")), HasSubstr("rcagain=0\n" + token)) ;

  // msb ps: the published ports, and the denials each supervisor counted.
  auto ps = Msb({"ps"});
  EXPECT_THAT(ps.out, HasSubstr("PORTS")) << ps.out;
  EXPECT_THAT(ps.out, HasSubstr("127.0.0.1:" + std::to_string(http_port) + "->80/tcp,127.0.0.1:" +
                                std::to_string(udp_port) + "->7/udp,127.0.0.2:" + std::to_string(other_port) +
                                "->80/tcp"))
      << ps.out;
  auto js = nlohmann::json::parse(Msb({"ps", "--json"}).out, nullptr, false);
  ASSERT_TRUE(js.is_array()) << js;
  const auto* srv = Entry(js, "srv");
  ASSERT_NE(srv, nullptr) << js;
  ASSERT_TRUE((*srv)["ports"].is_array()) << *srv;
  ASSERT_EQ((*srv)["ports"].size(), 3u) << *srv;
  EXPECT_EQ((*srv)["ports"][2].value("host_ip", ""), "127.0.0.2") << *srv;
  EXPECT_EQ((*srv)["ports"][2].value("host_port", 0), other_port) << *srv;
  EXPECT_EQ((*srv)["ports"][0].value("host_port", 0), http_port);
  EXPECT_EQ((*srv)["ports"][0].value("guest_port", 0), 80);
  EXPECT_EQ((*srv)["ports"][1].value("protocol", ""), "udp");
  EXPECT_TRUE((*srv)["net"].is_object()) << *srv;
  EXPECT_GE((*srv)["net"].value("tcp_flows", -1), 0) << *srv;
  EXPECT_EQ(Denied(srv), 0u) << *srv;
  const auto* cli = Entry(js, "cli");
  ASSERT_NE(cli, nullptr);
  EXPECT_EQ((*cli)["ports"], nlohmann::json::array());
  EXPECT_GE(Denied(Entry(js, "locked")), 1u) << js;  // cli's ingress
  EXPECT_GE(Denied(Entry(js, "iso")), 1u) << js;
  EXPECT_GE(Denied(Entry(js, "intruder")), 1u) << js;

  EXPECT_EQ(InProject({"down"}).code, 0);
  EXPECT_EQ(Msb({"down", "-f", beta + "/Sandboxfile"}).code, 0);
  EXPECT_TRUE(WaitNoProcess(Home(), 20));
  // Stopped sandboxes leave nothing listening on the published ports.
  UniqueFd again = Loopback(SOCK_STREAM, http_port, true);
  UniqueFd again_udp = Loopback(SOCK_DGRAM, udp_port, true);
  EXPECT_TRUE(BindsOn("127.0.0.2", other_port));
}

TEST_F(NetGroupTest, TakenHostPortFailsUpBeforeAnythingStarts) {
  // Held by this test for the whole of `msb up`.
  UniqueFd held(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(held.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(held.get(), 1), 0);
  socklen_t len = sizeof a;
  ::getsockname(held.get(), reinterpret_cast<sockaddr*>(&a), &len);
  const std::string port = std::to_string(ntohs(a.sin_port));
  WriteSandboxfile("name: busy\nsandboxes:\n" +
                   Sandbox("web", "exec httpd -f -p 80", "    ports:\n      - " + port + ":80\n"));
  auto up = InProject({"up"});
  EXPECT_NE(up.code, 0) << up.out;
  EXPECT_THAT(up.err, HasSubstr("127.0.0.1:" + port + "/tcp is already in use")) << up.err;
  EXPECT_THAT(up.out, Not(HasSubstr("created"))) << up.out;
  EXPECT_TRUE(MyQemus().empty());
  EXPECT_TRUE(MySupervisors().empty());
  auto js = nlohmann::json::parse(Msb({"ps", "--json"}).out, nullptr, false);
  ASSERT_TRUE(js.is_array()) << js;
  for (const auto& e : js) EXPECT_NE(e.value("state", ""), "running") << e;
  // Once the port is free, the same file comes up.
  held.Reset();
  auto retry = InProject({"up"});
  EXPECT_EQ(retry.code, 0) << retry.err;
  EXPECT_EQ(InProject({"down"}).code, 0);
  EXPECT_TRUE(WaitNoProcess(Home(), 20));
}

}  // namespace
}  // namespace msb::testing
