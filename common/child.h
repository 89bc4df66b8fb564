// ChildProcess: one owned child. The destructor SIGKILLs and reaps it unless it
// was already reaped or released. Not a shell: argv is exec'd as is.
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"

namespace msb {

struct SpawnOptions {
  std::vector<std::string> argv;
  // Replaces the environment when set; inherits otherwise.
  std::optional<std::vector<std::string>> env;
  // fds for the child's 0/1/2; -1 leaves the parent's, -2 opens /dev/null.
  int stdin_fd = -2;
  int stdout_fd = -1;
  int stderr_fd = -1;
  // Child gets this signal when the parent thread dies (PR_SET_PDEATHSIG).
  int parent_death_signal = 0;
  bool new_session = false;
  std::string cwd;
  // Namespace flags (CLONE_NEW*) for the child, which is then made with
  // clone(2) rather than fork. With CLONE_NEWPID the child is its namespace's
  // pid 1 and cannot see that its parent died before the death signal was
  // set (getppid is 0 there).
  unsigned long clone_flags = 0;
  // Runs in the child just before exec, after the fds, session, death signal
  // and cwd are set: returns 0 to go on, or an errno that Spawn then returns
  // as its error. The child of a fork: make system calls only (no locks, no
  // allocation); write a reason to fd 2 when a bare errno would not tell.
  std::function<int()> before_exec;
};

struct ExitStatus {
  int code = -1;    // exit code when exited
  int signal = 0;   // terminating signal when killed
  // Shell convention: code, or 128+signal.
  int ShellCode() const { return signal != 0 ? 128 + signal : code; }
  std::string ToString() const;
};

class ChildProcess {
 public:
  ChildProcess() = default;
  ~ChildProcess();
  ChildProcess(ChildProcess&& o) noexcept;
  ChildProcess& operator=(ChildProcess&& o) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  static Result<ChildProcess> Spawn(const SpawnOptions& opts);

  pid_t pid() const { return pid_; }
  bool running() const { return pid_ > 0; }
  // Non-blocking reap; returns the status once the child has exited.
  std::optional<ExitStatus> TryWait();
  ExitStatus Wait();
  void Kill(int signo);
  // Forget the child without killing it.
  pid_t Release();

 private:
  explicit ChildProcess(pid_t pid) : pid_(pid) {}
  pid_t pid_ = -1;
};

// Runs argv to completion, capturing stdout (stderr merged when asked).
struct RunResult {
  ExitStatus status;
  std::string output;
};
Result<RunResult> RunCapture(const std::vector<std::string>& argv, bool merge_stderr = true);

}  // namespace msb
