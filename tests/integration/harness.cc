// MsbTest implementation.
#include "tests/integration/harness.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/child.h"
#include "common/fd.h"
#include "common/io.h"

namespace msb::testing {
std::string BuildDir() {
  const char* b = std::getenv("MSB_BUILD_DIR");
  return b != nullptr ? b : MSB_TEST_BUILD_DIR;
}
std::string SourceDir() {
  const char* s = std::getenv("MSB_SOURCE_DIR");
  return s != nullptr ? s : MSB_TEST_SOURCE_DIR;
}

namespace {

std::string KernelPath() {
  static std::string cached = [] {
    if (const char* k = std::getenv("MSB_KERNEL"); k != nullptr && *k) return std::string(k);
    auto r = RunCapture({BuildDir() + "/bin/msb", "kernel", "path"}, false);
    if (!r.ok() || r->status.code != 0) return std::string();
    std::string p = r->output;
    while (!p.empty() && p.back() == '\n') p.pop_back();
    return p;
  }();
  return cached;
}

}  // namespace

void MsbTest::SetUp() {
  std::string kernel = KernelPath();
  if (kernel.empty()) GTEST_SKIP() << "no guest kernel: run scripts/setup (msb kernel build)";
  char tmpl[] = "/tmp/msb-it-XXXXXX";
  ASSERT_NE(::mkdtemp(tmpl), nullptr);
  home_ = tmpl;
  rootfs_ = BuildDir() + "/test-rootfs";
  auto mk = RunCapture({SourceDir() + "/scripts/make-rootfs", rootfs_});
  ASSERT_TRUE(mk.ok() && mk->status.code == 0) << (mk.ok() ? mk->output : mk.error().message());
  env_["MSB_HOME"] = home_;
  env_["MSB_KERNEL"] = kernel;
  env_["MSB_ACCEL"] = "tcg";
}

void MsbTest::TearDown() {
  if (home_.empty()) return;
  // Nothing a test started may outlive it.
  for (int pid : ProcessesMatching(home_)) ::kill(pid, SIGKILL);
  WaitNoProcess(home_, 10);
  std::error_code ec;
  std::filesystem::remove_all(home_, ec);
}

SpawnOptions MsbTest::MsbSpawnOptions(const std::vector<std::string>& args) const {
  SpawnOptions o;
  o.argv = argv_prefix_;
  o.argv.push_back(BuildDir() + "/bin/msb");
  o.argv.insert(o.argv.end(), args.begin(), args.end());
  // The process's environment, with this test's variables over it.
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string kv = *e;
    if (env_.count(kv.substr(0, kv.find('='))) == 0) env.push_back(kv);
  }
  for (const auto& [k, v] : env_) env.push_back(k + "=" + v);
  o.env = env;
  o.cwd = cwd_;
  return o;
}

namespace {

// A root file system scripts/make-debian-image builds: $<variable>, else
// ${XDG_CACHE_HOME:-$HOME/.cache}/msb-test/<name>, checked with the
// script's --check (plus `option`, "" for the test image).
Result<std::string> DebianImage(const std::string& what, const std::string& variable,
                                const std::string& name, const std::string& option) {
  std::string dir;
  if (const char* d = std::getenv(variable.c_str()); d != nullptr && *d) {
    dir = d;
  } else if (const char* c = std::getenv("XDG_CACHE_HOME"); c != nullptr && *c) {
    dir = std::string(c) + "/msb-test/" + name;
  } else if (const char* h = std::getenv("HOME"); h != nullptr && *h) {
    dir = std::string(h) + "/.cache/msb-test/" + name;
  } else {
    return Error(ErrorCode::kUnavailable,
                 "no " + what + ": neither " + variable + " nor HOME is set; build one with "
                 "scripts/make-debian-image " + (option.empty() ? "" : option + " ") + "DIR and set " +
                     variable + "=DIR");
  }
  const std::string script = SourceDir() + "/scripts/make-debian-image";
  std::vector<std::string> argv = {script, "--check"};
  if (!option.empty()) argv.push_back(option);
  argv.push_back(dir);
  auto check = RunCapture(argv);
  if (!check.ok()) return check.error().Wrap("running " + script + " --check");
  if (check->status.code == 0) return dir;
  bool present = ::access((dir + "/.msb-debian-image").c_str(), F_OK) == 0;
  return Error(ErrorCode::kUnavailable,
               "the " + what + " " + dir + (present ? " is older than " + script : " is missing") +
                   ": build it with " + script + " " + (option.empty() ? "" : option + " ") + dir +
                   " (scripts/test does; it needs deb.debian.org)");
}

}  // namespace

