// agentd's processes: starting the workload, exec'd commands and copy
// helpers, moving their bytes under flow control, reaping them, reporting
// their end, and the shutdown sequence. The loop and the frame dispatch are
// in server.cc, whose theory of operation covers this file too.
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "agentd/agentd_log.h"
#include "agentd/guest_init.h"
#include "agentd/server.h"
#include "agentd/session.h"
#include "agentd/spawn.h"
#include "agentd/users.h"
#include "common/capabilities.h"

namespace msb::agent {

Status Server::StartWorkload(const BootConfig& boot) {
  ExecRequest req;
  req.argv = boot.command;
  req.cwd = boot.workdir;
  req.user = boot.user;
  req.tty = boot.tty;
  req.rows = boot.rows;
  req.cols = boot.cols;
  MSB_TRY(auto session, StartProcess(kWorkloadId, req));
  Queue(kWorkloadId, FrameKind::kStarted, Encode(Started{session->pid}));
  sessions_[kWorkloadId] = std::move(session);
  return OkStatus();
}

Result<std::unique_ptr<Session>> Server::StartProcess(uint32_t id, const ExecRequest& req) {
  ProcessSpec spec;
  spec.argv = req.argv;
  spec.tty = req.tty;
  spec.rows = req.rows;
  spec.cols = req.cols;
  spec.stdin_open = req.stdin_open;
  spec.no_new_privileges = boot_.security.no_new_privileges;
  if (boot_.security.capabilities) spec.capabilities = CapabilityMask(*boot_.security.capabilities);
  spec.cwd = !req.cwd.empty() ? req.cwd : !boot_.workdir.empty() ? boot_.workdir : "/";
  std::string user = !req.user.empty() ? req.user : boot_.user;
  std::string home = "/root";
  if (!user.empty()) {
    MSB_TRY(Identity identity, ResolveUser(user));
    home = identity.home;
    spec.identity = std::move(identity);
  }
  std::vector<std::string> hostname_env;
  if (!boot_.hostname.empty()) hostname_env.push_back("HOSTNAME=" + boot_.hostname);
  spec.env = BuildEnv({hostname_env, ca_env_, boot_.env, req.env}, home, req.tty);
  MSB_TRY(SpawnedProcess p, SpawnProcess(spec));
  auto s = std::make_unique<Session>();
  s->id = id;
  s->kind = SessionKind::kExec;
  s->pid = p.pid;
  s->tty = req.tty;
  s->in = std::move(p.in);
  s->out = std::move(p.out);
  s->err = std::move(p.err);
  s->start_status = std::move(p.start_status);
  s->accepts_input = s->in.valid();
  s->last_progress = Clock::now();
  return s;
}

void Server::Reap() {
  signalfd_siginfo si;
  bool stop = false;
  while (::read(signal_fd_.get(), &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
    if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) stop = true;
  }
  for (;;) {
    int status = 0;
    pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid < 0 && errno == ECHILD) children_left_ = false;
    if (pid <= 0) break;
    for (auto& [id, s] : sessions_) {
      if (s->pid != pid || s->exit) continue;
      ExitInfo e;
      if (WIFSIGNALED(status)) {
        e.code = -1;
        e.signal = WTERMSIG(status);
      } else {
        e.code = WEXITSTATUS(status);
      }
      // The child wrote its report (if any) before it exited.
      e.start_failure = ReadStartFailure(s->start_status.get());
      s->start_status.Reset();
      s->exit = e;
      s->last_progress = Clock::now();
      // Nothing reads the process's stdin any more.
      DropInput(*s);
      break;
    }
  }
  if (stop) {
    Diag("terminated by signal");
    KillSessions(SIGKILL, true);
    DiscardKilledSessions(true);
    state_ = ServerState::kDone;
  }
}

void Server::ReadSession(Session& s, bool err_stream) {
  UniqueFd& fd = err_stream ? s.err : s.out;
  bool streamed = s.kind == SessionKind::kExec || (s.kind == SessionKind::kCopyOut && !err_stream);
  char buf[kMaxChunk];
  size_t limit = sizeof buf;
  if (streamed) limit = std::min<size_t>(limit, s.send.available());
  if (limit == 0) return;
  ssize_t n = ::read(fd.get(), buf, limit);
  if (n > 0) {
    s.last_progress = Clock::now();
    if (streamed) {
      s.send.Consume(static_cast<size_t>(n));
      FrameKind kind = s.kind == SessionKind::kCopyOut ? FrameKind::kData
                       : err_stream                   ? FrameKind::kStderr
                                                      : FrameKind::kStdout;
      Queue(s.id, kind, std::string_view(buf, static_cast<size_t>(n)));
    } else if (err_stream && s.err_text.size() < kMaxErrorText) {
      s.err_text.append(buf, std::min<size_t>(static_cast<size_t>(n), kMaxErrorText - s.err_text.size()));
    }
    return;
  }
  if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) return;
  // EOF, or EIO from a pty master whose last slave closed.
  if (s.tty && !err_stream) s.in.Reset();  // same pty; nothing left to write to
  fd.Reset();
}

