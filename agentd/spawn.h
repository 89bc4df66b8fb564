// Starting the guest's processes for agentd: a command with pipes or a pty,
// as a session leader, with the requested identity, directory and
// environment; or an in-process function (the tar copy helpers) in a forked
// child with pipes. Returns the pid and the parent's ends; reaping is the
// caller's (agentd's SIGCHLD loop). Not a process supervisor.
#pragma once

#include <sys/types.h>

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "agent/messages.h"
#include "agentd/users.h"
#include "common/fd.h"
#include "common/result.h"

namespace msb::agent {

struct ProcessSpec {
  std::vector<std::string> argv;  // argv[0] is looked up in the env's PATH
  std::vector<std::string> env;   // the complete environment, "K=V"
  std::string cwd;                // "" = "/"
  std::optional<Identity> identity;  // none: agentd's own
  bool tty = false;
  int rows = 24;
  int cols = 80;
  bool stdin_open = false;  // pipes mode: a pipe instead of /dev/null
  // Hardening (agent/messages.h SecurityConfig), applied in the child before
  // execve: the bounding set cut to `capabilities` (bit n = capability n;
  // none: unchanged) and ambient cleared before the identity switch; then,
  // for root, permitted and effective cut to it and inheritable cleared;
  // then PR_SET_NO_NEW_PRIVS. A step that fails makes the child exit 126
  // with a message; the command never runs with less hardening than asked.
  std::optional<uint64_t> capabilities;
  bool no_new_privileges = false;
};

struct SpawnedProcess {
  pid_t pid = -1;
  UniqueFd in;   // to the child's stdin: pipe write end, or the pty master
  UniqueFd out;  // the child's stdout pipe read end, or the pty master
  UniqueFd err;  // the child's stderr pipe read end (not in tty mode)
  // SpawnProcess: the read end of the child's start-status pipe. Once the
  // child has been reaped it holds a byte if and only if the command never
  // ran (ReadStartFailure); a command that ran closed the write end at execve.
  UniqueFd start_status;
};

// Why the reaped child of SpawnProcess never ran its command, read from
// SpawnedProcess::start_status (non-blocking; kNone when it ran, or for any
// fd without a report).
StartFailure ReadStartFailure(int fd);

// The parent's ends are non-blocking and close-on-exec. The child is a
// session leader (setsid); with tty the pty is its controlling terminal.
// A command that cannot be found or executed is not an error here: the child
// prints "msb: <cmd>: command not found" (or the errno text) on its stderr,
// reports the reason on its start-status pipe, and exits 127 (not found) or
// 126 (found but not executable, or the directory or identity could not be
// set).
Result<SpawnedProcess> SpawnProcess(const ProcessSpec& spec);

// Runs fn() in a forked child whose stdin, stdout and stderr are pipes to the
// parent (stdin /dev/null unless with_stdin); the child exits with fn's
// return value. For work that must not block agentd's loop.
Result<SpawnedProcess> SpawnFunction(const std::function<int()>& fn, bool with_stdin);

// Sets the pty's window size (TIOCSWINSZ on the master).
Status SetWindowSize(int pty_master, int rows, int cols);

// The environment of a process: defaults (PATH, HOME, TERM when tty), then
// each overlay in order, later "K=V" replacing earlier ones with the same K.
std::vector<std::string> BuildEnv(const std::vector<std::vector<std::string>>& overlays,
                                  const std::string& home, bool tty);

}  // namespace msb::agent
