// The sandbox network policy and DNS end to end, with real guests under TCG.
// The guest's peers are this test's own servers: on the host (any address),
// and on test hosts in a network namespace the test creates (veth pair,
// 10.77.K.0/24 and 192.168.K.2), so allowed flows never leave this machine.
// Servers count accepted connections: a refused flow must also never reach
// them. DNS comes from a dnsmasq on 127.0.0.1 that answers the test names.
// Needs root (ip netns); skipped without it.
#include <arpa/inet.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "common/child.h"
#include "common/fd.h"
#include "common/io.h"
#include "common/sha256.h"
#include "orchestrator/control_client.h"
#include "tests/integration/harness.h"
#include "tests/integration/test_hosts.h"

namespace msb::testing {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

size_t Count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

// The datagrams waiting on fd, the first one waited for up to wait_ms.
std::vector<std::string> Datagrams(const UniqueFd& fd, int wait_ms) {
  std::vector<std::string> got;
  pollfd p{fd.get(), POLLIN, 0};
  if (::poll(&p, 1, wait_ms) <= 0) return got;
  char buf[2048];
  for (;;) {
    ssize_t n = ::recv(fd.get(), buf, sizeof(buf), MSG_DONTWAIT);
    if (n < 0) break;
    got.emplace_back(buf, static_cast<size_t>(n));
  }
  return got;
}

// A one-thread HTTP/1.0 server over several listening sockets, each with a
// label; answers every connection with `body` and counts accepts per label.
class CountingServer {
 public:
  explicit CountingServer(std::string body) : body_(std::move(body)) {}
  ~CountingServer() { Stop(); }
  void Add(const std::string& label, UniqueFd fd) {
    counts_[label] = 0;
    listeners_.emplace_back(label, std::move(fd));
  }
  void Start() {
    thread_ = std::thread([this]() { Loop(); });
  }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  int accepted(const std::string& label) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = counts_.find(label);
    EXPECT_NE(it, counts_.end()) << "no listener " << label;
    return it == counts_.end() ? -1 : it->second;
  }
  std::string Counts() {
    std::lock_guard<std::mutex> lock(mu_);
    std::string s;
    for (const auto& [label, n] : counts_) s += label + "=" + std::to_string(n) + " ";
    return s;
  }

