// Integration-test harness: runs the real msb binary against a fresh MSB_HOME,
// the guest kernel built by the set-up, TCG, and a busybox root file system.
// Waits are deadlines on real events (process exit, pipe EOF), never sleeps.
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/socket.h>

#include <cstdint>
#include <map>

#include "common/child.h"
#include "common/result.h"
#include <string>
#include <vector>

namespace msb::testing {

// A workload that keeps a sandbox running until it is stopped: it blocks on a
// FIFO nobody writes (no timer that could run out under load). A shell
// command line, for `sh -c`.
inline constexpr char kKeepAlive[] = "mkfifo /dev/keep-alive && exec cat /dev/keep-alive";
// The same as a Sandboxfile `command:` (a YAML flow sequence).
inline constexpr char kKeepAliveCommand[] =
    "[\"/bin/sh\", \"-c\", \"mkfifo /dev/keep-alive && exec cat /dev/keep-alive\"]";

// The build tree (MSB_BUILD_DIR, else the one the tests were built in) and
// the source tree.
std::string BuildDir();
std::string SourceDir();

struct MsbResult {
  int code = -1;  // exit code, 128+signal when killed
  std::string out;
  std::string err;
};

class MsbTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // Runs msb with args; stdin_data is piped to it. Fails the test past the deadline.
  MsbResult Msb(const std::vector<std::string>& args, const std::string& stdin_data = "",
                int deadline_s = 180);
  // The busybox root file system (built once per build tree).
  const std::string& Rootfs() const { return rootfs_; }
  const std::string& Home() const { return home_; }
  // Starts msb in the background with this test's environment; its stdout and
  // stderr go to out_fd (-2: /dev/null).
  ChildProcess SpawnMsb(const std::vector<std::string>& args, int out_fd = -2);
  // The msb command line and this test's environment, for Msb and SpawnMsb.
  SpawnOptions MsbSpawnOptions(const std::vector<std::string>& args) const;
  // Reads fd into *got until it contains text, EOF, or the deadline.
  static bool ReadUntil(int fd, std::string* got, const std::string& text, int deadline_s = 60);
  // Processes whose command line contains `what` and this test's home.
  std::vector<int> Mine(const std::string& what) const;
  std::vector<int> MyQemus() const { return Mine("qemu-system"); }
  std::vector<int> MySupervisors() const { return Mine("supervisor"); }
  // Runs `msb logs NAME` until its output contains `text` or the deadline
  // passes; returns the last output.
  std::string WaitForLogs(const std::string& name, const std::string& text, int deadline_s = 30);
  // Pids of processes whose command line contains `needle`.
  static std::vector<int> ProcessesMatching(const std::string& needle);
  // Waits until no process matches `needle`, within deadline_s.
  static bool WaitNoProcess(const std::string& needle, int deadline_s);

  std::map<std::string, std::string> env_;
  // Words before the msb binary on its command line (e.g. setpriv, to run it
  // as another user); empty: msb runs as this test does.
  std::vector<std::string> argv_prefix_;
  // The directory msb runs in; empty: the test's own.
  std::string cwd_;

 private:
  std::string home_;
  std::string rootfs_;
};

// The time (ms since the epoch, from its millisecond timestamp) of the first
// line of sandbox `name`'s supervisor.log under home that contains `needle`;
// -1 when there is none. The supervisors' own records order events across
// sandboxes (which started after which became ready or healthy).
int64_t SupervisorLogTime(const std::string& home, const std::string& name, const std::string& needle);

// The Debian root file system with real clients (curl, python3 and its ssl
// module, openssl, ca-certificates), built by scripts/make-debian-image, which
// scripts/test runs before ctest: $MSB_TEST_DEBIAN_ROOTFS, else
// ${XDG_CACHE_HOME:-$HOME/.cache}/msb-test/debian-rootfs. Checked once per
// process; an error naming the command that builds it when it is missing or
// older than the script. Tests never build it: that needs deb.debian.org.
Result<std::string> DebianRootfs();
// The root file system of examples/webapp (python3, python3-redis,
// redis-server, redis-tools, curl), built by `scripts/make-debian-image
// --webapp`, which scripts/test runs before ctest: $MSB_TEST_WEBAPP_ROOTFS,
// else ${XDG_CACHE_HOME:-$HOME/.cache}/msb-test/webapp-rootfs. Checked and
// never built the same way as DebianRootfs.
Result<std::string> WebappRootfs();

// The text of a /proc/PID/status as field -> value ("Uid" -> "0\t0\t0\t0").
std::map<std::string, std::string> StatusFields(const std::string& text);
// /proc/PID/status of a host process, parsed; empty when it is gone.
std::map<std::string, std::string> ProcStatus(int pid);

// A port the kernel just gave out on 127.0.0.1 for `type` (SOCK_STREAM or
// SOCK_DGRAM): free now, its socket closed.
uint16_t FreeLoopbackPort(int type = SOCK_STREAM);

// GET / over HTTP/1.0 from 127.0.0.1:port: the whole response, or what came
// within deadline_s; "" when it cannot connect or send (*error says why).
std::string HostHttpGet(uint16_t port, int deadline_s = 30, std::string* error = nullptr);
// METHOD PATH over HTTP/1.0 from 127.0.0.1:port, with body (and its
// Content-Length) unless the method is GET: the whole response, as HostHttpGet.
std::string HostHttp(uint16_t port, const std::string& method, const std::string& path,
                     const std::string& body = "", int deadline_s = 30, std::string* error = nullptr);
// The same from ipv4:port (another loopback address, a namespace's).
std::string HostHttpAt(const std::string& ipv4, uint16_t port, const std::string& method, const std::string& path,
                       const std::string& body = "", int deadline_s = 30, std::string* error = nullptr);

// A test with a project directory under its home: write the Sandboxfile,
// run project commands with -f pointing at it.
class ProjectTest : public MsbTest {
 protected:
  void SetUp() override;
  void WriteSandboxfile(const std::string& yaml);
  // msb ARGS[0] -f <project>/Sandboxfile ARGS[1...]
  MsbResult InProject(std::vector<std::string> args);
  std::string project_;
};

}  // namespace msb::testing
