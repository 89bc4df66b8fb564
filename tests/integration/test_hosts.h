// Test hosts for end-to-end network tests: shell commands, listening
// sockets, hosts in a network namespace this test process creates (so
// allowed flows never leave this machine) and a dnsmasq on 127.0.0.1 that
// answers the test's names. Header-only; used by tests that need root.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/child.h"
#include "common/fd.h"
#include "common/io.h"

namespace msb::testing {

struct ShResult {
  int code = -1;
  std::string out;
};

inline ShResult Sh(const std::string& cmd) {
  auto r = RunCapture({"/bin/sh", "-c", cmd});
  if (!r.ok()) return {-1, r.error().message()};
  return {r->status.code, r->output};
}

inline sockaddr_in V4(const std::string& ip, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  EXPECT_EQ(::inet_pton(AF_INET, ip.c_str(), &a.sin_addr), 1) << ip;
  return a;
}

// A listening TCP socket on ip:port in the calling thread's network namespace.
inline UniqueFd ListenTcp(const std::string& ip, uint16_t port, std::string* why) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in a = V4(ip, port);
  if (!fd || ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      ::listen(fd.get(), 64) != 0) {
    *why = "listening on " + ip + ":" + std::to_string(port) + ": " + std::strerror(errno);
    return UniqueFd();
  }
  return fd;
}

inline UniqueFd BindUdp(const std::string& ip, uint16_t port, std::string* why) {
  UniqueFd fd(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  sockaddr_in a = V4(ip, port);
  if (!fd || ::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    *why = "binding udp " + ip + ":" + std::to_string(port) + ": " + std::strerror(errno);
    return UniqueFd();
  }
  return fd;
}

inline uint16_t PortOf(const UniqueFd& fd) {
  sockaddr_in a{};
  socklen_t len = sizeof(a);
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

inline constexpr const char* kNsPrefix = "msbnp-";

inline bool Dead(int pid) { return pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH; }

// Removes what a run of this test killed before its teardown left behind:
// namespaces named msbnp-PID and dnsmasq processes marked
// --domain=msbnp-PID.invalid (dnsmasq drops its parent-death signal when it
// changes credentials), PID being the dead test process.
inline void RemoveStaleTestState() {
  auto list = Sh("ip netns list");
  std::istringstream in(list.out);
  std::string line;
  while (std::getline(in, line)) {
    std::string name = line.substr(0, line.find(' '));
    if (name.rfind(kNsPrefix, 0) != 0) continue;
    if (Dead(std::atoi(name.c_str() + std::strlen(kNsPrefix)))) Sh("ip netns del " + name);
  }
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    int pid = std::atoi(e.path().filename().c_str());
    if (pid <= 0) continue;
    auto cmdline = ReadFile(e.path().string() + "/cmdline");
    if (!cmdline.ok() || cmdline->find("dnsmasq") == std::string::npos) continue;
    std::string marker = std::string("--domain=") + kNsPrefix;
    size_t at = cmdline->find(marker);
    if (at == std::string::npos) continue;
    if (Dead(std::atoi(cmdline->c_str() + at + marker.size()))) ::kill(pid, SIGKILL);
  }
}

// Test hosts in a network namespace: 10.77.K.2 and 10.77.K.3 (the veth's
// host side is 10.77.K.1) and 192.168.K.2 (a /32 route into the veth). The
// destructor removes the namespace, which takes the veth pair and the route.
class NamespaceHosts {
 public:
  bool Create(std::string* why) {
    RemoveStaleTestState();
    name_ = std::string(kNsPrefix) + std::to_string(::getpid());
    std::string host_if = "mnp" + std::to_string(::getpid()) + "h";
    std::string ns_if = "mnp" + std::to_string(::getpid()) + "n";
    // A /24 no interface of this machine uses yet.
    auto addrs = Sh("ip -4 -o addr show; ip -4 route show").out;
    for (int i = 0; i < 200; ++i) {
      int k = 20 + (::getpid() + i) % 200;
      if (addrs.find("10.77." + std::to_string(k) + ".") == std::string::npos &&
          addrs.find("192.168." + std::to_string(k) + ".") == std::string::npos) {
        k_ = k;
        break;
      }
    }
    if (k_ < 0) {
      *why = "no free 10.77.K.0/24 for the test hosts";
      return false;
    }
    std::string k = std::to_string(k_);
    std::string script =
        "set -e; ip netns add " + name_ + "; created=1;"
        "ip link add " + host_if + " type veth peer name " + ns_if + ";"
        "ip link set " + ns_if + " netns " + name_ + ";"
        "ip addr add 10.77." + k + ".1/24 dev " + host_if + ";"
        "ip link set " + host_if + " up;"
        "ip -n " + name_ + " link set lo up;"
        "ip -n " + name_ + " addr add 10.77." + k + ".2/24 dev " + ns_if + ";"
        "ip -n " + name_ + " addr add 10.77." + k + ".3/24 dev " + ns_if + ";"
        "ip -n " + name_ + " addr add 192.168." + k + ".2/32 dev " + ns_if + ";"
        "ip -n " + name_ + " link set " + ns_if + " up;"
        "ip route add 192.168." + k + ".2/32 dev " + host_if + ";";
    created_ = true;
    auto r = Sh(script + " 2>&1");
    if (r.code != 0) {
      *why = "creating network namespace " + name_ + ": " + r.out;
      return false;
    }
    return true;
  }
  ~NamespaceHosts() {
    if (created_) Sh("ip netns del " + name_ + " 2>/dev/null");
  }
  std::string Ip(int host) const { return "10.77." + std::to_string(k_) + "." + std::to_string(host); }
  std::string OtherPrivate() const { return "192.168." + std::to_string(k_) + ".2"; }
  const std::string& name() const { return name_; }

  // A listening TCP (or bound UDP) socket inside the namespace, made by a
  // thread that enters it.
  UniqueFd Listen(const std::string& ip, uint16_t port, std::string* why, bool udp = false) const {
    UniqueFd result;
    std::thread t([&]() {
      UniqueFd ns(::open(("/run/netns/" + name_).c_str(), O_RDONLY | O_CLOEXEC));
      if (!ns || ::setns(ns.get(), CLONE_NEWNET) != 0) {
        *why = "entering network namespace " + name_ + ": " + std::strerror(errno);
        return;
      }
      result = udp ? BindUdp(ip, port, why) : ListenTcp(ip, port, why);
    });
    t.join();
    return result;
  }

 private:
  std::string name_;
  int k_ = -1;
  bool created_ = false;
};

// Reads fd into *got until it contains text, EOF, or the deadline.
inline bool ReadUntilText(int fd, std::string* got, const std::string& text, int deadline_s) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(deadline_s);
  while (got->find(text) == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    char buf[4096];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    got->append(buf, static_cast<size_t>(n));
  }
  return got->find(text) != std::string::npos;
}