 private:
  void Loop() {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(170);
    while (!stop_ && std::chrono::steady_clock::now() < deadline) {
      std::vector<pollfd> p;
      for (auto& l : listeners_) p.push_back({l.second.get(), POLLIN, 0});
      if (::poll(p.data(), p.size(), 50) <= 0) continue;
      for (size_t i = 0; i < p.size(); ++i) {
        if ((p[i].revents & POLLIN) == 0) continue;
        UniqueFd c(::accept4(listeners_[i].second.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (!c) continue;
        {
          std::lock_guard<std::mutex> lock(mu_);
          ++counts_[listeners_[i].first];
        }
        Serve(c);
      }
    }
  }
  void Serve(const UniqueFd& c) {
    std::string req;
    char buf[4096];
    while (req.find("\r\n\r\n") == std::string::npos && req.size() < 65536) {
      pollfd q{c.get(), POLLIN, 0};
      if (::poll(&q, 1, 5000) <= 0) break;
      ssize_t n = ::recv(c.get(), buf, sizeof(buf), 0);
      if (n <= 0) break;
      req.append(buf, static_cast<size_t>(n));
    }
    std::string resp = "HTTP/1.0 200 OK\r\nContent-Length: " + std::to_string(body_.size()) +
                       "\r\n\r\n" + body_;
    size_t off = 0;
    while (off < resp.size()) {
      ssize_t n = ::send(c.get(), resp.data() + off, resp.size() - off, MSG_NOSIGNAL);
      if (n <= 0) break;
      off += static_cast<size_t>(n);
    }
  }

  std::string body_;
  std::vector<std::pair<std::string, UniqueFd>> listeners_;
  std::mutex mu_;
  std::map<std::string, int> counts_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

// A listening TCP socket on [ip6]:port (IPv6 only).
UniqueFd ListenTcp6(const std::string& ip6, uint16_t port, std::string* why) {
  UniqueFd fd(::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_port = htons(port);
  if (!fd || ::inet_pton(AF_INET6, ip6.c_str(), &a.sin6_addr) != 1 ||
      ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || ::listen(fd.get(), 64) != 0) {
    *why = "listening on [" + ip6 + "]:" + std::to_string(port) + ": " + std::strerror(errno);
    return UniqueFd();
  }
  return fd;
}

// A non-loopback IPv4 address of this machine outside the test hosts' ranges.
std::string HostAddress() {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return "";
  std::string found;
  for (ifaddrs* i = list; i != nullptr && found.empty(); i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
    char text[INET_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(i->ifa_addr)->sin_addr, text, sizeof(text));
    std::string ip = text;
    if (ip.rfind("127.", 0) == 0 || ip.rfind("10.77.", 0) == 0) continue;
    found = ip;
  }
  ::freeifaddrs(list);
  return found;
}

class NetPolicyTest : public ProjectTest {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root for network namespaces";
    ProjectTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    std::string why;
    ASSERT_TRUE(hosts_.Create(&why)) << why;
  }

  // The only sandbox directory under this test's home.
  std::string SandboxDir() {
    std::string found;
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(Home() + "/sandboxes", ec)) {
      if (e.is_directory()) found = e.path().string();
    }
    return found;
  }

  // The supervisor's status ("net": denied counters) over its control socket.
  nlohmann::json SupervisorStatus() {
    auto client = orchestrator::ControlClient::Connect(SandboxDir() + "/control.sock");
    EXPECT_TRUE(client.ok()) << (client.ok() ? "" : client.error().message());
    if (!client.ok()) return nlohmann::json();
    auto st = client->GetStatus();
    EXPECT_TRUE(st.ok()) << (st.ok() ? "" : st.error().message());
    return st.ok() ? *st : nlohmann::json();
  }

  // Waits until the supervisor log contains `text`.
  std::string WaitForSupervisorLog(const std::string& text, int deadline_s = 20) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(deadline_s);
    std::string log;
    while (std::chrono::steady_clock::now() < deadline) {
      auto r = ReadFile(SandboxDir() + "/supervisor.log");
      if (r.ok()) log = *r;
      if (log.find(text) != std::string::npos) return log;
      pollfd none{-1, 0, 0};
      ::poll(&none, 0, 100);  // re-read the file: the supervisor appends to it
    }
    return log;
  }

  NamespaceHosts hosts_;
};

// A guest fetch: "<tag>:rc=N" and wget's error text, if any. (This
// busybox's wget crashes with -T or -O -.)
std::string Fetch(const std::string& tag, const std::string& url) {
  return "rm -f /tmp/" + tag + "; wget -q -O /tmp/" + tag + " " + url + " 2>&1; echo " + tag + ":rc=$?;";
}

std::string Token() {
  std::mt19937_64 rng(std::random_device{}());
  return "msb-netpol-" + std::to_string(rng());
}

// The default profile (public) refuses the host (through the
// gateway and at its own addresses), private ranges and the metadata
// address; no server sees a connection; the denials are counted in the
// supervisor's status and logged, rate-limited.
TEST_F(NetPolicyTest, PublicProfileRefusesHostPrivateAndMetadataAndCountsDenials) {
  std::string why;
  std::string host_ip = HostAddress();
  ASSERT_FALSE(host_ip.empty()) << "this machine has no non-loopback IPv4 address";
  CountingServer server("never");
  UniqueFd any = ListenTcp("0.0.0.0", 0, &why);
  ASSERT_TRUE(any) << why;
  std::string port = std::to_string(PortOf(any));
  server.Add("host", std::move(any));
  for (auto [label, ip, p] : std::vector<std::tuple<std::string, std::string, uint16_t>>{
           {"ns2", hosts_.Ip(2), 8080}, {"ns3", hosts_.Ip(3), 8080}, {"ns192", hosts_.OtherPrivate(), 8080}}) {
    UniqueFd fd = hosts_.Listen(ip, p, &why);
    ASSERT_TRUE(fd) << why;
    server.Add(label, std::move(fd));
  }
  server.Start();

  ASSERT_EQ(Msb({"run", "--keep", "--name", "np", Rootfs(), "--", "true"}).code, 0);
  std::string script =
      Fetch("gw", "http://10.0.2.2:" + port + "/") +
      Fetch("hostip", "http://" + host_ip + ":" + port + "/") +
      Fetch("vethhost", "http://" + hosts_.Ip(1) + ":" + port + "/") +
      Fetch("ns2", "http://" + hosts_.Ip(2) + ":8080/") +
      Fetch("ns3", "http://" + hosts_.Ip(3) + ":8080/") +
      Fetch("ns192", "http://" + hosts_.OtherPrivate() + ":8080/") +
      Fetch("meta", "http://169.254.169.254/") +
      // IPv6 forms: the v6 gateway, and NAT64 of a namespace host and of the
      // metadata address (the stack judges the embedded IPv4 address).
      Fetch("gw6", "http://[fd00:6d73:62::2]:" + port + "/") +
      Fetch("nat64ns", "http://[64:ff9b::" + hosts_.Ip(2) + "]:8080/") +
      Fetch("nat64meta", "http://[64:ff9b::169.254.169.254]/") +
      // A burst of denied flows, in parallel, for the rate-limited log.
      "i=0; while [ $i -lt 60 ]; do nc -w 2 " + hosts_.Ip(4) + " 9 </dev/null >/dev/null 2>&1 & i=$((i+1)); done;"
      "wait; echo burst-done";
  auto r = Msb({"exec", "np", "--", "sh", "-c", script});
  EXPECT_EQ(r.code, 0) << r.err;
  for (const char* tag : {"gw", "hostip", "vethhost", "ns2", "ns3", "ns192", "meta", "gw6", "nat64ns",
                          "nat64meta"}) {
    EXPECT_THAT(r.out, HasSubstr(std::string(tag) + ":rc=1")) << r.out;
  }
  EXPECT_EQ(Count(r.out, "Connection refused"), 10u) << r.out;
  EXPECT_THAT(r.out, HasSubstr("burst-done")) << r.out;
  EXPECT_EQ(server.accepted("host"), 0) << server.Counts();
  EXPECT_EQ(server.accepted("ns2"), 0) << server.Counts();
  EXPECT_EQ(server.accepted("ns3"), 0) << server.Counts();
  EXPECT_EQ(server.accepted("ns192"), 0) << server.Counts();

  auto check = Msb({"net", "check", "np", "169.254.169.254", "80/tcp"});
  EXPECT_THAT(check.out, HasSubstr("deny")) << check.out << check.err;
  EXPECT_THAT(check.out, HasSubstr("deny tcp 169.254.169.254:80: profile public: 169.254.169.254 is meta"))
      << check.out;
  EXPECT_THAT(check.out, Not(HasSubstr("allow"))) << check.out;

  // The status counts every denied flow, by reason.
  auto status = SupervisorStatus();
  ASSERT_TRUE(status.contains("net")) << status.dump();
  const auto& net = status["net"];
  ASSERT_TRUE(net.contains("denied") && net["denied"].is_number_unsigned()) << net.dump();
  EXPECT_GE(net["denied"].get<uint64_t>(), 67u) << net.dump();
  std::string by = net.value("denied_by", nlohmann::json::object()).dump();
  EXPECT_THAT(by, HasSubstr("meta")) << by;
  EXPECT_THAT(by, HasSubstr("private")) << by;
  EXPECT_THAT(by, HasSubstr("gateway")) << by;
  EXPECT_THAT(by, HasSubstr("host")) << by;

  // The supervisor log names denials, at most 10 lines a second: the burst
  // of 60 leaves a "suppressed" summary.
  std::string log = WaitForSupervisorLog("suppressed");
  EXPECT_THAT(log, HasSubstr("deny tcp 169.254.169.254:80")) << log;
  EXPECT_THAT(log, HasSubstr("deny tcp 10.0.2.2:" + port)) << log;
  EXPECT_THAT(log, HasSubstr("suppressed")) << log;
  EXPECT_LT(Count(log, "deny tcp " + hosts_.Ip(4) + ":9"), 60u) << log;

  // msb ps --json carries the supervisor's net counters for the sandbox.
  auto ps = Msb({"ps", "--json"});
  EXPECT_EQ(ps.code, 0) << ps.err;
  auto listed = nlohmann::json::parse(ps.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(listed.is_array()) << ps.out;
  nlohmann::json np;
  for (const auto& e : listed) {
    if (e.is_object() && e.value("name", "") == "np") np = e;
  }
  ASSERT_TRUE(np.is_object() && np.contains("net")) << ps.out;
  const auto& n = np["net"];
  ASSERT_TRUE(n.is_object() && n.contains("denied") && n["denied"].is_number()) << np.dump();
  EXPECT_GE(n["denied"].get<uint64_t>(), 67u) << np.dump();
  EXPECT_EQ(Msb({"rm", "np"}).code, 0);
}

// Explicit rules open exactly one address and port of a namespace host
// (TCP and UDP); the page and the datagram arrive intact; the next port and
// the next address stay refused and their servers see nothing.
TEST_F(NetPolicyTest, ExplicitRuleOpensOneNamespaceHostPortOnly) {
  std::string token = Token();
  std::string body;
  while (body.size() < 200 * 1024) body += token + "\n";
  std::string why;
  CountingServer server(body);
  for (auto [label, ip, p] : std::vector<std::tuple<std::string, std::string, uint16_t>>{
           {"ns2:8080", hosts_.Ip(2), 8080}, {"ns2:8081", hosts_.Ip(2), 8081},
           {"ns3:8080", hosts_.Ip(3), 8080}}) {
    UniqueFd fd = hosts_.Listen(ip, p, &why);
    ASSERT_TRUE(fd) << why;
    server.Add(label, std::move(fd));
  }
  server.Start();
  UniqueFd udp_allowed = hosts_.Listen(hosts_.Ip(2), 9999, &why, /*udp=*/true);
  ASSERT_TRUE(udp_allowed) << why;
  UniqueFd udp_denied = hosts_.Listen(hosts_.Ip(2), 9998, &why, /*udp=*/true);
  ASSERT_TRUE(udp_denied) << why;
  // UDP from the guest: busybox nc has no -u; nslookup sends a query.
  auto udp_query = [&](const std::string& label, int port) {
    return "nslookup -type=a -timeout=1 -retry=1 -port=" + std::to_string(port) + " " + label +
           ".test " + hosts_.Ip(2) + " >/dev/null 2>&1;";
  };
  std::string script = udp_query("denied-" + token, 9998) + udp_query("allowed-" + token, 9999) +
                       Fetch("ok", "http://" + hosts_.Ip(2) + ":8080/") +
                       "sha256sum /tmp/ok;" +
                       // The NAT64 form of the same address is that address.
                       Fetch("nat64", "http://[64:ff9b::" + hosts_.Ip(2) + "]:8080/") +
                       "sha256sum /tmp/nat64;" +
                       Fetch("port", "http://" + hosts_.Ip(2) + ":8081/") +
                       Fetch("addr", "http://" + hosts_.Ip(3) + ":8080/");
  auto r = Msb({"run", "--net-rule", "allow@" + hosts_.Ip(2) + ":tcp:8080", "--net-rule",
                "allow@" + hosts_.Ip(2) + ":udp:9999", Rootfs(), "--", "sh", "-c", script});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_THAT(r.out, HasSubstr("ok:rc=0")) << r.out;
  EXPECT_THAT(r.out, HasSubstr("nat64:rc=0")) << r.out;
  EXPECT_THAT(r.out, HasSubstr(Sha256Hex(body) + "  /tmp/ok")) << r.out;
  EXPECT_THAT(r.out, HasSubstr(Sha256Hex(body) + "  /tmp/nat64")) << r.out;
  EXPECT_THAT(r.out, HasSubstr("port:rc=1")) << r.out;
  EXPECT_THAT(r.out, HasSubstr("addr:rc=1")) << r.out;
  EXPECT_EQ(Count(r.out, "Connection refused"), 2u) << r.out;
  EXPECT_EQ(server.accepted("ns2:8080"), 2) << server.Counts();
  EXPECT_EQ(server.accepted("ns2:8081"), 0) << server.Counts();
  EXPECT_EQ(server.accepted("ns3:8080"), 0) << server.Counts();
  // UDP: the allowed port gets the datagram intact, the other nothing.
  auto allowed = Datagrams(udp_allowed, 5000);
  EXPECT_THAT(allowed, ::testing::Contains(HasSubstr("allowed-" + token)));
  EXPECT_THAT(Datagrams(udp_denied, 0), ::testing::IsEmpty());
}

// The gateway's DNS, forwarding to a dnsmasq, drops answers in
// denied ranges (rebinding to loopback or a private host), also for names a
// host-name rule allows (*.corp.test) unless a rule names the range too (A
// answers, and AAAA answers of ::1, ::ffff:127.0.0.1 and fe80::1); and
// a host-name rule allows only the address this sandbox's own DNS answered
// for the name: not before the name was resolved, not another address the
// guest maps the name to itself.
TEST_F(NetPolicyTest, DnsRebindingDefenceAndPinnedHostNameRule) {
  std::string token = Token();
  std::string why;
  Dnsmasq dns;
  // AAAA answers too: loopback, IPv4-mapped loopback and link-local, under a
  // name a rule allows (only the defence stops them), and a public address
  // as the positive control that the guest's resolver shows AAAA answers.
  ASSERT_TRUE(dns.Start({"rebind.test,127.0.0.1", "private.test," + hosts_.Ip(3),
                         "db.corp.test," + hosts_.Ip(4), "allowed.test," + hosts_.Ip(2),
                         "v6loop.corp.test,::1", "v6mapped.corp.test,::ffff:127.0.0.1",
                         "v6link.corp.test,fe80::1", "v6public.corp.test,2606:4700:4700::1111"},
                        &why))
      << why;
  // The host's loopback, at a port the rule allows for *.corp.test: what a
  // rebound AAAA answer would aim the guest at.
  const uint16_t loop_port = FreeLoopbackPort(SOCK_STREAM);
  CountingServer loop_server("never");
  {
    UniqueFd v4 = ListenTcp("127.0.0.1", loop_port, &why);
    ASSERT_TRUE(v4) << why;
    loop_server.Add("127.0.0.1", std::move(v4));
    UniqueFd v6 = ListenTcp6("::1", loop_port, &why);
    ASSERT_TRUE(v6) << why;
    loop_server.Add("::1", std::move(v6));
  }
  loop_server.Start();
  CountingServer server(token);
  for (auto [label, ip, p] : std::vector<std::tuple<std::string, std::string, uint16_t>>{
           {"ns2", hosts_.Ip(2), 8080}, {"ns3", hosts_.Ip(3), 8080}}) {
    UniqueFd fd = hosts_.Listen(ip, p, &why);
    ASSERT_TRUE(fd) << why;
    server.Add(label, std::move(fd));
  }
  server.Start();

  WriteSandboxfile("name: netpol\nsandboxes:\n  box:\n    image: " + Rootfs() +
                   "\n    memory: 128M\n    command: [\"/bin/sh\", \"-c\", \"" + std::string(kKeepAlive) + "\"]\n"
                   "    network:\n      rules:\n        - allow@allowed.test:tcp:8080\n"
                   "        - allow@*.corp.test:tcp:8080\n"
                   "        - allow@*.corp.test:tcp:" + std::to_string(loop_port) + "\n"
                   // Names allowed.test's range (one address, another port):
                   // its private answer may pass; flows still need the name.
                   "        - allow@" + hosts_.Ip(2) + ":udp:7\n"
                   "      dns:\n        servers: [\"127.0.0.1:" + std::to_string(dns.port()) + "\"]\n");
  auto up = InProject({"up"});
  ASSERT_EQ(up.code, 0) << up.out << up.err;

  // Before the name is resolved, its address is just a private host.
  auto direct = Msb({"exec", "box", "--", "sh", "-c", Fetch("direct", "http://" + hosts_.Ip(2) + ":8080/")});
  EXPECT_THAT(direct.out, HasSubstr("direct:rc=1")) << direct.out;
  EXPECT_THAT(direct.out, HasSubstr("Connection refused")) << direct.out;

  // Rebinding: answers in denied ranges are dropped; the names do not resolve.
  auto rebind = Msb({"exec", "box", "--", "sh", "-c",
                     "nslookup rebind.test 2>&1; nslookup private.test 2>&1; nslookup db.corp.test 2>&1;" +
                         Fetch("rebind", "http://rebind.test:8080/") +
                         Fetch("private", "http://private.test:8080/") +
                         Fetch("corp", "http://db.corp.test:8080/")});
  EXPECT_THAT(rebind.out, Not(HasSubstr("127.0.0.1"))) << rebind.out;
  EXPECT_THAT(rebind.out, Not(HasSubstr(hosts_.Ip(3)))) << rebind.out;
  EXPECT_THAT(rebind.out, Not(HasSubstr(hosts_.Ip(4)))) << rebind.out;
  EXPECT_THAT(rebind.out, HasSubstr("rebind:rc=1")) << rebind.out;
  EXPECT_THAT(rebind.out, HasSubstr("private:rc=1")) << rebind.out;
  EXPECT_THAT(rebind.out, HasSubstr("corp:rc=1")) << rebind.out;
  // dnsmasq was asked and answered: the supervisor dropped the answers.
  std::string qlog = dns.Log();
  EXPECT_THAT(qlog, HasSubstr("rebind.test is 127.0.0.1")) << qlog;
  EXPECT_THAT(qlog, HasSubstr("private.test is " + hosts_.Ip(3))) << qlog;
  EXPECT_THAT(qlog, HasSubstr("db.corp.test is " + hosts_.Ip(4))) << qlog;
  EXPECT_EQ(server.accepted("ns2"), 0) << server.Counts();
  EXPECT_EQ(server.accepted("ns3"), 0) << server.Counts();

  // AAAA rebinding: the loopback, mapped and link-local answers are dropped
  // (the names resolve to nothing, and a fetch by name fails before any
  // connection), the public one passes.
  std::string aaaa_script;
  for (const char* name : {"v6loop", "v6mapped", "v6link", "v6public"}) {
    aaaa_script += std::string("echo ") + name + ":; nslookup -type=AAAA " + name + ".corp.test 2>&1;";
  }
  for (const char* name : {"v6loop", "v6mapped", "v6link"}) {
    aaaa_script += Fetch(name, "http://" + std::string(name) + ".corp.test:" + std::to_string(loop_port) + "/");
  }
  auto aaaa = Msb({"exec", "box", "--", "sh", "-c", aaaa_script});
  EXPECT_THAT(aaaa.out, HasSubstr("2606:4700:4700::1111")) << aaaa.out;
  EXPECT_THAT(aaaa.out, Not(HasSubstr("Address: ::1\n"))) << aaaa.out;
  EXPECT_THAT(aaaa.out, Not(HasSubstr("::ffff:127.0.0.1"))) << aaaa.out;
  EXPECT_THAT(aaaa.out, Not(HasSubstr("fe80::1"))) << aaaa.out;
  for (const char* name : {"v6loop", "v6mapped", "v6link"}) {
    EXPECT_THAT(aaaa.out, HasSubstr(std::string(name) + ":rc=1")) << aaaa.out;
  }
  std::string aaaa_log = dns.Log();
  EXPECT_THAT(aaaa_log, HasSubstr("query[AAAA] v6loop.corp.test")) << aaaa_log;
  EXPECT_THAT(aaaa_log, HasSubstr("v6loop.corp.test is ::1")) << aaaa_log;
  EXPECT_THAT(aaaa_log, HasSubstr("v6mapped.corp.test is ::ffff:127.0.0.1")) << aaaa_log;
  EXPECT_THAT(aaaa_log, HasSubstr("v6link.corp.test is fe80::1")) << aaaa_log;
  EXPECT_EQ(loop_server.accepted("127.0.0.1"), 0) << loop_server.Counts();
  EXPECT_EQ(loop_server.accepted("::1"), 0) << loop_server.Counts();

  // The allowed name resolves (the rule lets its answer through) and the
  // guest reaches the address it was given.
  auto allowed = Msb({"exec", "box", "--", "sh", "-c",
                      "nslookup allowed.test 2>&1;" + Fetch("allowed", "http://allowed.test:8080/") +
                          "cat /tmp/allowed; echo"});
  EXPECT_THAT(allowed.out, HasSubstr(hosts_.Ip(2))) << allowed.out;
  EXPECT_THAT(allowed.out, HasSubstr("allowed:rc=0")) << allowed.out;
  EXPECT_THAT(allowed.out, HasSubstr(token)) << allowed.out;
  EXPECT_EQ(server.accepted("ns2"), 1) << server.Counts();

  // The guest maps the name to another address itself: not pinned, refused.
  auto hosts = Msb({"exec", "box", "--", "sh", "-c",
                    "printf '\\n%s allowed.test\\n' " + hosts_.Ip(3) + " >> /etc/hosts;" +
                        Fetch("moved", "http://allowed.test:8080/")});
  EXPECT_THAT(hosts.out, HasSubstr("moved:rc=1")) << hosts.out;
  EXPECT_THAT(hosts.out, HasSubstr("Connection refused")) << hosts.out;
  EXPECT_EQ(server.accepted("ns3"), 0) << server.Counts();
  EXPECT_EQ(server.accepted("ns2"), 1) << server.Counts();

  std::string log = WaitForSupervisorLog("deny tcp " + hosts_.Ip(3) + ":8080");
  EXPECT_THAT(log, HasSubstr("deny tcp " + hosts_.Ip(3) + ":8080")) << log;
  EXPECT_THAT(log, HasSubstr("dropped 127.0.0.1 from the answer for rebind.test")) << log;
  EXPECT_THAT(log, HasSubstr("dropped " + hosts_.Ip(3) + " from the answer for private.test")) << log;
  EXPECT_THAT(log, HasSubstr("dropped " + hosts_.Ip(4) + " from the answer for db.corp.test")) << log;
  EXPECT_THAT(log, HasSubstr("dropped ::1 from the answer for v6loop.corp.test")) << log;
  EXPECT_THAT(log, HasSubstr("dropped ::ffff:127.0.0.1 from the answer for v6mapped.corp.test")) << log;
  EXPECT_THAT(log, HasSubstr("dropped fe80::1 from the answer for v6link.corp.test")) << log;
  EXPECT_THAT(log, Not(HasSubstr("answer for v6public.corp.test"))) << log;
  // The rule let the allowed name's answer through the rebinding defence.
  EXPECT_THAT(log, Not(HasSubstr("answer for allowed.test"))) << log;
  EXPECT_EQ(InProject({"down"}).code, 0);
}

// vm::GroupAddress, recomputed here so the test checks the product's answer.
std::string GroupAddress(const std::string& name) {
  uint32_t h = 2166136261u;
  for (unsigned char c : name) h = (h ^ c) * 16777619u;
  return "10.201." + std::to_string(1 + h % 254) + "." + std::to_string(1 + (h / 254) % 254);
}

// Every IPv6 form that embeds the IPv4 address v4: mapped, translated,
// compatible, NAT64 (64:ff9b::/96 and 64:ff9b:1::/48), 6to4 and Teredo.
std::vector<std::string> EmbeddedForms(const std::string& v4) {
  in_addr a{};
  EXPECT_EQ(::inet_pton(AF_INET, v4.c_str(), &a), 1) << v4;
  uint32_t x = ntohl(a.s_addr);
  auto hex = [](uint32_t v) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "%x:%x", v >> 16, v & 0xffff);
    return std::string(buf);
  };
  return {"::ffff:" + hex(x),       "::ffff:0:" + hex(x),      "::" + hex(x),
          "64:ff9b::" + hex(x),     "64:ff9b:1::" + hex(x),    "2002:" + hex(x) + "::1",
          "2001:0:4136:e378:8000:63bf:" + hex(~x)};
}

