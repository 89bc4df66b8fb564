// fork/exec with the requested fd plumbing; the child reports exec failure
// through a CLOEXEC pipe so Spawn can return it as an error.
#include "common/child.h"

#include <fcntl.h>
#include <signal.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/fd.h"

extern char** environ;

namespace msb {

std::string ExitStatus::ToString() const {
  if (signal != 0) return "killed by signal " + std::to_string(signal);
  return "exited with code " + std::to_string(code);
}

ChildProcess::~ChildProcess() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    Wait();
  }
}

ChildProcess::ChildProcess(ChildProcess&& o) noexcept : pid_(o.Release()) {}
ChildProcess& ChildProcess::operator=(ChildProcess&& o) noexcept {
  if (this != &o) {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      Wait();
    }
    pid_ = o.Release();
  }
  return *this;
}

pid_t ChildProcess::Release() {
  pid_t p = pid_;
  pid_ = -1;
  return p;
}

void ChildProcess::Kill(int signo) {
  if (pid_ > 0) ::kill(pid_, signo);
}

static ExitStatus FromWaitStatus(int st) {
  ExitStatus es;
  if (WIFEXITED(st)) es.code = WEXITSTATUS(st);
  if (WIFSIGNALED(st)) es.signal = WTERMSIG(st);
  return es;
}

std::optional<ExitStatus> ChildProcess::TryWait() {
  if (pid_ <= 0) return std::nullopt;
  int st = 0;
  pid_t r = ::waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    pid_ = -1;
    return FromWaitStatus(st);
  }
  return std::nullopt;
}

ExitStatus ChildProcess::Wait() {
  int st = 0;
  while (pid_ > 0) {
    pid_t r = ::waitpid(pid_, &st, 0);
    if (r == pid_) break;
    if (r < 0 && errno != EINTR) {
      pid_ = -1;
      return ExitStatus{};
    }
  }
  pid_ = -1;
  return FromWaitStatus(st);
}

Result<ChildProcess> ChildProcess::Spawn(const SpawnOptions& opts) {
  if (opts.argv.empty()) return Error(ErrorCode::kInvalidArgument, "empty argv");
  std::vector<char*> argv;
  for (const auto& a : opts.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  if (opts.env) {
    for (const auto& e : *opts.env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
  }
  int pipefd[2];
  if (::pipe2(pipefd, O_CLOEXEC) != 0) return Error::FromErrno("pipe2");
  UniqueFd rd(pipefd[0]), wr(pipefd[1]);
  pid_t parent = ::getpid();
  // Without a new stack, clone(2) returns twice like fork.
  pid_t pid = opts.clone_flags != 0
                  ? static_cast<pid_t>(::syscall(SYS_clone, opts.clone_flags | SIGCHLD, nullptr,
                                                 nullptr, nullptr, nullptr))
                  : ::fork();
  if (pid < 0) return Error::FromErrno(opts.clone_flags != 0 ? "clone" : "fork");
  if (pid == 0) {
    auto fail = [&](int err) {
      ssize_t u = ::write(wr.get(), &err, sizeof err);
      (void)u;
      ::_exit(127);
    };
    if (opts.new_session) ::setsid();
    if (opts.parent_death_signal != 0) {
      ::prctl(PR_SET_PDEATHSIG, opts.parent_death_signal);
      const bool own_pid_ns = (opts.clone_flags & CLONE_NEWPID) != 0;
      if (!own_pid_ns && ::getppid() != parent) ::_exit(127);
    }
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    int fds[3] = {opts.stdin_fd, opts.stdout_fd, opts.stderr_fd};
    for (int i = 0; i < 3; ++i) {
      int src = fds[i];
      if (src == -2) {
        src = ::open("/dev/null", i == 0 ? O_RDONLY : O_WRONLY);
        if (src < 0) fail(errno);
      }
      if (src >= 0 && src != i) {
        if (::dup2(src, i) < 0) fail(errno);
      } else if (src == i) {
        int fl = ::fcntl(i, F_GETFD);
        ::fcntl(i, F_SETFD, fl & ~FD_CLOEXEC);
      }
    }
    if (!opts.cwd.empty() && ::chdir(opts.cwd.c_str()) != 0) fail(errno);
    if (opts.before_exec) {
      if (int err = opts.before_exec(); err != 0) fail(err);
    }
    if (opts.env) {
      ::execve(argv[0], argv.data(), envp.data());
      // execve does not search PATH; fall back to execvpe for bare names.
      ::execvpe(argv[0], argv.data(), envp.data());
    } else {
      ::execvp(argv[0], argv.data());
    }
    fail(errno);
  }
  wr.Reset();
  int child_errno = 0;
  ssize_t n;
  do {
    n = ::read(rd.get(), &child_errno, sizeof child_errno);
  } while (n < 0 && errno == EINTR);
  if (n == sizeof child_errno) {
    int st;
    ::waitpid(pid, &st, 0);
    return Error(ErrorCode::kUnavailable,
                 "cannot run " + opts.argv[0] + ": " + std::strerror(child_errno), child_errno);
  }
  return ChildProcess(pid);
}

Result<RunResult> RunCapture(const std::vector<std::string>& argv, bool merge_stderr) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return Error::FromErrno("pipe2");
  UniqueFd rd(p[0]), wr(p[1]);
  SpawnOptions opts;
  opts.argv = argv;
  opts.stdout_fd = wr.get();
  opts.stderr_fd = merge_stderr ? wr.get() : -1;
  MSB_TRY(ChildProcess child, ChildProcess::Spawn(opts));
  wr.Reset();
  RunResult rr;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(rd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    rr.output.append(buf, static_cast<size_t>(n));
  }
  rr.status = child.Wait();
  return rr;
}

}  // namespace msb
