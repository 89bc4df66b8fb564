// The CLI side of the control socket: a poll loop over the socket, our stdin
// and a self-pipe for signals (SIGWINCH → resize, SIGINT/SIGTERM/SIGHUP →
// forwarded to the guest process when there is no TTY; with a TTY, Ctrl-C is
// a byte the guest's terminal turns into SIGINT).
#include "orchestrator/control_client.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "agent/flow.h"
#include "common/io.h"
#include "common/unix_socket.h"
#include "secrets/placeholder.h"
#include "vm/control.h"
#include "vm/guest_text.h"

namespace msb::orchestrator {

using agent::Frame;
using agent::FrameKind;
using nlohmann::json;

namespace {

int g_signal_pipe = -1;

void OnSignal(int signo) {
  unsigned char b = static_cast<unsigned char>(signo);
  ssize_t u = ::write(g_signal_pipe, &b, 1);
  (void)u;
}

// Puts the terminal in raw mode for its lifetime.
class RawMode {
 public:
  explicit RawMode(int fd) : fd_(fd) {
    if (::tcgetattr(fd_, &saved_) == 0) {
      termios raw = saved_;
      ::cfmakeraw(&raw);
      active_ = ::tcsetattr(fd_, TCSANOW, &raw) == 0;
    }
  }
  ~RawMode() {
    if (active_) ::tcsetattr(fd_, TCSANOW, &saved_);
  }