uint64_t Number(const nlohmann::json& j, const std::string& key) {
  return j.contains(key) && j[key].is_number_unsigned() ? j[key].get<uint64_t>() : 0;
}

// A hostile guest writes raw IPv6 frames to every embedded form of the
// gateway (TCP and UDP to 53, TCP to 80), of a group member's address (TCP
// and UDP to 80) and of the host's 127.0.0.1 (at a port a server listens on
// there), and to unique local and link-local addresses. Each is refused: TCP probes get a reset, the
// supervisor counts each flow under its embedded-form reason, and the stack
// opens no host socket at all: a flow judged on the embedded IPv4 address
// but carried as an ordinary host connection would reach 10.0.2.2:53 or
// 10.201.x.y on the host's own network instead of the gateway or the peer.
TEST_F(NetPolicyTest, EmbeddedFormsOfTheGatewayAndAGroupMemberAreRefusedWithNoHostSocket) {
  auto debian = DebianRootfs();
  ASSERT_TRUE(debian.ok()) << debian.error().message();
  std::string bin = Home() + "/bin";
  ASSERT_TRUE(MakeDirs(bin).ok());
  std::filesystem::copy_file(MSB_TEST_RAW6_PROBE, bin + "/raw6_probe.py");
  WriteSandboxfile("name: emb\nsandboxes:\n"
                   "  peer:\n    image: " + Rootfs() +
                   "\n    memory: 128M\n    command: [\"/bin/sh\", \"-c\", \"" + std::string(kKeepAlive) + "\"]\n"
                   "    network:\n      policy: group\n"
                   "  box:\n    image: " + *debian +
                   "\n    memory: 256M\n    command: [\"/bin/sh\", \"-c\", \"" + std::string(kKeepAlive) + "\"]\n"
                   "    volumes:\n      - " + bin + ":/opt/t:ro\n"
                   "    network:\n      policy: group\n");
  auto up = InProject({"up"});
  ASSERT_EQ(up.code, 0) << up.out << up.err;

  std::string probes;
  size_t tcp_probes = 0;
  for (const auto& form : EmbeddedForms("10.0.2.2")) {
    probes += " " + form + ",tcp,53 " + form + ",udp,53 " + form + ",tcp,80";
    tcp_probes += 2;
  }
  for (const auto& form : EmbeddedForms(GroupAddress("peer"))) {
    probes += " " + form + ",tcp,80 " + form + ",udp,80";
    tcp_probes += 1;
  }
  // Every embedded form of the host's loopback, at a port a server of this
  // test listens on there; unique local (fc00::/7) and link-local
  // (fe80::/10) destinations.
  std::string why;
  const uint16_t loop_port = FreeLoopbackPort(SOCK_STREAM);
  CountingServer loop_server("never");
  UniqueFd loop_fd = ListenTcp("127.0.0.1", loop_port, &why);
  ASSERT_TRUE(loop_fd) << why;
  loop_server.Add("loopback", std::move(loop_fd));
  loop_server.Start();
  const std::string lp = std::to_string(loop_port);
  for (const auto& form : EmbeddedForms("127.0.0.1")) {
    probes += " " + form + ",tcp," + lp + " " + form + ",udp," + lp;
    tcp_probes += 1;
  }
  for (const char* other : {"fd12:3456:789a::1", "fc00::1", "fe80::1234:5678"}) {
    probes += std::string(" ") + other + ",tcp,80 " + other + ",udp,80 " + other + ",tcp," + lp;
    tcp_probes += 2;
  }
  auto r = Msb({"exec", "box", "--", "sh", "-c", "python3 /opt/t/raw6_probe.py peer" + probes}, "", 120);
  EXPECT_EQ(r.code, 0) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("probe-done")) << r.out << r.err;
  EXPECT_EQ(Count(r.out, "rst "), tcp_probes) << r.out;

  // Observed on the host: every probe refused under its reason, no host socket.
  auto ps = Msb({"ps", "--json"});
  ASSERT_EQ(ps.code, 0) << ps.err;
  auto listed = nlohmann::json::parse(ps.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_TRUE(listed.is_array()) << ps.out;
  nlohmann::json net;
  for (const auto& e : listed) {
    if (e.is_object() && e.value("name", "") == "box" && e.contains("net")) net = e["net"];
  }
  ASSERT_TRUE(net.is_object()) << ps.out;
  const auto by = net.value("denied_by", nlohmann::json::object());
  EXPECT_EQ(Number(by, "embedded gateway"), 21u) << net.dump();
  EXPECT_EQ(Number(by, "embedded group"), 14u) << net.dump();
  // The host's loopback in each of its 7 forms (TCP and UDP), the two
  // unique local and the link-local address (3 probes each).
  EXPECT_EQ(Number(by, "profile group: loopback"), 14u) << net.dump();
  EXPECT_EQ(Number(by, "profile group: private"), 6u) << net.dump();
  EXPECT_EQ(Number(by, "profile group: link-local"), 3u) << net.dump();
  ASSERT_TRUE(net.contains("host_sockets")) << net.dump();
  EXPECT_EQ(Number(net, "host_sockets"), 0u) << net.dump();
  EXPECT_EQ(loop_server.accepted("loopback"), 0) << loop_server.Counts();
  std::cerr << "denied_by: " << by.dump() << "\n";
  EXPECT_EQ(InProject({"down"}).code, 0);
}