int64_t SupervisorLogTime(const std::string& home, const std::string& name, const std::string& needle) {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(home + "/sandboxes", ec)) {
    auto spec = ReadFile(e.path().string() + "/spec.json");
    if (!spec.ok()) continue;
    auto j = nlohmann::json::parse(*spec, nullptr, false);
    if (!j.is_object() || j.value("name", "") != name) continue;
    auto log = ReadFile(e.path().string() + "/supervisor.log");
    if (!log.ok()) return -1;
    std::istringstream lines(*log);
    for (std::string line; std::getline(lines, line);) {
      if (line.find(needle) == std::string::npos) continue;
      struct tm tm {};
      int ms = 0;
      const char* rest = ::strptime(line.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
      if (rest == nullptr || std::sscanf(rest, ".%3dZ", &ms) != 1) return -1;
      return static_cast<int64_t>(::timegm(&tm)) * 1000 + ms;
    }
    return -1;
  }
  return -1;
}

Result<std::string> DebianRootfs() {
  static const Result<std::string> found =
      DebianImage("Debian test image", "MSB_TEST_DEBIAN_ROOTFS", "debian-rootfs", "");
  return found;
}

Result<std::string> WebappRootfs() {
  static const Result<std::string> found =
      DebianImage("webapp image", "MSB_TEST_WEBAPP_ROOTFS", "webapp-rootfs", "--webapp");
  return found;
}

std::map<std::string, std::string> ProcStatus(int pid) {
  auto text = ReadFile("/proc/" + std::to_string(pid) + "/status");
  return text.ok() ? StatusFields(*text) : std::map<std::string, std::string>();
}

std::map<std::string, std::string> StatusFields(const std::string& text) {
  std::map<std::string, std::string> out;
  std::istringstream f(text);
  for (std::string line; std::getline(f, line);) {
    size_t colon = line.find(':');
    if (colon == std::string::npos) continue;
    size_t v = line.find_first_not_of(" \t", colon + 1);
    out[line.substr(0, colon)] = v == std::string::npos ? "" : line.substr(v);
  }
  return out;
}

uint16_t FreeLoopbackPort(int type) {
  UniqueFd fd(::socket(AF_INET, type | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT_EQ(::bind(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  socklen_t len = sizeof a;
  ::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&a), &len);
  return ntohs(a.sin_port);
}

std::string HostHttp(uint16_t port, const std::string& method, const std::string& path,
                     const std::string& body, int deadline_s, std::string* error) {
  return HostHttpAt("127.0.0.1", port, method, path, body, deadline_s, error);
}

std::string HostHttpAt(const std::string& ipv4, uint16_t port, const std::string& method, const std::string& path,
                       const std::string& body, int deadline_s, std::string* error) {
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  if (::inet_pton(AF_INET, ipv4.c_str(), &a.sin_addr) != 1) {
    if (error != nullptr) *error = "not an IPv4 address: " + ipv4;
    return "";
  }
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    if (error != nullptr) *error = "connect " + ipv4 + ":" + std::to_string(port) + ": " + std::strerror(errno);
    return "";
  }
  std::string req = method + " " + path + " HTTP/1.0\r\nHost: localhost\r\n";
  if (method != "GET") req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  req += "\r\n" + body;
  if (::send(fd.get(), req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    if (error != nullptr) *error = "send " + std::to_string(port) + ": " + std::strerror(errno);
    return "";
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(deadline_s);
  std::string got;
  while (got.size() < (1u << 20)) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) break;
    pollfd p{fd.get(), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    char buf[4096];
    ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  return got;
}

std::string HostHttpGet(uint16_t port, int deadline_s, std::string* error) {
  return HostHttp(port, "GET", "/", "", deadline_s, error);
}

MsbResult MsbTest::Msb(const std::vector<std::string>& args, const std::string& stdin_data,
                       int deadline_s) {
  int in[2], out[2], err[2];
  EXPECT_EQ(::pipe2(in, O_CLOEXEC), 0);
  EXPECT_EQ(::pipe2(out, O_CLOEXEC), 0);
  EXPECT_EQ(::pipe2(err, O_CLOEXEC), 0);
  UniqueFd in_r(in[0]), in_w(in[1]), out_r(out[0]), out_w(out[1]), err_r(err[0]), err_w(err[1]);
  SpawnOptions o = MsbSpawnOptions(args);
  o.stdin_fd = in_r.get();
  o.stdout_fd = out_w.get();
  o.stderr_fd = err_w.get();
  auto child = ChildProcess::Spawn(o);
  EXPECT_TRUE(child.ok());
  MsbResult res;
  if (!child.ok()) return res;
  in_r.Reset();
  out_w.Reset();
  err_w.Reset();
  (void)WriteAll(in_w.get(), stdin_data);
  in_w.Reset();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(deadline_s);
  bool out_open = true, err_open = true;
  while (out_open || err_open) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now()).count();
    if (left <= 0) {
      ADD_FAILURE() << "msb did not finish within " << deadline_s << " s";
      child->Kill(SIGKILL);
      break;
    }
    pollfd p[2] = {{out_open ? out_r.get() : -1, POLLIN, 0}, {err_open ? err_r.get() : -1, POLLIN, 0}};
    if (::poll(p, 2, static_cast<int>(left)) <= 0) continue;
    char buf[65536];
    if (out_open && (p[0].revents & (POLLIN | POLLHUP))) {
      ssize_t n = ::read(out_r.get(), buf, sizeof buf);
      if (n <= 0) out_open = false; else res.out.append(buf, static_cast<size_t>(n));
    }
    if (err_open && (p[1].revents & (POLLIN | POLLHUP))) {
      ssize_t n = ::read(err_r.get(), buf, sizeof buf);
      if (n <= 0) err_open = false; else res.err.append(buf, static_cast<size_t>(n));
    }
  }
  res.code = child->Wait().ShellCode();
  return res;
}

ChildProcess MsbTest::SpawnMsb(const std::vector<std::string>& args, int out_fd) {
  SpawnOptions o = MsbSpawnOptions(args);
  o.stdout_fd = out_fd;
  o.stderr_fd = out_fd;
  auto child = ChildProcess::Spawn(o);
  EXPECT_TRUE(child.ok()) << (child.ok() ? "" : child.error().message());
  return child.ok() ? std::move(*child) : ChildProcess();
}

bool MsbTest::ReadUntil(int fd, std::string* got, const std::string& text, int deadline_s) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(deadline_s);
  while (got->find(text) == std::string::npos && std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 1000) <= 0) continue;
    char buf[512];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    got->append(buf, static_cast<size_t>(n));
  }
  return got->find(text) != std::string::npos;
}

