// agentd's protocol server (server.h).
//
// Theory of operation
// ===================
// Scope: one channel to the host (the virtio-serial port "msb.agent" when
// PID 1, any connected fd in serve mode), carrying frames (agent/frame.h) whose
// grammar is docs/agent-protocol.md. agentd answers requests; it never starts
// a conversation except for its kHello.
//
// Goals: the workload and exec'd processes see ordinary pipes or a pty; no
// child's output is ever buffered without bound; a misbehaving child (a
// flood, a process that never exits, orphans) cannot wedge the loop; agentd
// never exits while PID 1 and never throws out of the loop. Non-goals: being
// a shell, job control beyond forwarding signals, reconnect-with-replay.
//
// States (ServerState): kAwaitHello → (PID 1) kAwaitBoot → kServing, or
// kBootFailed when kReady carried an error; kServing → kShuttingDown →
// power-off (PID 1) or kDone (serve mode). A frame that its state does not
// allow is answered with kError "not supported while <state>" (Gate()).
//
// Sessions: one per live id. kExec (and the workload, id kWorkloadId) runs a
// command; kCopyIn/kCopyOut run ExtractTar/WriteTar in a forked helper
// (SpawnFunction) whose stdin/stdout is streamed like a process's, so tar
// work never blocks the loop. A session ends with exactly one final frame:
// kExit (exec), kResult (copy; copy-out sends an empty kData first), or
// kError when it could not start. A complaint about a frame for a live id
// goes out on id 0 carrying {"id": N} (SendError), so that an error on id N
// always means N has ended. Frames for an id that has ended are dropped
// silently: kStdin, kCredit, kSignal may cross the final frame.
//
// Flow control, per session (agent/flow.h): `send` counts the host's credit for
// our kStdout/kStderr/kData; a session's output fds are polled only while
// send.available() > 0, and one read takes at most min(kMaxChunk,
// available) bytes, so at most kCreditWindow bytes per id are ever in flight
// or in outbuf_. `recv` counts host bytes (kStdin, copy-in kData) not yet
// written to the child; they wait in `pending` (at most kCreditWindow) and
// are returned as kCredit once written (or dropped, when the child closed
// its stdin).
//
// Timeouts:
// - kDrainGrace (200 ms): after a child exits, its output fds are read until
//   EOF. If a stream stays open (a background process inherited it) and
//   yields nothing for kDrainGrace while credit is available, it is closed
//   and kExit is sent anyway.
// - shutdown: kShutdown{timeout_ms} sends SIGTERM to every process (PID 1:
//   kill(-1); serve mode: each session's process group), SIGKILL when the
//   timeout passes, then waits at most kKillGrace for the last ones.
// - freeze: kFreeze{timeout_ms} freezes the writable layer's file system
//   (FIFREEZE on kUpperMount) so that the host can copy its disk; kThaw
//   thaws it. agentd thaws by itself at thaw_deadline_ (timeout_ms, at most
//   kMaxFreezeMs), when the host goes away and before shutting down, so a
//   host that dies mid-copy never leaves the guest frozen; the kThaw that
//   comes too late is answered with an error, telling the host its copy is
//   not consistent.
// - kReconnectPoll (1 s), PID 1 only: while the host end of the port is
//   closed (POLLHUP), the port is re-polled this often; on reconnection a new
//   kHello starts a new conversation. Exec and copy sessions are killed when
//   the host goes away; the workload keeps running (its output waits for
//   credit).
//
// Data flow, host→agent: read ≤64 KiB from the channel, FrameReader, one
// HandleFrame per frame. An oversized frame poisons the reader: kError on id
// 0, then serve mode exits and PID 1 shuts the guest down. Agent→host:
// frames are appended to outbuf_ and written whenever the channel is
// writable.
#include "agentd/server.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>

#include "agentd/agentd_log.h"
#include "agentd/session.h"
#include "agent/flow.h"
#include "agentd/export.h"
#include "agentd/guest_init.h"
#include "agentd/mounts.h"
#include "agentd/net_config.h"
#include "agentd/spawn.h"
#include "agentd/tar.h"
#include "agentd/trust.h"
#include "agentd/unpack.h"
#include "agentd/users.h"
#include "common/io.h"