// Profile none with one host-name rule: a name no rule allows is refused by
// the gateway and never reaches the upstream resolver (no exfiltration in
// query names), the name the rule allows is forwarded and answered.
TEST_F(NetPolicyTest, DnsUnderNoneForwardsOnlyNamesARuleAllows) {
  std::string token = Token();
  std::string why;
  Dnsmasq dns;
  ASSERT_TRUE(dns.Start({"allowed.test,203.0.113.7", token + ".test,203.0.113.8"}, &why)) << why;
  WriteSandboxfile("name: dnsnone\nsandboxes:\n  box:\n    image: " + Rootfs() +
                   "\n    memory: 128M\n    command: [\"/bin/sh\", \"-c\", \"" + std::string(kKeepAlive) + "\"]\n"
                   "    network:\n      policy: none\n      rules:\n        - allow@allowed.test:tcp:443\n"
                   "      dns:\n        servers: [\"127.0.0.1:" + std::to_string(dns.port()) + "\"]\n");
  auto up = InProject({"up"});
  ASSERT_EQ(up.code, 0) << up.out << up.err;
  auto r = Msb({"exec", "box", "--", "sh", "-c",
                "nslookup " + token + ".test 2>&1; echo exfil:rc=$?; nslookup " + token +
                    ".data.allowed.test 2>&1; nslookup allowed.test 2>&1; echo allowed:rc=$?"});
  EXPECT_THAT(r.out, HasSubstr("allowed:rc=0")) << r.out;
  EXPECT_THAT(r.out, HasSubstr("203.0.113.7")) << r.out;
  EXPECT_THAT(r.out, Not(HasSubstr("203.0.113.8"))) << r.out;
  // dnsmasq saw the allowed name and nothing carrying the token.
  std::string qlog = dns.Log();
  EXPECT_THAT(qlog, HasSubstr("query[A] allowed.test")) << qlog;
  EXPECT_THAT(qlog, Not(HasSubstr(token))) << qlog;
  auto status = SupervisorStatus();
  ASSERT_TRUE(status.contains("net")) << status.dump();
  EXPECT_GE(Number(status["net"], "dns_refused"), 2u) << status.dump();
  EXPECT_GE(Number(status["net"], "dns_forwarded"), 1u) << status.dump();
  std::string log = WaitForSupervisorLog("refused " + token + ".test");
  EXPECT_THAT(log, HasSubstr("refused " + token + ".test: profile none: no rule allows a flow to")) << log;
  EXPECT_EQ(InProject({"down"}).code, 0);
}