 private:
  int fd_;
  termios saved_{};
  bool active_ = false;
};

void WindowSize(int fd, int* rows, int* cols) {
  winsize ws{};
  if (::ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0) {
    *rows = ws.ws_row;
    *cols = ws.ws_col;
  }
}

}  // namespace

Result<ControlClient> ControlClient::Connect(const std::string& path) {
  auto fd = ConnectUnix(path);
  if (!fd.ok()) {
    if (fd.error().code() != ErrorCode::kUnavailable) return fd.error();
    return Error(ErrorCode::kUnavailable, "cannot reach the sandbox's supervisor (" +
                                              fd.error().message() + "); is it running? see msb ps");
  }
  return ControlClient(std::move(*fd));
}

Status ControlClient::Send(uint32_t id, FrameKind kind, std::string_view payload) {
  std::string out;
  agent::AppendFrame(out, id, kind, payload);
  while (!out.empty()) {
    ssize_t n = ::send(fd_.get(), out.data(), out.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error::FromErrno("sending to the supervisor");
    }
    out.erase(0, static_cast<size_t>(n));
  }
  return OkStatus();
}

Result<Frame> ControlClient::Receive(int timeout_ms) {
  for (;;) {
    MSB_TRY(auto next, reader_.Next());
    if (next) return std::move(*next);
    pollfd p{fd_.get(), POLLIN, 0};
    int r = ::poll(&p, 1, timeout_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) return Error(ErrorCode::kTimeout, "the supervisor did not answer in time");
    char buf[65536];
    ssize_t n = ::read(fd_.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Error(ErrorCode::kUnavailable, "the supervisor closed the connection");
    reader_.Feed(std::string_view(buf, static_cast<size_t>(n)));
  }
}

Result<json> ControlClient::GetStatus() {
  MSB_TRY_STATUS(Send(0, vm::AsFrameKind(vm::ControlKind::kStatus), "{}"));
  MSB_TRY(Frame f, Receive(10000));
  auto j = json::parse(f.payload, nullptr, false);
  if (j.is_discarded()) return Error(ErrorCode::kProtocol, "malformed status from the supervisor");
  return j;
}

namespace {

// The one kResult (or kError) answering request `id`; frames for other ids
// are not expected on a connection used for nothing else.
Status AwaitResult(const std::function<Result<Frame>()>& receive, uint32_t id, const char* what) {
  for (;;) {
    MSB_TRY(Frame f, receive());
    if (f.id != id && f.id != 0) continue;
    if (f.kind == agent::FrameKind::kError) {
      auto e = agent::ParseErrorMsg(f.payload);
      std::string why = e.ok() ? vm::BoundedGuestText(e->message) : "the sandbox refused";
      // An agentd from before freeze existed does not know the kind.
      if (why.find("unknown frame kind") != std::string::npos) {
        why += " (its guest agent predates snapshots: recreate the sandbox, msb up --force-recreate or msb rm and run it again)";
      }
      return Error(ErrorCode::kUnavailable, std::string(what) + ": " + why);
    }
    if (f.kind != agent::FrameKind::kResult) continue;
    auto r = agent::ParseResultMsg(f.payload);
    if (!r.ok()) return r.error();
    if (r->error) return Error(ErrorCode::kState, std::string(what) + ": " + vm::BoundedGuestText(*r->error));
    return OkStatus();
  }
}

}  // namespace

Status ControlClient::Freeze(int timeout_ms) {
  uint32_t id = next_id_++;
  MSB_TRY_STATUS(Send(id, agent::FrameKind::kFreeze, agent::Encode(agent::Freeze{timeout_ms})));
  // Freezing syncs the guest's dirty data first: allow for it.
  return AwaitResult([&] { return Receive(timeout_ms + 30000); }, id, "freezing the writable layer");
}

Status ControlClient::Thaw() {
  uint32_t id = next_id_++;
  MSB_TRY_STATUS(Send(id, agent::FrameKind::kThaw, "{}"));
  return AwaitResult([&] { return Receive(30000); }, id, "thawing the writable layer");
}

Status ControlClient::UpdatePolicy(const json& policy) {
  MSB_TRY_STATUS(Send(0, vm::AsFrameKind(vm::ControlKind::kUpdatePolicy), policy.dump()));
  MSB_TRY(Frame f, Receive(10000));
  auto r = agent::ParseResultMsg(f.payload);
  if (!r.ok()) return r.error();
  if (r->error) return Error(ErrorCode::kInvalidArgument, *r->error);
  return OkStatus();
}

Status ControlClient::UpdateSecrets(std::string* values) {
  Status sent = Send(0, vm::AsFrameKind(vm::ControlKind::kUpdateSecrets), *values);
  secrets::WipeString(values);
  MSB_TRY_STATUS(sent);
  MSB_TRY(Frame f, Receive(10000));
  auto r = agent::ParseResultMsg(f.payload);
  if (!r.ok()) return r.error();
  if (r->error) return Error(ErrorCode::kInvalidArgument, *r->error);
  return OkStatus();
}

Status ControlClient::Stop(int timeout_ms) {
  MSB_TRY_STATUS(Send(0, vm::AsFrameKind(vm::ControlKind::kStop),
                      json{{"timeout_ms", timeout_ms}}.dump()));
  // The answer comes when the VM is gone; then the supervisor exits.
  auto f = Receive(timeout_ms * 3 + 10000);
  if (!f.ok() && f.error().code() == ErrorCode::kTimeout) return f.error();
  for (;;) {
    auto more = Receive(10000);
    if (!more.ok()) break;  // closed: the supervisor exited
  }
  return OkStatus();
}

Result<int> ControlClient::Exec(agent::ExecRequest req, const ExecIo& io) {
  const uint32_t id = next_id_++;
  req.tty = io.tty;
  req.stdin_open = io.forward_stdin;
  if (io.tty && ::isatty(io.stdin_fd)) WindowSize(io.stdin_fd, &req.rows, &req.cols);
  MSB_TRY_STATUS(Send(id, FrameKind::kExec, agent::Encode(req)));

  int sp[2];
  if (::pipe2(sp, O_CLOEXEC | O_NONBLOCK) != 0) return Error::FromErrno("pipe2");
  UniqueFd sig_rd(sp[0]), sig_wr(sp[1]);
  g_signal_pipe = sig_wr.get();
  struct sigaction sa{};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  struct sigaction old_winch, old_int, old_term, old_hup;
  ::sigaction(SIGWINCH, &sa, &old_winch);
  ::sigaction(SIGINT, &sa, &old_int);
  ::sigaction(SIGTERM, &sa, &old_term);
  ::sigaction(SIGHUP, &sa, &old_hup);
  std::unique_ptr<RawMode> raw;
  if (io.tty && ::isatty(io.stdin_fd)) raw = std::make_unique<RawMode>(io.stdin_fd);

  bool stdin_open = io.forward_stdin;
  agent::SendCredit stdin_credit;     // our kStdin against the guest's window
  agent::ReceiveCredit output_credit;  // its kStdout/kStderr, returned once written
  std::optional<int> exit_code;
  Result<int> result = Error(ErrorCode::kInternal, "exec loop ended without a result");
  for (;;) {
    // Drain complete frames first.
    bool done = false;
    for (;;) {
      auto next = reader_.Next();
      if (!next.ok()) {
        result = next.error();
        done = true;
        break;
      }
      if (!next->has_value()) break;
      Frame f = std::move(**next);
      if (f.id != id) continue;
      if (f.kind == FrameKind::kStdout || f.kind == FrameKind::kStderr) {
        if (Status st = output_credit.OnReceive(f.payload.size()); !st.ok()) {
          result = st.error();
          done = true;
          break;
        }
        int out = f.kind == FrameKind::kStdout ? io.stdout_fd : io.stderr_fd;
        (void)WriteAll(out, f.payload);
        if (uint32_t give = output_credit.OnConsumed(f.payload.size()); give > 0)
          (void)Send(id, FrameKind::kCredit, agent::Encode(agent::Credit{give}));
      } else if (f.kind == FrameKind::kCredit) {
        auto c = agent::ParseCredit(f.payload);
        if (c.ok()) stdin_credit.Grant(c->bytes);
      } else if (f.kind == FrameKind::kExit) {
        auto e = agent::ParseExitInfo(f.payload);
        if (!e.ok()) {
          result = e.error();
        } else {
          exit_code = agent::ShellExitCode(*e);
          result = *exit_code;
        }
        done = true;
        break;
      } else if (f.kind == FrameKind::kError) {
        auto m = agent::ParseErrorMsg(f.payload);
        result = Error(ErrorCode::kUnavailable, m.ok() ? vm::BoundedGuestText(m->message) : "the sandbox refused the request");
        done = true;
        break;
      }
    }
    if (done) break;

    pollfd fds[3];
    int nfds = 0;
    fds[nfds++] = {fd_.get(), POLLIN, 0};
    fds[nfds++] = {sig_rd.get(), POLLIN, 0};
    const bool want_stdin = stdin_open && stdin_credit.available() > 0;
    if (want_stdin) fds[nfds++] = {io.stdin_fd, POLLIN, 0};
    int r = ::poll(fds, nfds, -1);
    if (r < 0) {
      if (errno == EINTR) continue;
      result = Error::FromErrno("poll");
      break;
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      char buf[65536];
      ssize_t n = ::read(fd_.get(), buf, sizeof buf);
      if (n <= 0 && !(n < 0 && errno == EINTR)) {
        result = Error(ErrorCode::kUnavailable,
                       "the connection to the sandbox closed before the command finished");
        break;
      }
      if (n > 0) reader_.Feed(std::string_view(buf, static_cast<size_t>(n)));
    }
    if (fds[1].revents & POLLIN) {
      unsigned char s;
      while (::read(sig_rd.get(), &s, 1) == 1) {
        if (s == SIGWINCH) {
          agent::Resize rs{24, 80};
          WindowSize(io.stdin_fd, &rs.rows, &rs.cols);
          (void)Send(id, FrameKind::kResize, agent::Encode(rs));
        } else {
          (void)Send(id, FrameKind::kSignal, agent::Encode(agent::SignalRequest{s}));
        }
      }
    }
    if (want_stdin && (fds[2].revents & (POLLIN | POLLHUP | POLLERR))) {
      char buf[agent::kMaxChunk];
      size_t cap = std::min<size_t>(sizeof buf, stdin_credit.available());
      ssize_t n = ::read(io.stdin_fd, buf, cap);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        stdin_open = false;
        (void)Send(id, FrameKind::kStdin, {});
      } else {
        stdin_credit.Consume(static_cast<size_t>(n));
        (void)Send(id, FrameKind::kStdin, std::string_view(buf, static_cast<size_t>(n)));
      }
    }
  }
  raw.reset();
  ::sigaction(SIGWINCH, &old_winch, nullptr);
  ::sigaction(SIGINT, &old_int, nullptr);
  ::sigaction(SIGTERM, &old_term, nullptr);
  ::sigaction(SIGHUP, &old_hup, nullptr);
  g_signal_pipe = -1;
  return result;
}

Status ControlClient::CopyIn(const std::string& dir,
                             const std::function<Status(const Sink&)>& produce) {
  const uint32_t id = next_id_++;
  MSB_TRY_STATUS(Send(id, FrameKind::kCopyIn, agent::Encode(agent::PathRequest{dir})));
  agent::SendCredit credit;
  std::optional<std::string> early_error;
  Sink sink = [&](std::string_view chunk) -> msb::Status {
    while (!chunk.empty()) {
      while (credit.available() == 0) {
        MSB_TRY(Frame f, Receive(60000));
        if (f.id != id) continue;
        if (f.kind == FrameKind::kCredit) {
          auto c = agent::ParseCredit(f.payload);
          if (c.ok()) credit.Grant(c->bytes);
        } else if (f.kind == FrameKind::kResult || f.kind == FrameKind::kError) {
          auto r = agent::ParseResultMsg(f.payload);
          std::string msg = r.ok() && r->error ? vm::BoundedGuestText(*r->error) : "the sandbox stopped the copy";
          return Error(ErrorCode::kIo, msg);
        }
      }
      size_t n = std::min<size_t>({chunk.size(), credit.available(), agent::kMaxChunk});
      MSB_TRY_STATUS(Send(id, FrameKind::kData, chunk.substr(0, n)));
      credit.Consume(n);
      chunk.remove_prefix(n);
    }
    return OkStatus();
  };
  MSB_TRY_STATUS(produce(sink));
  MSB_TRY_STATUS(Send(id, FrameKind::kData, {}));
  for (;;) {
    MSB_TRY(Frame f, Receive(120000));
    if (f.id != id) continue;
    if (f.kind == FrameKind::kResult || f.kind == FrameKind::kError) {
      if (f.kind == FrameKind::kError) {
        auto m = agent::ParseErrorMsg(f.payload);
        return Error(ErrorCode::kIo, m.ok() ? vm::BoundedGuestText(m->message) : "copy failed");
      }
      auto r = agent::ParseResultMsg(f.payload);
      if (!r.ok()) return r.error();
      if (r->error) return Error(ErrorCode::kIo, vm::BoundedGuestText(*r->error));
      return OkStatus();
    }
  }
}

Status ControlClient::CopyOut(const std::string& path, const Sink& consume) {
  const uint32_t id = next_id_++;
  MSB_TRY_STATUS(Send(id, FrameKind::kCopyOut, agent::Encode(agent::PathRequest{path})));
  agent::ReceiveCredit credit;  // the guest's kData, returned once consumed
  for (;;) {
    MSB_TRY(Frame f, Receive(120000));
    if (f.id != id) continue;
    if (f.kind == FrameKind::kData) {
      MSB_TRY_STATUS(credit.OnReceive(f.payload.size()));
      if (!f.payload.empty()) {
        // A sink that refuses (the copy's bound, a full disk) ends the copy
        // now: a guest that streams forever must not keep it going.
        MSB_TRY_STATUS(consume(f.payload));
      }
      if (uint32_t give = credit.OnConsumed(f.payload.size()); give > 0)
        MSB_TRY_STATUS(Send(id, FrameKind::kCredit, agent::Encode(agent::Credit{give})));
    } else if (f.kind == FrameKind::kResult || f.kind == FrameKind::kError) {
      if (f.kind == FrameKind::kError) {
        auto m = agent::ParseErrorMsg(f.payload);
        return Error(ErrorCode::kIo, m.ok() ? vm::BoundedGuestText(m->message) : "copy failed");
      }
      auto r = agent::ParseResultMsg(f.payload);
      if (!r.ok()) return r.error();
      if (r->error) return Error(ErrorCode::kIo, vm::BoundedGuestText(*r->error));
      return OkStatus();
    }
  }
}

}  // namespace msb::orchestrator