std::vector<int> MsbTest::Mine(const std::string& what) const {
  std::vector<int> q;
  auto mine = ProcessesMatching(home_);
  for (int pid : ProcessesMatching(what)) {
    if (std::find(mine.begin(), mine.end(), pid) != mine.end()) q.push_back(pid);
  }
  return q;
}

std::string MsbTest::WaitForLogs(const std::string& name, const std::string& text,
                                 int deadline_s) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(deadline_s);
  std::string out;
  while (std::chrono::steady_clock::now() < deadline) {
    out = Msb({"logs", name}).out;
    if (out.find(text) != std::string::npos) return out;
    pollfd none{};
    ::poll(&none, 0, 100);
  }
  return out;
}

std::vector<int> MsbTest::ProcessesMatching(const std::string& needle) {
  std::vector<int> pids;
  DIR* d = ::opendir("/proc");
  if (d == nullptr) return pids;
  while (dirent* e = ::readdir(d)) {
    int pid = std::atoi(e->d_name);
    if (pid <= 0 || pid == ::getpid()) continue;
    const std::string proc = "/proc/" + std::string(e->d_name);
    std::ifstream f(proc + "/cmdline");
    std::string cmd((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    // A jailed virtiofsd names only its jail's path; its stderr, the
    // sandbox's log opened before the jail, still names the host path.
    char log[4096];
    ssize_t n = ::readlink((proc + "/fd/2").c_str(), log, sizeof log);
    if (cmd.find(needle) != std::string::npos ||
        (n > 0 && std::string(log, n).find(needle) != std::string::npos))
      pids.push_back(pid);
  }
  ::closedir(d);
  return pids;
}

bool MsbTest::WaitNoProcess(const std::string& needle, int deadline_s) {
  // Processes we did not start cannot be waited for: poll /proc against a deadline.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(deadline_s);
  while (std::chrono::steady_clock::now() < deadline) {
    if (ProcessesMatching(needle).empty()) return true;
    pollfd none{};
    ::poll(&none, 0, 50);
  }
  return ProcessesMatching(needle).empty();
}

void ProjectTest::SetUp() {
  MsbTest::SetUp();
  if (IsSkipped()) return;
  project_ = Home() + "/proj";
  ASSERT_TRUE(MakeDirs(project_).ok());
}

void ProjectTest::WriteSandboxfile(const std::string& yaml) {
  ASSERT_TRUE(WriteFileAtomic(project_ + "/Sandboxfile", yaml).ok());
}

MsbResult ProjectTest::InProject(std::vector<std::string> args) {
  args.insert(args.begin() + 1, {"-f", project_ + "/Sandboxfile"});
  return Msb(args);
}

}  // namespace msb::testing