// Under profile any (everything but the guarded classes), the cloud
// credential endpoints are refused as meta: AWS EKS Pod Identity (IPv4 and
// IPv6), Oracle Cloud at Customer's and Compute Engine's IPv6 metadata.
// No host socket is opened for them.
TEST_F(NetPolicyTest, CloudCredentialEndpointsAreRefusedUnderAny) {
  ASSERT_EQ(Msb({"run", "--keep", "--name", "anymeta", "--network", "any", Rootfs(), "--", "true"}).code, 0);
  const std::vector<std::pair<std::string, std::string>> endpoints = {
      {"eks4", "169.254.170.23"}, {"eks6", "[fd00:ec2::23]"}, {"occ", "192.0.0.192"},
      {"gce6", "[fd20:ce::254]"}, {"ecs", "169.254.170.2"},   {"imds", "169.254.169.254"}};
  std::string script;
  for (const auto& [tag, host] : endpoints) script += Fetch(tag, "http://" + host + "/");
  auto r = Msb({"exec", "anymeta", "--", "sh", "-c", script});
  for (const auto& [tag, host] : endpoints) EXPECT_THAT(r.out, HasSubstr(tag + ":rc=1")) << r.out;
  EXPECT_EQ(Count(r.out, "Connection refused"), endpoints.size()) << r.out;
  auto status = SupervisorStatus();
  ASSERT_TRUE(status.contains("net")) << status.dump();
  const auto& net = status["net"];
  EXPECT_EQ(Number(net.value("denied_by", nlohmann::json::object()), "profile any: meta"), endpoints.size())
      << net.dump();
  EXPECT_EQ(Number(net, "host_sockets"), 0u) << net.dump();
  std::string log = WaitForSupervisorLog("deny tcp [fd20:ce::254]:80");
  EXPECT_THAT(log, HasSubstr("deny tcp 169.254.170.23:80: profile any: 169.254.170.23 is meta")) << log;
  EXPECT_THAT(log, HasSubstr("deny tcp [fd00:ec2::23]:80: profile any: fd00:ec2::23 is meta")) << log;
  EXPECT_EQ(Msb({"rm", "anymeta"}).code, 0);
}