namespace msb::agent {

namespace {

constexpr auto kReconnectPoll = std::chrono::milliseconds(1000);
constexpr const char* kNewRoot = "/newroot";

}  // namespace

const char* ToString(ServerState state) {
  switch (state) {
    case ServerState::kAwaitHello: return "awaiting hello";
    case ServerState::kAwaitBoot: return "awaiting boot";
    case ServerState::kBootFailed: return "boot failed";
    case ServerState::kServing: return "serving";
    case ServerState::kShuttingDown: return "shutting down";
    case ServerState::kDone: return "done";
    case ServerState::kUnpacked: return "unpacked";
  }
  return "?";
}

Server::Server(ServerMode mode, UniqueFd in, UniqueFd out)
    : mode_(mode), in_(std::move(in)), out_(std::move(out)) {
  for (int fd : {in_.get(), out_.get()}) {
    if (fd < 0) continue;
    (void)SetNonBlocking(fd);
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  }
  ::signal(SIGPIPE, SIG_IGN);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  if (mode_ == ServerMode::kServe) {
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    // Orphans of our sessions are reparented to us and reaped like in a guest.
    ::prctl(PR_SET_CHILD_SUBREAPER, 1);
  }
  ::sigprocmask(SIG_BLOCK, &set, nullptr);
  signal_fd_.Reset(::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
  MSB_CHECK(signal_fd_.valid(), "signalfd failed");
}

Server::~Server() = default;

// ---- channel ----

void Server::Queue(uint32_t id, FrameKind kind, std::string_view payload) {
  if (!connected_ || broken_) return;
  if (payload.size() > kMaxPayload) {
    SendError(id, "agentd: reply too large");
    return;
  }
  if (out_off_ > 0 && out_off_ * 2 >= outbuf_.size()) {
    outbuf_.erase(0, out_off_);
    out_off_ = 0;
  }
  AppendFrame(outbuf_, id, kind, payload);
}

void Server::SendError(uint32_t id, const std::string& message) {
  // An error on a live id would read as its end: complain on the channel instead.
  if (id != kChannelId && sessions_.count(id)) {
    Queue(kChannelId, FrameKind::kError, Encode(ErrorMsg{Truncated(message), id}));
    return;
  }
  Queue(id, FrameKind::kError, Encode(ErrorMsg{Truncated(message), std::nullopt}));
}

void Server::SendHello() { Queue(kChannelId, FrameKind::kHello, Encode(Hello{kProtocolVersion, "agentd"})); }

void Server::TryFlush() {
  while (out_off_ < outbuf_.size()) {
    ssize_t n = ::write(out_fd(), outbuf_.data() + out_off_, outbuf_.size() - out_off_);
    if (n > 0) {
      out_off_ += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    ChannelLost(std::string("writing the channel: ") + (n < 0 ? std::strerror(errno) : "closed"));
    return;
  }
  outbuf_.clear();
  out_off_ = 0;
}

void Server::FlushBlocking(std::chrono::milliseconds limit) {
  auto deadline = Clock::now() + limit;
  for (;;) {
    TryFlush();
    if (outbuf_.empty() || !connected_) return;
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return;
    pollfd p{out_fd(), POLLOUT, 0};
    ::poll(&p, 1, static_cast<int>(left));
  }
}

void Server::ReadChannel() {
  char buf[64 * 1024];
  ssize_t n = ::read(in_.get(), buf, sizeof buf);
  if (n < 0) {
    if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) return;
    ChannelLost(std::string("reading the channel: ") + std::strerror(errno));
    return;
  }
  if (n == 0) {
    ChannelLost("the host closed the channel");
    return;
  }
  reader_.Feed(std::string_view(buf, static_cast<size_t>(n)));
  while (connected_ && !broken_ && state_ != ServerState::kDone) {
    auto next = reader_.Next();
    if (!next.ok()) {
      ChannelBroken(next.error().message());
      return;
    }
    if (!next->has_value()) return;
    try {
      HandleFrame(std::move(**next));
    } catch (const std::exception& e) {
      SendError(kChannelId, std::string("agentd: internal error: ") + e.what());
    }
  }
}

// The host end went away (EOF, POLLHUP, write error).
void Server::ChannelLost(const std::string& why) {
  if (!connected_) return;
  Diag(why);
  (void)Thaw("because the host went away");
  connected_ = false;
  outbuf_.clear();
  out_off_ = 0;
  bool serve = mode_ == ServerMode::kServe;
  // PID 1 keeps the workload and waits for a new host.
  KillSessions(SIGKILL, serve);
  DiscardKilledSessions(serve);
  reader_ = FrameReader();
  if (serve) state_ = ServerState::kDone;
}

// The host sent something that cannot be framed: nothing after it can be trusted.
void Server::ChannelBroken(const std::string& why) {
  Diag(why);
  SendError(kChannelId, why);
  FlushBlocking(kFinalFlush);
  broken_ = true;
  exit_code_ = 1;
  if (mode_ == ServerMode::kServe) {
    KillSessions(SIGKILL, true);
    DiscardKilledSessions(true);
    state_ = ServerState::kDone;
  } else {
    StartShutdown(std::chrono::milliseconds(5000));
  }
}

void Server::CheckReconnect() {
  pollfd p{in_.get(), POLLIN, 0};
  if (::poll(&p, 1, 0) < 0 || (p.revents & (POLLHUP | POLLERR | POLLNVAL))) return;
  Diag("host reconnected");
  connected_ = true;
  for (auto& [id, s] : sessions_) s->send = SendCredit();
  state_ = ServerState::kAwaitHello;
  SendHello();
}

// ---- frames ----

const char* Server::Gate(FrameKind kind) const {
  bool ok = false;
  switch (state_) {
    case ServerState::kAwaitHello:
      ok = kind == FrameKind::kHello;
      break;
    case ServerState::kAwaitBoot:
      ok = kind == FrameKind::kBoot || kind == FrameKind::kShutdown || kind == FrameKind::kUnpack ||
           kind == FrameKind::kExport;
      break;
    case ServerState::kBootFailed:
    case ServerState::kUnpacked:
      ok = kind == FrameKind::kShutdown;
      break;
    case ServerState::kServing:
      ok = kind != FrameKind::kHello;
      break;
    case ServerState::kShuttingDown:
      ok = kind == FrameKind::kStdin || kind == FrameKind::kData || kind == FrameKind::kCredit ||
           kind == FrameKind::kSignal || kind == FrameKind::kResize;
      break;
    case ServerState::kDone:
      break;
  }
  return ok ? nullptr : ToString(state_);
}

void Server::HandleFrame(Frame f) {
  uint8_t raw = static_cast<uint8_t>(f.kind);
  if (!IsKnownKind(raw)) {
    SendError(f.id, "unknown frame kind " + std::to_string(raw));
    return;
  }
  switch (f.kind) {
    case FrameKind::kReady:
    case FrameKind::kStarted:
    case FrameKind::kStdout:
    case FrameKind::kStderr:
    case FrameKind::kExit:
    case FrameKind::kResult:
    case FrameKind::kLayer:
    case FrameKind::kExported:
      SendError(f.id, "unexpected " + ToString(f.kind) + " frame: only agentd sends it");
      return;
    case FrameKind::kError:
      Diag("host reported an error for id " + std::to_string(f.id) + ": " +
           Truncated(f.payload));
      return;
    default:
      break;
  }
  if (const char* state = Gate(f.kind)) {
    SendError(f.id, ToString(f.kind) + " is not supported while " + state);
    return;
  }
  switch (f.kind) {
    case FrameKind::kHello: return HandleHello(f);
    case FrameKind::kBoot: return HandleBoot(f);
    case FrameKind::kExec: return HandleExec(f);
    case FrameKind::kCopyIn:
    case FrameKind::kCopyOut: return HandleCopy(f);
    case FrameKind::kStdin:
    case FrameKind::kData: return HandleInput(f);
    case FrameKind::kSignal: return HandleSignal(f);
    case FrameKind::kResize: return HandleResize(f);
    case FrameKind::kCredit: return HandleCredit(f);
    case FrameKind::kShutdown: return HandleShutdown(f);
    case FrameKind::kFreeze: return HandleFreeze(f);
    case FrameKind::kThaw: return HandleThaw(f);
    case FrameKind::kUnpack: return HandleUnpack(f);
    case FrameKind::kExport: return HandleExport(f);
    default: SendError(f.id, "unexpected " + ToString(f.kind) + " frame");
  }
}

void Server::HandleHello(const Frame& f) {
  auto hello = ParseHello(f.payload);
  if (!hello.ok()) {
    SendError(kChannelId, hello.error().message());
    return;
  }
  if (hello->version != kProtocolVersion) {
    ChannelBroken("the host speaks agent protocol version " + std::to_string(hello->version) +
                  "; agentd speaks version " + std::to_string(kProtocolVersion));
    return;
  }
  state_ = (mode_ == ServerMode::kPid1 && !booted_) ? ServerState::kAwaitBoot : ServerState::kServing;
}

void Server::HandleBoot(const Frame& f) {
  if (booted_) {
    SendError(kChannelId, "boot: already booted");
    return;
  }
  auto boot = ParseBootConfig(f.payload);
  if (!boot.ok()) {
    SendError(kChannelId, boot.error().message());
    return;
  }
  booted_ = true;
  boot_ = *boot;
  auto fail = [&](const Error& e) {
    Diag("boot failed: " + e.message());
    Queue(kChannelId, FrameKind::kReady, Encode(Ready{Truncated(e.message())}));
    state_ = mode_ == ServerMode::kPid1 ? ServerState::kBootFailed : ServerState::kServing;
  };
  if (mode_ == ServerMode::kPid1) {
    // First, before any process starts or any disk is read: this guest's own
    // randomness and clock, and (restored from a template) its own disks.
    if (auto s = AddEntropy(boot_.entropy); !s.ok()) return fail(s.error().Wrap("seeding the random pool"));
    if (auto s = SetClock(boot_.time_ns); !s.ok()) Diag("setting the clock: " + s.error().message());
    if (boot_.restored) {
      if (auto s = ReprobeDisks(); !s.ok()) return fail(s.error().Wrap("probing the disks again"));
    }
    if (auto s = AssembleRoot(boot_.root, kNewRoot); !s.ok()) return fail(s.error());
    if (!boot_.root.ephemeral) {
      upper_fd_ = UniqueFd(::open(kUpperMount, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (!upper_fd_) Diag(std::string("opening ") + kUpperMount + ": " + std::strerror(errno));
    }
    if (auto s = MountAll(boot_.mounts, kNewRoot); !s.ok()) return fail(s.error());
    if (auto s = SwitchRoot(kNewRoot); !s.ok()) return fail(s.error());
    if (!boot_.hostname.empty() && ::sethostname(boot_.hostname.data(), boot_.hostname.size()) != 0)
      return fail(Error::FromErrno("sethostname " + boot_.hostname));
    if (auto s = LoopbackUp(); !s.ok()) Diag("loopback: " + s.error().message());
    if (boot_.network) {
      if (auto s = ConfigureNetwork(*boot_.network, boot_.hostname); !s.ok()) return fail(s.error());
    }
    // With no CA this undoes an earlier boot's install (kept in the upper layer).
    if (auto s = InstallCa("/", boot_.ca_pem); !s.ok()) return fail(s.error());
    if (!boot_.ca_pem.empty()) ca_env_ = CaEnv();
    // Last, so that resolv.conf, hosts and the CA above went into the upper layer.
    if (boot_.root.read_only) {
      if (auto s = MakeRootReadOnly(); !s.ok()) return fail(s.error());
    }
  }
  if (!boot_.command.empty()) {
    if (auto s = StartWorkload(boot_); !s.ok()) return fail(s.error().Wrap("starting the workload"));
  }
  Queue(kChannelId, FrameKind::kReady, Encode(Ready{}));
  state_ = ServerState::kServing;
}

Status Server::CheckNewId(uint32_t id) const {
  if (id == kWorkloadId)
    return Error(ErrorCode::kInvalidArgument, "id 1 is reserved for the workload");
  if (id < kFirstHostId)
    return Error(ErrorCode::kInvalidArgument, "request ids start at " + std::to_string(kFirstHostId));
  if (sessions_.count(id)) return Error(ErrorCode::kAlreadyExists, "id " + std::to_string(id) + " is in use");
  return OkStatus();
}

Session* Server::Find(uint32_t id) {
  auto it = sessions_.find(id);
  return it == sessions_.end() ? nullptr : it->second.get();
}

void Server::HandleExec(const Frame& f) {
  if (auto s = CheckNewId(f.id); !s.ok()) return SendError(f.id, "exec: " + s.error().message());
  auto req = ParseExecRequest(f.payload);
  if (!req.ok()) return SendError(f.id, req.error().message());
  auto session = StartProcess(f.id, *req);
  if (!session.ok()) return SendError(f.id, "exec " + req->argv[0] + ": " + session.error().message());
  Queue(f.id, FrameKind::kStarted, Encode(Started{(*session)->pid}));
  sessions_[f.id] = std::move(*session);
}

void Server::HandleCopy(const Frame& f) {
  bool in = f.kind == FrameKind::kCopyIn;
  const char* what = in ? "copy-in" : "copy-out";
  if (auto s = CheckNewId(f.id); !s.ok()) return SendError(f.id, std::string(what) + ": " + s.error().message());
  auto req = ParsePathRequest(f.payload);
  if (!req.ok()) return SendError(f.id, req.error().message());
  if (req->path[0] != '/')
    return SendError(f.id, std::string(what) + ": path \"" + req->path + "\" is not absolute");
  std::string path = req->path;
  auto helper = SpawnFunction(
      [in, path]() {
        Status s = in ? ExtractTar(0, path) : WriteTar(1, path);
        if (s.ok()) return 0;
        std::string msg = s.error().message();
        ssize_t unused = ::write(2, msg.data(), msg.size());
        (void)unused;
        return 1;
      },
      in);
  if (!helper.ok()) return SendError(f.id, std::string(what) + ": " + helper.error().message());
  auto s = std::make_unique<Session>();
  s->id = f.id;
  s->kind = in ? SessionKind::kCopyIn : SessionKind::kCopyOut;
  s->pid = helper->pid;
  s->in = std::move(helper->in);
  s->out = std::move(helper->out);
  s->err = std::move(helper->err);
  s->accepts_input = in;
  s->last_progress = Clock::now();
  sessions_[f.id] = std::move(s);
}

void Server::HandleInput(const Frame& f) {
  Session* s = Find(f.id);
  if (s == nullptr) return;  // ended: the frame crossed its kExit / kResult
  bool is_data = f.kind == FrameKind::kData;
  if (is_data != (s->kind == SessionKind::kCopyIn))
    return SendError(f.id, ToString(f.kind) + " is not valid for id " + std::to_string(f.id) +
                               (is_data ? " (not a copy-in)" : " (a copy)"));
  if (!s->accepts_input)
    return SendError(f.id, "stdin is not open for id " + std::to_string(f.id) +
                               " (exec with \"stdin\":true)");
  if (s->host_eof) return SendError(f.id, ToString(f.kind) + " after the end of the stream");
  if (f.payload.empty()) {
    s->host_eof = true;
    return;
  }
  if (auto ok = s->recv.OnReceive(f.payload.size()); !ok.ok())
    return SendError(f.id, ok.error().message());
  if (!s->in.valid()) {
    // The process closed its stdin or ended: drop, but give the credit back.
    if (uint32_t give = s->recv.OnConsumed(f.payload.size()); give > 0)
      Queue(f.id, FrameKind::kCredit, Encode(Credit{give}));
    return;
  }
  s->pending += f.payload;
}

void Server::HandleSignal(const Frame& f) {
  Session* s = Find(f.id);
  if (s == nullptr) return;
  auto req = ParseSignalRequest(f.payload);
  if (!req.ok()) return SendError(f.id, req.error().message());
  if (s->exit) return;
  // A tty session's signal goes to its process group, like a terminal's ^C.
  ::kill(s->tty ? -s->pid : s->pid, req->signal);
}

void Server::HandleResize(const Frame& f) {
  Session* s = Find(f.id);
  if (s == nullptr) return;
  auto req = ParseResize(f.payload);
  if (!req.ok()) return SendError(f.id, req.error().message());
  if (!s->tty) return SendError(f.id, "resize: id " + std::to_string(f.id) + " has no tty");
  if (auto r = SetWindowSize(s->out.valid() ? s->out.get() : s->in.get(), req->rows, req->cols); !r.ok())
    SendError(f.id, "resize: " + r.error().message());
}

void Server::HandleCredit(const Frame& f) {
  Session* s = Find(f.id);
  auto req = ParseCredit(f.payload);
  if (!req.ok()) return SendError(f.id, req.error().message());
  if (s == nullptr) return;
  if (s->send.available() == 0) s->last_progress = Clock::now();
  s->send.Grant(req->bytes);
}

void Server::HandleShutdown(const Frame& f) {
  auto req = ParseShutdown(f.payload);
  if (!req.ok()) return SendError(f.id, req.error().message());
  StartShutdown(std::chrono::milliseconds(req->timeout_ms));
}

void Server::HandleFreeze(const Frame& f) {
  auto answer = [&](const Status& s) {
    Queue(f.id, FrameKind::kResult,
          Encode(ResultMsg{s.ok() ? std::nullopt : std::optional<std::string>(s.error().message())}));
  };
  auto req = ParseFreeze(f.payload);
  if (!req.ok()) return answer(req.error());
  if (!upper_fd_) {
    return answer(Error(ErrorCode::kUnavailable,
                        "freeze: this sandbox has no disk-backed writable layer (ephemeral or read-only root)"));
  }
  if (frozen_) return answer(Error(ErrorCode::kState, "freeze: the writable layer is already frozen"));
  // Blocks until the file system is synced and its journal committed.
  if (::ioctl(upper_fd_.get(), FIFREEZE, 0) != 0) return answer(Error::FromErrno("freeze: FIFREEZE"));
  frozen_ = true;
  thaw_deadline_ = Clock::now() + std::chrono::milliseconds(req->timeout_ms);
  Diag("writable layer frozen for at most " + std::to_string(req->timeout_ms) + " ms");
  answer(OkStatus());
}

void Server::HandleThaw(const Frame& f) {
  Status s = frozen_ ? Thaw("on request")
                     : Status(Error(ErrorCode::kState,
                                    "thaw: the writable layer is not frozen (thawed after its timeout, or never frozen)"));
  Queue(f.id, FrameKind::kResult,
        Encode(ResultMsg{s.ok() ? std::nullopt : std::optional<std::string>(s.error().message())}));
}

Status Server::Thaw(const std::string& why) {
  if (!frozen_) return OkStatus();
  frozen_ = false;
  if (::ioctl(upper_fd_.get(), FITHAW, 0) != 0) {
    Status s = Error::FromErrno("thaw: FITHAW");
    Diag(s.error().message());
    return s;
  }
  Diag("writable layer thawed " + why);
  return OkStatus();
}

// A builder VM's first steps, as HandleBoot's for a sandbox: its own
// randomness and clock and, restored from a template, its own disks.
Status Server::StartBuilder(const GuestStart& start) {
  if (auto s = AddEntropy(start.entropy); !s.ok()) return s.error().Wrap("seeding the random pool");
  if (auto s = SetClock(start.time_ns); !s.ok()) Diag("setting the clock: " + s.error().message());
  if (start.restored) {
    if (auto s = ReprobeDisks(); !s.ok()) return s.error().Wrap("probing the disks again");
  }
  return OkStatus();
}

// Unpack mode (unpack.h): instead of kBoot, PID 1 applies image layers onto
// a target disk and reports each layer; the loop is blocked meanwhile (there
// is nothing else to serve), and afterwards only kShutdown is.
void Server::HandleUnpack(const Frame& f) {
  if (mode_ != ServerMode::kPid1)
    return SendError(kChannelId, "unpack: only agentd as the guest's PID 1 unpacks layers");
  auto req = ParseUnpackRequest(f.payload);
  if (!req.ok()) return SendError(kChannelId, req.error().message());
  booted_ = true;
  state_ = ServerState::kUnpacked;
  Status s = StartBuilder(req->start);
  if (s.ok()) s = RunUnpack(*req, [this](const LayerReport& r) {
    Queue(kChannelId, FrameKind::kLayer, Encode(r));
    FlushBlocking(std::chrono::seconds(10));
  });
  if (!s.ok()) Diag("unpack failed: " + s.error().message());
  Queue(kChannelId, FrameKind::kResult,
        Encode(ResultMsg{s.ok() ? std::nullopt : std::optional<std::string>(Truncated(s.error().message()))}));
}

// Export mode (export.h): like unpack, instead of kBoot; the tars of a
// snapshot's layers are written onto output disks, one report per layer.
void Server::HandleExport(const Frame& f) {
  if (mode_ != ServerMode::kPid1)
    return SendError(kChannelId, "export: only agentd as the guest's PID 1 exports layers");
  auto req = ParseExportRequest(f.payload);
  if (!req.ok()) return SendError(kChannelId, req.error().message());
  booted_ = true;
  state_ = ServerState::kUnpacked;
  Status s = StartBuilder(req->start);
  if (s.ok()) s = RunExport(*req, [this](const ExportReport& r) {
    Queue(kChannelId, FrameKind::kExported, Encode(r));
    FlushBlocking(std::chrono::seconds(10));
  });
  if (!s.ok()) Diag("export failed: " + s.error().message());
  Queue(kChannelId, FrameKind::kResult,
        Encode(ResultMsg{s.ok() ? std::nullopt : std::optional<std::string>(Truncated(s.error().message()))}));
}

int Server::PollTimeoutMs() const {
  auto now = Clock::now();
  Clock::time_point wake = Clock::time_point::max();
  if (mode_ == ServerMode::kPid1 && !connected_) wake = now + kReconnectPoll;
  if (state_ == ServerState::kShuttingDown) wake = std::min(wake, kill_sent_ ? kill_deadline_ : shutdown_deadline_);
  if (frozen_) wake = std::min(wake, thaw_deadline_);
  for (const auto& [id, s] : sessions_)
    if (s->exit && s->streams_open() && s->send.available() > 0)
      wake = std::min(wake, s->last_progress + kDrainGrace);
  if (wake == Clock::time_point::max()) return -1;
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(wake - now).count() + 1;
  return static_cast<int>(std::clamp<long long>(ms, 0, 60 * 1000));
}

int Server::Run() {
  SendHello();
  enum class Slot : uint8_t { kChannelIn, kChannelOut, kSignals, kIn, kOut, kErr };
  struct Watch {
    Slot slot;
    uint32_t id;
  };
  std::vector<pollfd> fds;
  std::vector<Watch> watches;
  while (state_ != ServerState::kDone) {
    TryFlush();
    if (state_ == ServerState::kDone) break;
    fds.clear();
    watches.clear();
    auto add = [&](int fd, short events, Slot slot, uint32_t id) {
      fds.push_back(pollfd{fd, events, 0});
      watches.push_back(Watch{slot, id});
    };
    add(signal_fd_.get(), POLLIN, Slot::kSignals, 0);
    if (connected_ && !broken_) {
      add(in_.get(), POLLIN, Slot::kChannelIn, 0);
      if (!outbuf_.empty()) add(out_fd(), POLLOUT, Slot::kChannelOut, 0);
    }
    for (const auto& [id, s] : sessions_) {
      bool credit = s->send.available() > 0;
      bool streamed_err = s->kind == SessionKind::kExec;
      if (s->out.valid() && credit) add(s->out.get(), POLLIN, Slot::kOut, id);
      if (s->err.valid() && (credit || !streamed_err)) add(s->err.get(), POLLIN, Slot::kErr, id);
      if (s->in.valid() && !s->pending.empty()) add(s->in.get(), POLLOUT, Slot::kIn, id);
    }
    int r = ::poll(fds.data(), fds.size(), PollTimeoutMs());
    if (r < 0 && errno != EINTR) {
      Diag(std::string("poll: ") + std::strerror(errno));
      continue;
    }
    for (size_t i = 0; r > 0 && i < fds.size() && state_ != ServerState::kDone; ++i) {
      short ev = fds[i].revents;
      if (ev == 0) continue;
      const Watch& w = watches[i];
      switch (w.slot) {
        case Slot::kSignals:
          Reap();
          break;
        case Slot::kChannelIn:
          if (!connected_ || broken_) break;
          if (ev & POLLIN) ReadChannel();
          else if (ev & (POLLHUP | POLLERR | POLLNVAL)) ChannelLost("the host end of the channel closed");
          break;
        case Slot::kChannelOut:
          if (connected_) TryFlush();
          break;
        case Slot::kIn:
        case Slot::kOut:
        case Slot::kErr: {
          Session* s = Find(w.id);
          if (s == nullptr) break;
          if (w.slot == Slot::kIn) PumpInput(*s);
          else if (w.slot == Slot::kOut && s->out.valid() && s->out.get() == fds[i].fd) ReadSession(*s, false);
          else if (w.slot == Slot::kErr && s->err.valid() && s->err.get() == fds[i].fd) ReadSession(*s, true);
          break;
        }
      }
    }
    if (state_ == ServerState::kDone) break;
    if (frozen_ && Clock::now() >= thaw_deadline_) (void)Thaw("after its timeout: no thaw came from the host");
    for (auto& [id, s] : sessions_) PumpInput(*s);
    FinishSessions();
    if (mode_ == ServerMode::kPid1 && !connected_) CheckReconnect();
    if (state_ == ServerState::kShuttingDown) {
      // PID 1: learn whether children remain even without a new SIGCHLD.
      Reap();
      ProgressShutdown();
    }
  }
  FlushBlocking(kFinalFlush);
  return exit_code_;
}

}  // namespace msb::agent
