// fork/exec with pipes or a pty (spawn.h). Between fork and exec the child
// only calls async-signal-safe functions plus its own string work on memory
// prepared before the fork (agentd is single-threaded, so malloc is safe too).
#include "agentd/spawn.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>

#include "common/capabilities.h"
#include "common/io.h"

namespace msb::agent {
namespace {

constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

void WriteStr(int fd, const std::string& s) {
  ssize_t unused = ::write(fd, s.data(), s.size());
  (void)unused;
}

// In the child: the write end of the start-status pipe (close-on-exec, so a
// command that runs closes it without a byte). Set after fork.
int g_start_status_fd = -1;

// In the child: report why the command never ran, then exit with the code a
// shell gives (127 not found, 126 otherwise).
[[noreturn]] void FailStart(StartFailure why, int code) {
  if (g_start_status_fd >= 0) {
    const char b = static_cast<char>('0' + static_cast<int>(why));
    ssize_t unused = ::write(g_start_status_fd, &b, 1);
    (void)unused;
  }
  ::_exit(code);
}

[[noreturn]] void ChildFail(const std::string& msg, int code,
                            StartFailure why = StartFailure::kSetup) {
  WriteStr(2, "msb: " + msg + "\n");
  FailStart(why, code);
}

// Undoes what agentd changed for itself: blocked signals, ignored SIGPIPE.
void ResetSignals() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_DFL;
  for (int s = 1; s < NSIG; ++s) ::sigaction(s, &sa, nullptr);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
}

std::string EnvValue(const std::vector<std::string>& env, const std::string& key) {
  for (const auto& kv : env)
    if (kv.size() > key.size() && kv.compare(0, key.size(), key) == 0 && kv[key.size()] == '=')
      return kv.substr(key.size() + 1);
  return "";
}

std::vector<char*> CStrings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// In the child: look argv[0] up in PATH and exec it, or exit 127/126.
[[noreturn]] void ExecSearch(std::vector<std::string> argv, std::vector<std::string> env) {
  const std::string cmd = argv[0];
  auto cargv = CStrings(argv);
  auto cenv = CStrings(env);
  if (cmd.empty()) ChildFail(": command not found", 127, StartFailure::kNotFound);
  if (cmd.find('/') != std::string::npos) {
    ::execve(cmd.c_str(), cargv.data(), cenv.data());
    int e = errno;
    if (e == ENOENT) ChildFail(cmd + ": command not found", 127, StartFailure::kNotFound);
    ChildFail(cmd + ": " + std::strerror(e), 126, StartFailure::kNotExecutable);
  }
  std::string path = EnvValue(env, "PATH");
  if (path.empty()) path = kDefaultPath;
  int saved = ENOENT;
  size_t start = 0;
  for (;;) {
    size_t colon = path.find(':', start);
    std::string dir = path.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
    if (dir.empty()) dir = ".";
    std::string full = dir + "/" + cmd;
    struct stat st;
    if (::stat(full.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
      ::execve(full.c_str(), cargv.data(), cenv.data());
      if (errno != ENOENT) saved = errno;
    }
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  if (saved == ENOENT) ChildFail(cmd + ": command not found", 127, StartFailure::kNotFound);
  ChildFail(cmd + ": " + std::strerror(saved), 126, StartFailure::kNotExecutable);
}

void SetIdentity(const Identity& id) {
  if (::geteuid() == 0) {
    if (::setgroups(id.groups.size(), id.groups.data()) != 0)
      ChildFail(std::string("setgroups: ") + std::strerror(errno), 126);
  }
  if (::getegid() != id.gid && ::setgid(id.gid) != 0)
    ChildFail("setgid " + std::to_string(id.gid) + ": " + std::strerror(errno), 126);
  if (::geteuid() != id.uid && ::setuid(id.uid) != 0)
    ChildFail("setuid " + std::to_string(id.uid) + ": " + std::strerror(errno), 126);
}

static_assert(kCapabilityNames.size() == CAP_LAST_CAP + 1,
              "common/capabilities.h and <linux/capability.h> disagree");

std::string CapName(int cap) {
  return cap < static_cast<int>(kCapabilityNames.size()) ? std::string(kCapabilityNames[cap])
                                                          : "capability " + std::to_string(cap);
}

// In the child, before the identity switch (which needs CAP_SETUID/SETGID in
// the effective set): every capability outside `keep` leaves the bounding
// set, so no execve can bring it back; ambient capabilities are cleared.
void LimitBoundingSet(uint64_t keep) {
  for (int cap = 0; cap < 64; ++cap) {
    if (keep & (uint64_t{1} << cap)) continue;
    int present = ::prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
    if (present < 0) break;  // EINVAL: past the kernel's last capability
    if (present == 1 && ::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0)
      ChildFail("dropping " + CapName(cap) + " from the bounding set: " + std::strerror(errno), 126);
  }
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
    ChildFail(std::string("clearing ambient capabilities: ") + std::strerror(errno), 126);
}

// In the child, after the identity switch: a root process keeps only `keep`
// in its permitted and effective sets and nothing inheritable, as docker
// starts a container's process. (A non-root identity lost them all already.)
void LimitProcessCaps(uint64_t keep) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (::syscall(SYS_capget, &header, data) != 0)
    ChildFail(std::string("capget: ") + std::strerror(errno), 126);
  uint64_t permitted = (uint64_t{data[1].permitted} << 32 | data[0].permitted) & keep;
  for (int i = 0; i < 2; ++i) {
    data[i].permitted = static_cast<uint32_t>(permitted >> (32 * i));
    data[i].effective = data[i].permitted;
    data[i].inheritable = 0;
  }
  if (::syscall(SYS_capset, &header, data) != 0)
    ChildFail(std::string("capset: ") + std::strerror(errno), 126);
}

void SetNonBlockCloexec(int fd) {
  (void)SetNonBlocking(fd);
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
}

void CloseFrom(int first) {
  if (::syscall(SYS_close_range, first, ~0u, 0) == 0) return;
  long max = ::sysconf(_SC_OPEN_MAX);
  for (int fd = first; fd < (max > 0 ? max : 1024); ++fd) ::close(fd);
}

struct Pipe {
  UniqueFd read, write;
};

Result<Pipe> MakePipe() {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return Error::FromErrno("pipe2");
  return Pipe{UniqueFd(fds[0]), UniqueFd(fds[1])};
}

// The child's fds 0-2 from (possibly equal) sources; sources are O_CLOEXEC.
void InstallStdio(int in, int out, int err) {
  // dup first to fds >= 3 so that a source already at 0..2 is not clobbered.
  int a = ::fcntl(in, F_DUPFD, 3), b = ::fcntl(out, F_DUPFD, 3), c = ::fcntl(err, F_DUPFD, 3);
  if (a < 0 || b < 0 || c < 0) FailStart(StartFailure::kSetup, 126);
  if (::dup2(a, 0) < 0 || ::dup2(b, 1) < 0 || ::dup2(c, 2) < 0) FailStart(StartFailure::kSetup, 126);
  ::close(a);
  ::close(b);
  ::close(c);
}

Result<UniqueFd> OpenDevNull() {
  int fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (fd < 0) return Error::FromErrno("open /dev/null");
  return UniqueFd(fd);
}

struct Pty {
  UniqueFd master, slave;
};

Result<Pty> OpenPty(int rows, int cols) {
  int m = ::open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (m < 0) return Error::FromErrno("open /dev/ptmx");
  UniqueFd master(m);
  int unlock = 0;
  if (::ioctl(m, TIOCSPTLCK, &unlock) != 0) return Error::FromErrno("unlocking the pty");
  int s = ::ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (s < 0) {
    // Kernels before 4.13: open the slave by number.
    int n = 0;
    if (::ioctl(m, TIOCGPTN, &n) != 0) return Error::FromErrno("TIOCGPTN");
    std::string name = "/dev/pts/" + std::to_string(n);
    s = ::open(name.c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (s < 0) return Error::FromErrno("open " + name);
  }
  UniqueFd slave(s);
  MSB_TRY_STATUS(SetWindowSize(m, rows, cols));
  return Pty{std::move(master), std::move(slave)};
}

}  // namespace

StartFailure ReadStartFailure(int fd) {
  char b = 0;
  if (fd < 0 || ::read(fd, &b, 1) != 1) return StartFailure::kNone;
  switch (b) {
    case '0' + static_cast<int>(StartFailure::kNotFound):
      return StartFailure::kNotFound;
    case '0' + static_cast<int>(StartFailure::kNotExecutable):
      return StartFailure::kNotExecutable;
    case '0' + static_cast<int>(StartFailure::kSetup):
      return StartFailure::kSetup;
    default:
      return StartFailure::kNone;
  }
}

Status SetWindowSize(int pty_master, int rows, int cols) {
  struct winsize ws {};
  ws.ws_row = static_cast<unsigned short>(rows);
  ws.ws_col = static_cast<unsigned short>(cols);
  if (::ioctl(pty_master, TIOCSWINSZ, &ws) != 0) return Error::FromErrno("TIOCSWINSZ");
  return OkStatus();
}

std::vector<std::string> BuildEnv(const std::vector<std::vector<std::string>>& overlays,
                                  const std::string& home, bool tty) {
  std::vector<std::string> order;
  std::map<std::string, std::string> values;
  auto set = [&](const std::string& kv) {
    size_t eq = kv.find('=');
    std::string key = kv.substr(0, eq);
    if (key.empty()) return;
    if (!values.count(key)) order.push_back(key);
    values[key] = eq == std::string::npos ? "" : kv.substr(eq + 1);
  };
  set(std::string("PATH=") + kDefaultPath);
  set("HOME=" + home);
  if (tty) set("TERM=xterm");
  for (const auto& overlay : overlays)
    for (const auto& kv : overlay) set(kv);
  std::vector<std::string> out;
  for (const auto& k : order) out.push_back(k + "=" + values[k]);
  return out;
}

Result<SpawnedProcess> SpawnProcess(const ProcessSpec& spec) {
  MSB_CHECK(!spec.argv.empty(), "SpawnProcess with empty argv");
  SpawnedProcess p;
  UniqueFd child_in, child_out, child_err;
  if (spec.tty) {
    MSB_TRY(Pty pty, OpenPty(spec.rows, spec.cols));
    int dup = ::fcntl(pty.master.get(), F_DUPFD_CLOEXEC, 3);
    if (dup < 0) return Error::FromErrno("dup pty master");
    p.in = std::move(pty.master);
    p.out = UniqueFd(dup);
    child_in = std::move(pty.slave);
  } else {
    if (spec.stdin_open) {
      MSB_TRY(Pipe in, MakePipe());
      p.in = std::move(in.write);
      child_in = std::move(in.read);
    } else {
      MSB_TRY(child_in, OpenDevNull());
    }
    MSB_TRY(Pipe out, MakePipe());
    MSB_TRY(Pipe err, MakePipe());
    p.out = std::move(out.read);
    child_out = std::move(out.write);
    p.err = std::move(err.read);
    child_err = std::move(err.write);
  }
  // The child's report of why its command never ran (ReadStartFailure). The
  // write end sits above 2 so that installing stdio cannot replace it.
  MSB_TRY(Pipe status, MakePipe());
  if (status.write.get() <= 2) {
    int moved = ::fcntl(status.write.get(), F_DUPFD_CLOEXEC, 3);
    if (moved < 0) return Error::FromErrno("dup start-status pipe");
    status.write = UniqueFd(moved);
  }
  // Prepared before fork.
  std::vector<std::string> argv = spec.argv, env = spec.env;
  std::string cwd = spec.cwd.empty() ? "/" : spec.cwd;

  pid_t pid = ::fork();
  if (pid < 0) return Error::FromErrno("fork");
  if (pid == 0) {
    g_start_status_fd = status.write.get();
    ResetSignals();
    ::setsid();
    if (spec.tty) {
      ::ioctl(child_in.get(), TIOCSCTTY, 0);
      InstallStdio(child_in.get(), child_in.get(), child_in.get());
    } else {
      InstallStdio(child_in.get(), child_out.get(), child_err.get());
    }
    if (spec.capabilities) LimitBoundingSet(*spec.capabilities);
    if (spec.identity) SetIdentity(*spec.identity);
    if (spec.capabilities && ::geteuid() == 0) LimitProcessCaps(*spec.capabilities);
    if (spec.no_new_privileges && ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
      ChildFail(std::string("setting no_new_privs: ") + std::strerror(errno), 126);
    if (::chdir(cwd.c_str()) != 0)
      ChildFail("cannot change directory to " + cwd + ": " + std::strerror(errno), 126);
    ExecSearch(std::move(argv), std::move(env));
  }
  p.pid = pid;
  status.write.Reset();  // only the child (until its execve) holds it now
  p.start_status = std::move(status.read);
  for (int fd : {p.in.get(), p.out.get(), p.err.get(), p.start_status.get()})
    if (fd >= 0) SetNonBlockCloexec(fd);
  return p;
}

Result<SpawnedProcess> SpawnFunction(const std::function<int()>& fn, bool with_stdin) {
  SpawnedProcess p;
  UniqueFd child_in;
  if (with_stdin) {
    MSB_TRY(Pipe in, MakePipe());
    p.in = std::move(in.write);
    child_in = std::move(in.read);
  } else {
    MSB_TRY(child_in, OpenDevNull());
  }
  MSB_TRY(Pipe out, MakePipe());
  MSB_TRY(Pipe err, MakePipe());
  pid_t pid = ::fork();
  if (pid < 0) return Error::FromErrno("fork");
  if (pid == 0) {
    ResetSignals();
    ::setsid();
    InstallStdio(child_in.get(), out.write.get(), err.write.get());
    // Nothing of agentd's (the channel, other sessions' pipes) stays open in
    // a child that does not exec.
    CloseFrom(3);
    int code = fn();
    ::_exit(code);
  }
  p.pid = pid;
  p.out = std::move(out.read);
  p.err = std::move(err.read);
  for (int fd : {p.in.get(), p.out.get(), p.err.get()})
    if (fd >= 0) SetNonBlockCloexec(fd);
  return p;
}

}  // namespace msb::agent