// A published UDP port is judged by the ingress rules like a TCP one: with
// deny:ingress@loopback:udp:7, this process's datagrams to the port
// published for guest port 7 never reach the guest's echo server (the
// supervisor counts the denial), while the one published for port 8 echoes.
TEST_F(NetPolicyTest, PublishedUdpPortsFollowTheIngressRules) {
  std::string bin = Home() + "/bin";
  ASSERT_TRUE(MakeDirs(bin).ok());
  std::filesystem::copy_file(MSB_TEST_UDP_ECHO, bin + "/udp_echo");
  ::chmod((bin + "/udp_echo").c_str(), 0755);
  const uint16_t denied_port = FreeLoopbackPort(SOCK_DGRAM), open_port = FreeLoopbackPort(SOCK_DGRAM);
  ASSERT_NE(denied_port, open_port);
  WriteSandboxfile("name: udpin\nsandboxes:\n  box:\n    image: " + Rootfs() +
                   "\n    memory: 128M\n    command: [\"/opt/t/udp_echo\", \"7\", \"8\"]\n"
                   "    volumes:\n      - " + bin + ":/opt/t:ro\n"
                   "    ports:\n      - " + std::to_string(denied_port) + ":7/udp\n      - " +
                   std::to_string(open_port) + ":8/udp\n"
                   "    network:\n      rules:\n        - deny:ingress@loopback:udp:7\n");
  auto up = InProject({"up"});
  ASSERT_EQ(up.code, 0) << up.out << up.err;

  auto connected = [](uint16_t port) {
    UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    sockaddr_in a = V4("127.0.0.1", port);
    EXPECT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    return fd;
  };
  UniqueFd denied = connected(denied_port), open = connected(open_port);
  // The denied port first, then the open one until its echo (the echo
  // server may still be starting): both pass the supervisor in that order,
  // and one process echoes both ports, port 7 first (udp_echo.c). So had a
  // denied datagram reached the guest, its echo would have left the guest,
  // and reached `denied`, before the first echo on `open`.
  std::string token = Token();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  std::vector<std::string> echoed;
  while (echoed.empty() && std::chrono::steady_clock::now() < deadline) {
    (void)::send(denied.get(), ("denied-" + token).data(), 7 + token.size(), 0);
    (void)::send(open.get(), ("open-" + token).data(), 5 + token.size(), 0);
    echoed = Datagrams(open, 500);  // resend: UDP promises nothing
  }
  ASSERT_FALSE(echoed.empty()) << "no echo from the open published port";
  EXPECT_EQ(echoed[0], "open-" + token);
  std::string log = WaitForSupervisorLog("deny ingress to published udp port 7");
  EXPECT_THAT(log, HasSubstr("deny ingress to published udp port 7: rule 1 (deny:ingress@loopback:udp:7)")) << log;
  auto status = SupervisorStatus();
  EXPECT_GE(Number(status["net"].value("denied_by", nlohmann::json::object()), "rule 1"), 1u) << status.dump();
  EXPECT_THAT(Datagrams(denied, 0), ::testing::IsEmpty());  // see the barrier above
  EXPECT_EQ(InProject({"down"}).code, 0);
}

}  // namespace
}  // namespace msb::testing