void Server::PumpInput(Session& s) {
  while (s.in.valid() && !s.pending.empty()) {
    ssize_t n = ::write(s.in.get(), s.pending.data(), s.pending.size());
    if (n > 0) {
      s.pending.erase(0, static_cast<size_t>(n));
      if (uint32_t give = s.recv.OnConsumed(static_cast<size_t>(n)); give > 0)
        Queue(s.id, FrameKind::kCredit, Encode(Credit{give}));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    DropInput(s);  // EPIPE: the reader is gone
    return;
  }
  if (s.in.valid() && s.pending.empty() && s.host_eof) {
    if (s.tty) {
      // A terminal has no "close stdin": send the EOF character (^D).
      struct termios t;
      char eof = (::tcgetattr(s.in.get(), &t) == 0) ? static_cast<char>(t.c_cc[VEOF]) : '\x04';
      ssize_t unused = ::write(s.in.get(), &eof, 1);
      (void)unused;
    }
    s.in.Reset();
  }
}

// The child no longer reads: discard pending input and return its credit.
void Server::DropInput(Session& s) {
  if (!s.pending.empty()) {
    if (uint32_t give = s.recv.OnConsumed(s.pending.size()); give > 0)
      Queue(s.id, FrameKind::kCredit, Encode(Credit{give}));
    s.pending.clear();
  }
  // A tty's `in` shares the pty with `out`, which still drains the output.
  s.in.Reset();
}

void Server::FinishSessions() {
  auto now = Clock::now();
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    Session& s = *it->second;
    if (s.exit && s.streams_open() && s.send.available() > 0 && now - s.last_progress >= kDrainGrace) {
      // A background process holds the stream open: stop waiting for it.
      s.out.Reset();
      s.err.Reset();
    }
    bool done = s.exit && !s.streams_open() && (s.kind != SessionKind::kCopyIn || s.host_eof);
    if (!done) {
      ++it;
      continue;
    }
    switch (s.kind) {
      case SessionKind::kExec:
        Queue(s.id, FrameKind::kExit, Encode(*s.exit));
        break;
      case SessionKind::kCopyOut:
      case SessionKind::kCopyIn: {
        if (s.kind == SessionKind::kCopyOut) Queue(s.id, FrameKind::kData, "");
        ResultMsg r;
        if (s.exit->code != 0) {
          r.error = !s.err_text.empty() ? s.err_text
                    : s.exit->signal != 0 ? "copy helper killed by signal " + std::to_string(s.exit->signal)
                                          : "copy helper exited with status " + std::to_string(s.exit->code);
        }
        Queue(s.id, FrameKind::kResult, Encode(r));
        break;
      }
    }
    it = sessions_.erase(it);
  }
}

void Server::KillSessions(int signo, bool workload_too) {
  for (auto& [id, s] : sessions_) {
    if (s->exit || s->pid <= 0 || (!workload_too && id == kWorkloadId)) continue;
    // Every child is a session leader: its process group has its own pid.
    ::kill(-s->pid, signo);
    ::kill(s->pid, signo);
  }
}

void Server::DiscardKilledSessions(bool workload_too) {
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    Session& s = *it->second;
    if (!workload_too && it->first == kWorkloadId) {
      ++it;
      continue;
    }
    int status;
    if (!s.exit && s.pid > 0) ::waitpid(s.pid, &status, 0);  // SIGKILLed: ends promptly
    it = sessions_.erase(it);
  }
}

void Server::StartShutdown(std::chrono::milliseconds timeout) {
  (void)Thaw("before shutting down");  // sync and unmount would wait on it forever
  if (state_ == ServerState::kShuttingDown) return;
  Diag("shutting down");
  state_ = ServerState::kShuttingDown;
  shutdown_deadline_ = Clock::now() + timeout;
  kill_sent_ = false;
  if (mode_ == ServerMode::kPid1 && ::getpid() == 1) {
    ::kill(-1, SIGTERM);  // everything but init
  } else {
    KillSessions(SIGTERM, true);
  }
}

void Server::ProgressShutdown() {
  auto now = Clock::now();
  bool pid1 = mode_ == ServerMode::kPid1 && ::getpid() == 1;
  bool all_gone = true;
  if (pid1) {
    all_gone = !children_left_;
  } else {
    for (auto& [id, s] : sessions_)
      if (!s->exit) all_gone = false;
  }
  if (all_gone || (kill_sent_ && now >= kill_deadline_)) return FinishShutdown();
  if (!kill_sent_ && now >= shutdown_deadline_) {
    Diag("shutdown timeout: sending SIGKILL");
    kill_sent_ = true;
    kill_deadline_ = now + kKillGrace;
    if (pid1) {
      ::kill(-1, SIGKILL);
    } else {
      KillSessions(SIGKILL, true);
      Reap();
    }
  }
}

void Server::FinishShutdown() {
  // Report what ended; output still in pipes is not waited for any more.
  for (auto& [id, s] : sessions_) {
    if (!s->exit) continue;
    s->out.Reset();
    s->err.Reset();
    s->host_eof = true;
  }
  FinishSessions();
  if (!broken_) Queue(kChannelId, FrameKind::kResult, Encode(ResultMsg{}));
  FlushBlocking(kFinalFlush);
  if (mode_ == ServerMode::kPid1 && ::getpid() == 1) PowerOff();
  sessions_.clear();
  state_ = ServerState::kDone;
}

}  // namespace msb::agent