// dnsmasq on 127.0.0.1:port answering only the given NAME,IP host records
// of names under .test (local: their other record types get an empty
// answer, never a refusal for want of an upstream server).
class Dnsmasq {
 public:
  bool Start(const std::vector<std::string>& records, std::string* why) {
    for (int attempt = 0; attempt < 5; ++attempt) {
      // A port free right now; dnsmasq fails to bind if someone takes it
      // first, and the next attempt picks another.
      UniqueFd probe(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
      sockaddr_in a = V4("127.0.0.1", 0);
      if (::bind(probe.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) continue;
      socklen_t len = sizeof(a);
      ::getsockname(probe.get(), reinterpret_cast<sockaddr*>(&a), &len);
      port_ = ntohs(a.sin_port);
      probe.Reset();
      int err[2];
      if (::pipe2(err, O_CLOEXEC) != 0) break;
      UniqueFd err_r(err[0]), err_w(err[1]);
      SpawnOptions o;
      o.argv = {"/usr/sbin/dnsmasq", "--keep-in-foreground", "--port=" + std::to_string(port_),
                "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
                "--conf-file=/dev/null", "--local=/test/", "--pid-file=",
                // Marks it as this process's (RemoveStaleTestState); no effect
                // without DHCP or expand-hosts.
                "--domain=" + std::string(kNsPrefix) + std::to_string(::getpid()) + ".invalid", "--user=root", "--log-queries",
                "--log-facility=-"};
      for (const auto& r : records) o.argv.push_back("--host-record=" + r);
      o.stdout_fd = err_w.get();
      o.stderr_fd = err_w.get();
      o.parent_death_signal = SIGKILL;
      auto child = ChildProcess::Spawn(o);
      if (!child.ok()) {
        *why = "starting dnsmasq: " + child.error().message();
        return false;
      }
      child_ = std::move(*child);
      err_w.Reset();
      out_fd_ = std::move(err_r);
      // Ready when it reports its configuration ("started, version ...
      // cachesize" then the --address lines), or failed when it exits.
      if (ReadUntilText(out_fd_.get(), &log_, "compile time options", 20)) return true;
      *why = "dnsmasq did not start: " + log_;
      child_ = ChildProcess();
      log_.clear();
    }
    return false;
  }
  uint16_t port() const { return port_; }
  // Everything dnsmasq logged so far (its queries with --log-queries).
  std::string Log() {
    for (;;) {
      pollfd p{out_fd_.get(), POLLIN, 0};
      if (::poll(&p, 1, 0) <= 0) break;
      char buf[4096];
      ssize_t n = ::read(out_fd_.get(), buf, sizeof(buf));
      if (n <= 0) break;
      log_.append(buf, static_cast<size_t>(n));
    }
    return log_;
  }

 private:
  uint16_t port_ = 0;
  ChildProcess child_;  // killed and reaped by its destructor
  UniqueFd out_fd_;
  std::string log_;
};

}  // namespace msb::testing
