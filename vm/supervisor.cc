// The supervisor's event loop. See supervisor.h for the lifecycle.
#include "vm/supervisor.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <utility>

#include "agent/messages.h"
#include "common/io.h"
#include "common/log.h"
#include "common/unix_socket.h"
#include "secrets/placeholder.h"
#include "secrets/transfer.h"
#include "vm/control.h"
#include "vm/guest_text.h"
#include "vm/jail.h"
#include "vm/template.h"

namespace msb::vm {

using agent::Frame;
using agent::FrameKind;
using nlohmann::json;

const char* ToString(State s) {
  switch (s) {
    case State::kBooting: return "booting";
    case State::kRunning: return "running";
    case State::kStopping: return "stopping";
    case State::kStopped: return "stopped";
    case State::kFailed: return "failed";
  }
  return "?";
}

namespace {

constexpr size_t kReadChunk = 64 * 1024;
// What one control client may have queued towards it before it is dropped.
// Relayed guest streams are bounded by credit; this bounds everything else.
constexpr size_t kMaxClientBacklog = 8u << 20;

constexpr int kAcceptFlags = SOCK_NONBLOCK | SOCK_CLOEXEC;

std::string NowIso() {
  using namespace std::chrono;
  auto now = system_clock::now();
  std::time_t t = system_clock::to_time_t(now);
  auto ms = duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000;
  char buf[40];
  struct tm tm_buf;
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", gmtime_r(&t, &tm_buf));
  char out[48];
  std::snprintf(out, sizeof out, "%s.%03dZ", buf, static_cast<int>(ms));
  return out;
}

}  // namespace

struct Supervisor::Client {
  UniqueFd fd;
  EventHandle read, write;
  agent::FrameReader reader;
  std::string out;
  size_t charged = 0;   // out's bytes, against the budget
  bool paused = false;  // not read until the queue towards the agent drains
  std::map<uint32_t, uint32_t> to_guest;  // client id -> guest id
  bool closing = false;
  bool froze = false;  // sent kFreeze and no kThaw since: thawed when it goes away
};

Supervisor::Supervisor(Dispatcher& dispatcher, VmSpec spec, int notify_fd, Reporter reporter)
    : dispatcher_(dispatcher),
      spec_(std::move(spec)),
      notify_fd_(notify_fd),
      reporter_(std::move(reporter)) {}

Supervisor::~Supervisor() = default;

size_t Supervisor::RaiseDescriptorLimit() {
  rlimit nofile{};
  if (::getrlimit(RLIMIT_NOFILE, &nofile) != 0) return 1024;
  if (nofile.rlim_cur < nofile.rlim_max) {
    rlimit raised = nofile;
    raised.rlim_cur = nofile.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) nofile = raised;
  }
  return nofile.rlim_cur == RLIM_INFINITY ? size_t{1} << 20 : static_cast<size_t>(nofile.rlim_cur);
}

std::string Supervisor::ConsoleTail(const std::string& path, int lines) {
  std::string tail = GuestLogTail(path, lines);
  return tail.empty() ? "(the console printed nothing)" : tail;
}

Status Supervisor::Start() {
  if (auto p = LifecyclePolicyFromJson(spec_.policy); p.ok()) {
    policy_ = *p;
  } else {
    return p.error().Wrap("sandbox spec");
  }
  {
    auto log = RotatingLog::Open(spec_.WorkloadLog(), spec_.log_max_bytes);
    if (!log.ok()) return log.error();
    workload_log_.emplace(std::move(*log));
  }
  if (!spec_.secrets.empty()) {
    // Values live here: no core dump, no ptrace or /proc/PID/mem for others.
    MSB_TRY_STATUS(secrets::ProtectProcessMemory());
    std::string tls_ca = spec_.network ? spec_.network->tls_ca_file : std::string();
    auto made = SandboxSecrets::Create(
        dispatcher_, spec_.secrets, std::exchange(secret_values_, {}), tls_ca,
        [this](std::string_view name, std::string_view ip) { return net_ && net_->Pinned(name, ip); });
    if (!made.ok()) return made.error().Wrap("the sandbox's secrets");
    secrets_ = std::move(*made);
  }
  (void)RaiseDescriptorLimit();
  // Room in the budget again: a paused agent port is read again.
  budget_.Watch([this]() { dispatcher_.Post([this]() { UpdateAgentFlow(); }); });
  sigchld_ = dispatcher_.Signal(SIGCHLD, [this]() { OnChildSignal(); });
  sigterm_ = dispatcher_.Signal(SIGTERM, [this]() { BeginStop("stopped by SIGTERM"); });
  sigint_ = dispatcher_.Signal(SIGINT, [this]() { BeginStop("stopped by SIGINT"); });
  MSB_TRY_STATUS(SpawnVm());
  Report();
  return OkStatus();
}

Status Supervisor::SpawnVm() {
  MSB_TRY(std::string qemu_bin, FindQemu());
  // A booted template when one fits (built now when missing), else a cold boot.
  UniqueFd state_fd;
  restoring_ = false;
  restore_timed_out_ = false;
  if (cold_only_) {
    template_ = TemplateChoice{};
    template_.why_cold = "a template did not restore earlier";
  } else {
    template_ = PrepareTemplate(spec_, qemu_bin);
  }
  if (!template_.key.empty()) {
    state_fd.Reset(::open(template_.state_path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!state_fd) {
      template_.why_cold = "opening " + template_.state_path + ": " + std::strerror(errno);
      template_.key.clear();
    }
  }
  if (template_.key.empty()) {
    MSB_LOG(kInfo, "vm") << spec_.name << ": cold boot: " << template_.why_cold;
  } else {
    MSB_LOG(kInfo, "vm") << spec_.name << ": restoring booted template " << template_.key
                         << (template_.built ? " (built for this start)" : "");
    restoring_ = true;
  }
  // The console's socket listens before QEMU connects to it; a restart
  // appends to the same bounded log.
  console_.reset();
  MSB_TRY(console_, ConsoleCapture::Start(dispatcher_, spec_.ConsoleSocket(), spec_.ConsoleLog(), spec_.log_max_bytes));
  MSB_TRY(agent_listen_, ListenUnix(spec_.AgentSocket(), true, 16));
  MSB_TRY(qmp_listen_, ListenUnix(spec_.QmpSocket(), true, 16));
  agent_accept_ = std::make_unique<Acceptor>(dispatcher_, agent_listen_.get(), kAcceptFlags,
                                             [this](UniqueFd fd) { OnAgentAccept(std::move(fd)); });
  qmp_accept_ = std::make_unique<Acceptor>(dispatcher_, qmp_listen_.get(), kAcceptFlags,
                                           [this](UniqueFd fd) { OnQmpAccept(std::move(fd)); });
  // Shared directories: their virtiofsd must hold the sockets QEMU connects to.
  MSB_TRY_STATUS(virtiofs_.Start(spec_.shares, spec_.dir, spec_.dir + "/virtiofsd.log"));
  // The network stack listens before QEMU connects to it; a restart gets a fresh one.
  net_.reset();
  if (spec_.network) {
    net_ = std::make_unique<NetworkAttachment>(dispatcher_, *spec_.network, spec_.NetSocket());
    // The flows may hold every descriptor but the reserve, counted from
    // those open now (logs, QEMU's sockets, virtiofsd's).
    size_t limit = RaiseDescriptorLimit();
    size_t open_now = 0;
    for (const auto& e : std::filesystem::directory_iterator("/proc/self/fd", std::filesystem::directory_options::skip_permission_denied)) {
      (void)e;
      ++open_now;
    }
    size_t spare = limit > open_now + kReservedFds ? limit - open_now - kReservedFds : 1;
    // An intercepted flow holds its host socket and the proxy's pair.
    net_->Limit(&budget_, secrets_ ? std::max<size_t>(1, spare / 3) : spare);
    MSB_TRY_STATUS(net_->Start());
    if (secrets_) net_->InterceptWith(&secrets_->proxy());
  }
  UniqueFd qemu_log(::open((spec_.dir + "/qemu.log").c_str(),
                           O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  SpawnOptions opts;
  opts.argv = QemuArgv(spec_, qemu_bin);
  if (restoring_) {
    // The stream comes in on QEMU's stdin, opened here: the jail needs no path for it.
    opts.argv.insert(opts.argv.end(), {"-incoming", "fd:0"});
    opts.stdin_fd = state_fd.get();
  }
  opts.stdout_fd = qemu_log.get();
  opts.stderr_fd = qemu_log.get();
  // QEMU dies with its supervisor: no orphan VM.
  opts.parent_death_signal = SIGKILL;
  MSB_TRY_STATUS(ConfineVmm(SandboxJail(spec_), &opts));
  MSB_LOG(kInfo, "vm") << "starting QEMU for " << spec_.name;
  auto child = ChildProcess::Spawn(opts);
  // A jail that could not be set up says why in QEMU's log.
  if (!child.ok()) {
    return child.error().Wrap("starting QEMU for " + spec_.name + " (details in " + spec_.dir + "/qemu.log)");
  }
  qemu_ = std::move(*child);
  spawned_at_ = std::chrono::steady_clock::now();
  boot_timer_ = dispatcher_.Timer([this]() { OnBootTimeout(); });
  boot_timer_.Arm(std::chrono::milliseconds(restoring_ ? RestoreTimeoutMs() : spec_.boot_timeout_ms));
  return OkStatus();
}

void Supervisor::ResetGuestConnections() {
  agent_read_.Reset();
  agent_write_.Reset();
  agent_fd_.Reset();
  agent_reader_ = agent::FrameReader();
  agent_out_.clear();
  agent_paused_ = false;
  workload_credit_ = 0;
  UpdateAgentFlow();
  agent_accept_.reset();
  qmp_accept_.reset();
  qmp_.reset();
  health_timer_.Reset();
  health_timeout_.Reset();
  health_id_ = 0;
  // Requests in flight end with the VM.
  auto routes = std::move(routes_);
  routes_.clear();
  for (auto& [gid, r] : routes) {
    if (r.client == nullptr) continue;
    r.client->to_guest.erase(r.client_id);
    SendClient(r.client, r.client_id, FrameKind::kError,
               json{{"message", "the sandbox restarted"}}.dump());
  }
}

bool Supervisor::MaybeRestart(bool failed, const std::string& why) {
  if (stop_requested_ || !ShouldRestart(policy_.restart, failed, restarts_)) return false;
  // A VM that ran a while earns a fresh backoff.
  int attempt = restarts_;
  if (std::chrono::steady_clock::now() - running_since_ > std::chrono::seconds(60)) attempt = 0;
  auto delay = RestartBackoff(attempt);
  MSB_LOG(kInfo, "vm") << spec_.name << ": " << why << "; restarting in " << delay.count()
                       << " ms (restart policy " << ToString(policy_.restart.kind) << ")";
  ResetGuestConnections();
  boot_timer_.Reset();
  stop_timer_.Reset();
  kill_timer_.Reset();
  state_ = State::kBooting;
  reason_ = why + "; restarting";
  ++restarts_;
  StatusReport r{state_, reason_, workload_exit_, -1, true};
  if (reporter_) reporter_(r);
  restart_timer_ = dispatcher_.Timer([this]() {
    if (auto st = SpawnVm(); !st.ok()) {
      state_ = State::kFailed;
      reason_ = "restart failed: " + st.error().message();
      Finish();
    }
  });
  restart_timer_.Arm(delay);
  return true;
}

void Supervisor::OnAgentAccept(UniqueFd fd) {
  if (agent_fd_) return;  // only QEMU connects here, once
  agent_fd_ = std::move(fd);
  agent_accept_.reset();
  agent_paused_ = false;
  WatchAgent();
  // MSB_TEST_HOLD_RESTORED_BOOT (supervisor.h): as if the restored guest hung.
  if (restoring_ && std::getenv("MSB_TEST_HOLD_RESTORED_BOOT") == nullptr) {
    // The template's agentd said hello to the template's builder and waits
    // for the host's hello and boot message; it says nothing more first.
    SendAgent(0, FrameKind::kHello, json{{"version", agent::kProtocolVersion}}.dump());
    SendAgent(0, FrameKind::kBoot, BootMessage().dump());
  }
}

int Supervisor::RestoreTimeoutMs() const {
  return std::min(spec_.boot_timeout_ms, vm::RestoreTimeoutMs(kRestoreTimeoutMs));
}

void Supervisor::FallBackToColdBoot(const std::string& why, bool remove) {
  MSB_LOG(kWarn, "vm") << spec_.name << ": booted template " << template_.key << " did not restore: " << why
                       << (remove ? "; removed it" : "") << "; falling back to a cold boot";
  if (remove) RemoveTemplateTried(template_);
  ResetGuestConnections();
  boot_timer_.Reset();
  restoring_ = false;
  cold_only_ = true;
  if (auto st = SpawnVm(); !st.ok()) {
    reason_ = "cold boot after a failed restore: " + st.error().message();
    Notify("error: " + reason_);
    state_ = State::kFailed;
    Finish();
  }
}

void Supervisor::WatchAgent() {
  agent_read_ = dispatcher_.WatchFd(agent_fd_.get(), Dispatcher::kRead,
                                    [this](short) { OnAgentReadable(); });
}

void Supervisor::OnQmpAccept(UniqueFd fd) {
  if (qmp_) return;
  qmp_accept_.reset();
  qmp_ = std::make_unique<QmpClient>(
      dispatcher_, std::move(fd),
      [this](const json& ev) {
        MSB_LOG(kDebug, "qmp") << "event " << ev.value("event", std::string());
      },
      []() {});
}

void Supervisor::OnAgentReadable() {
  char buf[kReadChunk];
  ssize_t n = ::read(agent_fd_.get(), buf, sizeof buf);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) {
    // The guest closed the port (power-off closes it too): QEMU's exit decides.
    agent_read_.Reset();
    agent_write_.Reset();
    return;
  }
  agent_reader_.Feed(std::string_view(buf, static_cast<size_t>(n)));
  for (;;) {
    auto next = agent_reader_.Next();
    if (!next.ok()) {
      Fail("the guest broke the agent protocol: " + next.error().message());
      return;
    }
    if (!next->has_value()) break;
    HandleAgentFrame(std::move(**next));
    if (!agent_fd_ || state_ == State::kFailed) return;
  }
  // The workload's output of this read, logged and credited at once (at
  // most kReadChunk).
  FlushWorkloadOutput();
  if (workload_credit_ > 0) {
    uint32_t bytes = static_cast<uint32_t>(std::exchange(workload_credit_, 0));
    SendAgent(agent::kWorkloadId, FrameKind::kCredit, agent::Encode(agent::Credit{bytes}));
  }
  UpdateAgentFlow();
}

void Supervisor::SendAgent(uint32_t id, FrameKind kind, std::string_view payload) {
  if (!agent_fd_) return;
  agent::AppendFrame(agent_out_, id, kind, payload);
  WriteAgent();
}

void Supervisor::UpdateAgentFlow() {
  budget_.Adjust(std::exchange(agent_out_charged_, agent_out_.size()), agent_out_.size());
  if (!agent_fd_) {
    agent_paused_ = false;
  } else if (!agent_paused_ && (agent_out_.size() >= kMaxAgentBacklog || budget_.Exhausted())) {
    // The guest does not read what it is sent, or the budget is spent: stop
    // taking more from it until it does.
    agent_paused_ = true;
    agent_read_.Reset();
    MSB_LOG(kDebug, "agent") << "pausing the agent port (" << agent_out_.size() << " bytes queued, "
                             << budget_.used() << " of " << budget_.limit() << " budgeted)";
  } else if (agent_paused_ && agent_out_.size() <= kMaxAgentBacklog / 2 && !budget_.Exhausted()) {
    agent_paused_ = false;
    WatchAgent();
  }
  if (agent_fd_ && agent_out_.size() > kMaxAgentBacklog / 2) return;
  for (auto& [raw, c] : clients_) {
    if (c->paused && !c->closing) {
      c->paused = false;
      WatchClient(raw);
    }
  }
}

void Supervisor::WriteAgent() {
  while (!agent_out_.empty()) {
    ssize_t n = ::send(agent_fd_.get(), agent_out_.data(), agent_out_.size(),
                       MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      agent_out_.clear();
      UpdateAgentFlow();
      return;
    }
    agent_out_.erase(0, static_cast<size_t>(n));
  }
  if (agent_out_.empty()) {
    agent_write_.Reset();
  } else if (!agent_write_.active()) {
    agent_write_ = dispatcher_.WatchFd(agent_fd_.get(), Dispatcher::kWrite,
                                       [this](short) { WriteAgent(); });
  }
  UpdateAgentFlow();
}

void Supervisor::HandleAgentFrame(Frame f) {
  MSB_LOG(kDebug, "agent") << "frame " << agent::ToString(f.kind) << " id " << f.id << " ("
                           << f.payload.size() << " bytes)";
  if (f.id == agent::kChannelId) {
    switch (f.kind) {
      case FrameKind::kHello: {
        auto hello = agent::ParseHello(f.payload);
        if (!hello.ok() || hello->version != agent::kProtocolVersion) {
          Fail("the guest agent speaks another protocol version (expected " +
               std::to_string(agent::kProtocolVersion) + ")");
          return;
        }
        SendAgent(0, FrameKind::kHello, json{{"version", agent::kProtocolVersion}}.dump());
        SendAgent(0, FrameKind::kBoot, BootMessage().dump());
        return;
      }
      case FrameKind::kReady: {
        if (state_ != State::kBooting) {
          Fail("the guest agent reported ready twice");
          return;
        }
        auto ready = agent::ParseReady(f.payload);
        if (!ready.ok()) {
          Fail("the guest sent a malformed ready message: " + ready.error().message());
          return;
        }
        if (ready->error) {
          Fail("the guest failed to boot: " + BoundedGuestText(*ready->error));
          return;
        }
        boot_timer_.Reset();
        if (restoring_) {
          auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - spawned_at_).count();
          MSB_LOG(kInfo, "vm") << spec_.name << ": restored from booted template " << template_.key << " in " << ms << " ms";
          restoring_ = false;
        }
        if (!control_listen_) {
          auto listen = ListenUnix(spec_.ControlSocket(), true, 16);
          if (!listen.ok()) {
            Fail(listen.error().message());
            return;
          }
          control_listen_ = std::move(*listen);
          control_accept_ = std::make_unique<Acceptor>(
              dispatcher_, control_listen_.get(), kAcceptFlags,
              [this](UniqueFd fd) { OnControlAccept(std::move(fd)); });
        }
        state_ = State::kRunning;
        reason_.clear();
        running_since_ = std::chrono::steady_clock::now();
        MSB_LOG(kInfo, "vm") << spec_.name << ": guest ready";
        StartHealthChecks();
        Report();
        Notify("ok");
        return;
      }
      case FrameKind::kResult:  // the agent's answer to kShutdown
        return;
      case FrameKind::kError: {
        if (uint64_t held; guest_lines_.Allow("channel-error", &held)) {
          MSB_LOG(kWarn, "agent") << "the guest agent reported an error on the channel" << HeldBackNote(held);
        }
        return;
      }
      default:
        Fail("the guest sent an unexpected " + agent::ToString(f.kind) + " frame on the channel");
        return;
    }
  }
  if (f.id == agent::kWorkloadId) {
    HandleWorkloadFrame(f);
    return;
  }
  if (health_id_ != 0 && f.id == health_id_) {
    if (f.kind == FrameKind::kStdout || f.kind == FrameKind::kStderr) {
      SendAgent(f.id, FrameKind::kCredit, agent::Encode(agent::Credit{static_cast<uint32_t>(f.payload.size())}));
    } else if (f.kind == FrameKind::kExit) {
      auto e = agent::ParseExitInfo(f.payload);
      OnHealthResult(e.ok() && agent::ShellExitCode(*e) == 0);
    } else if (f.kind == FrameKind::kError) {
      OnHealthResult(false);
    }
    return;
  }
  auto it = routes_.find(f.id);
  if (it == routes_.end()) {
    // A late frame for a finished request is harmless; anything else the guest
    // invents is dropped.
    if (uint64_t held; guest_lines_.Allow("unknown-id", &held)) {
      MSB_LOG(kDebug, "agent") << "dropping " << agent::ToString(f.kind) << " for unknown id " << f.id
                               << HeldBackNote(held);
    }
    return;
  }
  Route& r = it->second;
  if (agent::IsStreamKind(f.kind) && !r.credit.OnReceive(f.payload.size()).ok()) {
    Fail("the guest sent more stream data than its credit allows");
    return;
  }
  const bool last = f.kind == FrameKind::kExit || f.kind == FrameKind::kResult ||
                    (f.kind == FrameKind::kError && f.id != 0);
  Client* c = r.client;
  uint32_t cid = r.client_id;
  if (last) {
    routes_.erase(it);
    if (c != nullptr) c->to_guest.erase(cid);
  }
  if (c != nullptr) SendClient(c, cid, f.kind, f.payload);
}

void Supervisor::FlushWorkloadOutput() {
  if (workload_text_.empty()) return;
  // Guest bytes may be any encoding: invalid UTF-8 becomes U+FFFD.
  json line{{"t", NowIso()},
            {"stream", workload_kind_ == FrameKind::kStdout ? "stdout" : "stderr"},
            {"data", std::exchange(workload_text_, {})}};
  std::string text = line.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  if (auto st = workload_log_->Append(text); !st.ok() && !log_failed_) {
    log_failed_ = true;
    MSB_LOG(kWarn, "vm") << "workload output is not logged: " << st.error().message();
  }
}

void Supervisor::HandleWorkloadFrame(const Frame& f) {
  if (f.kind != FrameKind::kStdout && f.kind != FrameKind::kStderr) FlushWorkloadOutput();
  switch (f.kind) {
    case FrameKind::kStdout:
    case FrameKind::kStderr: {
      // Frames of one stream in one read make one log line, credited once
      // the read is handled (OnAgentReadable).
      if (f.kind != workload_kind_) FlushWorkloadOutput();
      workload_kind_ = f.kind;
      workload_text_ += f.payload;
      workload_credit_ += f.payload.size();
      return;
    }
    case FrameKind::kStarted:
      return;
    case FrameKind::kExit: {
      // Guest JSON: only the validating decoder reads it.
      auto e = agent::ParseExitInfo(f.payload);
      if (!e.ok()) {
        Fail("the guest sent a malformed exit status: " + e.error().message());
        return;
      }
      int code = agent::ShellExitCode(*e);
      workload_exit_ = code;
      std::string why = "the workload exited with code " + std::to_string(code);
      if (!stop_requested_ && ShouldRestart(policy_.restart, code != 0, restarts_)) {
        restart_after_exit_ = true;
      }
      BeginStop(why);
      return;
    }
    default:
      return;
  }
}

void Supervisor::OnControlAccept(UniqueFd fd) {
  if (!AdmitPeer(fd.get(), spec_.ControlSocket())) return;
  auto c = std::make_unique<Client>();
  Client* raw = c.get();
  c->fd = std::move(fd);
  clients_[raw] = std::move(c);
  WatchClient(raw);
}

void Supervisor::WatchClient(Client* raw) {
  raw->read = dispatcher_.WatchFd(raw->fd.get(), Dispatcher::kRead, [this, raw](short) {
    char buf[kReadChunk];
    ssize_t n = ::read(raw->fd.get(), buf, sizeof buf);
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    if (n <= 0) {
      CloseClient(raw);
      return;
    }
    raw->reader.Feed(std::string_view(buf, static_cast<size_t>(n)));
    for (;;) {
      auto next = raw->reader.Next();
      if (!next.ok() || raw->closing) {
        CloseClient(raw);
        return;
      }
      if (!next->has_value()) break;
      HandleClientFrame(raw, std::move(**next));
      if (raw->closing) return;
    }
    if (agent_fd_ && agent_out_.size() >= kMaxAgentBacklog && !raw->paused) {
      // Its requests feed a queue the guest does not drain: wait for it.
      raw->paused = true;
      raw->read.Reset();
    }
  });
}

void Supervisor::HandleClientFrame(Client* c, Frame f) {
  if (f.id == 0) {
    switch (static_cast<uint8_t>(f.kind)) {
      case static_cast<uint8_t>(ControlKind::kStatus): {
        json st{{"state", ToString(state_)}, {"pid", ::getpid()}, {"qemu_pid", qemu_.pid()}};
        if (workload_exit_) st["workload_exit"] = *workload_exit_;
        st["restarts"] = restarts_;
        if (health_) st["health"] = ToString(health_->state());
        if (!reason_.empty()) st["reason"] = reason_;
        if (net_) st["net"] = net_->StatusJson();
        if (secrets_) st["net"]["secrets"] = secrets_->CountersJson();
        SendClient(c, 0, FrameKind::kResult, st.dump());
        return;
      }
      case static_cast<uint8_t>(ControlKind::kStop): {
        stop_waiters_.push_back(c);
        stop_requested_ = true;
        restart_after_exit_ = false;
        if (state_ == State::kBooting && restart_timer_.active() && !qemu_.running()) {
          // Waiting to restart: nothing is running, so the stop is immediate.
          restart_timer_.Reset();
          state_ = State::kStopped;
          reason_ = "stopped by request";
          Finish();
          return;
        }
        BeginStop("stopped by request");
        return;
      }
      case static_cast<uint8_t>(ControlKind::kUpdatePolicy): {
        auto j = json::parse(f.payload, nullptr, false);
        auto p = LifecyclePolicyFromJson(j);
        if (!p.ok()) {
          SendClient(c, 0, FrameKind::kResult, json{{"error", p.error().message()}}.dump());
          return;
        }
        policy_ = *p;
        spec_.policy = j;
        (void)WriteSpec(spec_);
        health_timer_.Reset();
        health_timeout_.Reset();
        health_id_ = 0;
        health_.reset();
        if (state_ == State::kRunning) StartHealthChecks();
        SendClient(c, 0, FrameKind::kResult, json{{"ok", true}}.dump());
        return;
      }
      case static_cast<uint8_t>(ControlKind::kUpdateSecrets):
        UpdateSecrets(c, &f.payload);
        return;
      default:
        SendClient(c, 0, FrameKind::kError,
                   json{{"message", "unknown control request " + agent::ToString(f.kind)}}.dump());
        return;
    }
  }
  if (state_ != State::kRunning) {
    SendClient(c, f.id, FrameKind::kError,
               json{{"message", std::string("not supported while ") + ToString(state_)}}.dump());
    return;
  }
  // kFreeze and kThaw (msb snapshot create) are requests of their own too,
  // answered by one kResult.
  const bool opens = f.kind == FrameKind::kExec || f.kind == FrameKind::kCopyIn ||
                     f.kind == FrameKind::kCopyOut || f.kind == FrameKind::kFreeze ||
                     f.kind == FrameKind::kThaw;
  if (f.kind == FrameKind::kFreeze) c->froze = true;
  if (f.kind == FrameKind::kThaw) c->froze = false;
  uint32_t guest_id;
  if (opens) {
    if (c->to_guest.count(f.id) != 0) {
      SendClient(c, f.id, FrameKind::kError, json{{"message", "request id already in use"}}.dump());
      return;
    }
    guest_id = next_guest_id_++;
    c->to_guest[f.id] = guest_id;
    routes_[guest_id] = Route{c, f.id, {}};
  } else {
    auto it = c->to_guest.find(f.id);
    if (it == c->to_guest.end()) return;  // late frame for a finished request
    guest_id = it->second;
    if (f.kind == FrameKind::kCredit) {
      // Passed on as it is; the guest's own ParseCredit judges it the same way.
      if (auto credit = agent::ParseCredit(f.payload); credit.ok()) routes_[guest_id].credit.OnReturned(credit->bytes);
    }
  }
  SendAgent(guest_id, f.kind, f.payload);
}

void Supervisor::SendClient(Client* c, uint32_t id, FrameKind kind, std::string_view payload) {
  if (c->closing) return;
  agent::AppendFrame(c->out, id, kind, payload);
  FlushClient(c);
}

void Supervisor::FlushClient(Client* c) {
  while (!c->out.empty()) {
    ssize_t n = ::send(c->fd.get(), c->out.data(), c->out.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      CloseClient(c);
      return;
    }
    c->out.erase(0, static_cast<size_t>(n));
  }
  budget_.Adjust(std::exchange(c->charged, c->out.size()), c->out.size());
  if (c->out.size() > kMaxClientBacklog) {
    CloseClient(c);
  } else if (c->out.empty()) {
    c->write.Reset();
  } else if (!c->write.active()) {
    c->write = dispatcher_.WatchFd(c->fd.get(), Dispatcher::kWrite,
                                   [this, c](short) { FlushClient(c); });
  }
}

void Supervisor::CloseClient(Client* c) {
  if (c->closing) return;
  c->closing = true;
  // Requests the client left behind: their processes get SIGKILL, as a
  // terminal's processes get SIGHUP when it goes away.
  for (auto& [cid, gid] : c->to_guest) {
    SendAgent(gid, FrameKind::kSignal, json{{"signal", SIGKILL}}.dump());
    routes_[gid].client = nullptr;
  }
  c->to_guest.clear();
  if (c->froze && agent_fd_) {
    // Its copy is abandoned: do not leave the guest waiting for agentd's timeout.
    MSB_LOG(kInfo, "vm") << spec_.name << ": a client that froze the writable layer went away; thawing it";
    SendAgent(next_guest_id_++, FrameKind::kThaw, "{}");
  }
  c->read.Reset();
  c->write.Reset();
  budget_.Release(std::exchange(c->charged, 0));
  c->out.clear();
  std::erase(stop_waiters_, c);
  auto it = clients_.find(c);
  if (it != clients_.end()) {
    dispatcher_.DeferDelete(std::move(it->second));
    clients_.erase(it);
  }
}

void Supervisor::OnChildSignal() {
  for (const std::string& gone : virtiofs_.Reap()) MSB_LOG(kInfo, "virtiofs") << gone;
  auto st = qemu_.TryWait();
  if (!st) return;
  MSB_LOG(kInfo, "vm") << "QEMU " << st->ToString();
  if (restoring_ && state_ == State::kBooting && !stop_requested_) {
    if (restore_timed_out_) {
      FallBackToColdBoot("the restored guest did not answer within " + std::to_string(RestoreTimeoutMs()) + " ms", false);
      return;
    }
    // QEMU names a stream it cannot load ("load of migration failed"): that
    // template is not restored again.
    std::string log = spec_.dir + "/qemu.log";
    auto said = ReadFile(log);
    bool bad_stream = said.ok() && said->find("migration") != std::string::npos;
    FallBackToColdBoot("QEMU " + st->ToString() + " while restoring it" +
                           (said.ok() && !said->empty() ? "; QEMU said:\n" + ConsoleTail(log, 5) : std::string()),
                       bad_stream);
    return;
  }
  if (state_ == State::kStopping && restart_after_exit_ && !stop_requested_) {
    restart_after_exit_ = false;
    if (MaybeRestart(workload_exit_.value_or(0) != 0, reason_)) return;
  }
  if (state_ == State::kRunning && !stop_requested_ &&
      MaybeRestart(true, "the VM exited unexpectedly (QEMU " + st->ToString() + ")")) {
    return;
  }
  if (state_ == State::kStopping) {
    state_ = State::kStopped;
  } else if (state_ != State::kFailed) {
    std::string why = state_ == State::kBooting ? "the VM exited before the guest was ready"
                                                : "the VM exited unexpectedly";
    reason_ = why + " (QEMU " + st->ToString() + "); last console lines:\n" +
              ConsoleTail(spec_.ConsoleLog(), 15);
    // QEMU's own complaint (a locked volume disk, a share that failed) is in its log.
    for (const char* who : {"qemu", "virtiofsd"}) {
      std::string log = spec_.dir + "/" + who + ".log";
      if (auto q = ReadFile(log); q.ok() && !q->empty())
        reason_ += std::string("\n") + who + " said:\n" + ConsoleTail(log, 5);
    }
    if (state_ == State::kBooting) Notify("error: " + reason_);
    state_ = State::kFailed;
  }
  Finish();
}

void Supervisor::OnBootTimeout() {
  if (restoring_) {
    // OnChildSignal falls back to a cold boot once QEMU is gone.
    restore_timed_out_ = true;
    qemu_.Kill(SIGKILL);
    return;
  }
  Fail("the guest did not report ready within " + std::to_string(spec_.boot_timeout_ms / 1000) +
       " s; last console lines:\n" + ConsoleTail(spec_.ConsoleLog(), 15));
}

void Supervisor::BeginStop(const std::string& reason) {
  if (state_ == State::kStopping || state_ == State::kStopped || state_ == State::kFailed) return;
  health_timer_.Reset();
  health_timeout_.Reset();
  if (state_ == State::kBooting) {
    Fail("stopped while booting (" + reason + ")");
    return;
  }
  state_ = State::kStopping;
  reason_ = reason;
  Report();
  SendAgent(0, FrameKind::kShutdown, json{{"timeout_ms", spec_.stop_timeout_ms}}.dump());
  stop_timer_ = dispatcher_.Timer([this]() {
    MSB_LOG(kWarn, "vm") << spec_.name << ": the guest did not power off; asking ACPI";
    if (qmp_) qmp_->Execute("system_powerdown", nullptr, [](Result<json>) {});
    kill_timer_ = dispatcher_.Timer([this]() {
      MSB_LOG(kWarn, "vm") << spec_.name << ": the guest ignored ACPI power-off; killing QEMU";
      qemu_.Kill(SIGKILL);
    });
    kill_timer_.Arm(std::chrono::milliseconds(spec_.stop_timeout_ms / 2 + 1000));
  });
  stop_timer_.Arm(std::chrono::milliseconds(spec_.stop_timeout_ms + 2000));
}

void Supervisor::Fail(const std::string& reason) {
  if (state_ == State::kFailed) return;
  MSB_LOG(kWarn, "vm") << spec_.name << ": " << reason;
  if (state_ == State::kBooting) Notify("error: " + reason);
  state_ = State::kFailed;
  reason_ = reason;
  agent_read_.Reset();
  agent_write_.Reset();
  agent_fd_.Reset();
  Report();
  qemu_.Kill(SIGKILL);  // OnChildSignal reaps it and finishes
  if (!qemu_.running()) Finish();
}

void Supervisor::Finish() {
  boot_timer_.Reset();
  stop_timer_.Reset();
  kill_timer_.Reset();
  Report();
  auto waiters = stop_waiters_;
  for (Client* c : waiters) {
    json r = state_ == State::kFailed ? json{{"error", reason_}} : json{{"ok", true}};
    SendClient(c, 0, FrameKind::kResult, r.dump());
  }
  ::unlink(spec_.ControlSocket().c_str());
  ::unlink(spec_.AgentSocket().c_str());
  ::unlink(spec_.QmpSocket().c_str());
  ::unlink(spec_.ConsoleSocket().c_str());
  dispatcher_.Post([this]() { dispatcher_.Exit(); });
}

void Supervisor::Notify(const std::string& line) {
  if (!notify_fd_) return;
  (void)WriteAll(notify_fd_.get(), line + "\n");
  notify_fd_.Reset();
}

void Supervisor::Report() {
  if (!reporter_) return;
  StatusReport r{state_, reason_, workload_exit_, qemu_.pid(), false, stop_requested_};
  reporter_(r);
}

void Supervisor::StartHealthChecks() {
  if (!policy_.health) {
    health_.reset();
    return;
  }
  if (!health_) health_.emplace(*policy_.health);
  health_timer_ = dispatcher_.Timer([this]() { RunHealthProbe(); });
  // The first probe comes quickly, so `up --wait` does not wait a full interval.
  health_timer_.Arm(std::chrono::milliseconds(std::min<int64_t>(policy_.health->interval_ms, 500)));
}

void Supervisor::RunHealthProbe() {
  if (state_ != State::kRunning || !policy_.health || health_id_ != 0) return;
  health_id_ = next_guest_id_++;
  agent::ExecRequest req;
  req.argv = policy_.health->command;
  SendAgent(health_id_, FrameKind::kExec, agent::Encode(req));
  health_timeout_ = dispatcher_.Timer([this]() {
    if (health_id_ == 0) return;
    SendAgent(health_id_, FrameKind::kSignal, json{{"signal", SIGKILL}}.dump());
    OnHealthResult(false);
  });
  health_timeout_.Arm(std::chrono::milliseconds(policy_.health->timeout_ms));
}

void Supervisor::OnHealthResult(bool ok) {
  health_id_ = 0;
  health_timeout_.Reset();
  if (!health_ || !policy_.health) return;
  auto since = std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - running_since_).count();
  Health before = health_->state();
  health_->OnProbe(ok, since);
  if (health_->state() != before) {
    MSB_LOG(kInfo, "vm") << spec_.name << ": health " << ToString(health_->state());
  }
  if (state_ == State::kRunning) {
    health_timer_ = dispatcher_.Timer([this]() { RunHealthProbe(); });
    health_timer_.Arm(std::chrono::milliseconds(policy_.health->interval_ms));
  }
}

// The boot message: the spec's, with the network filled in and, with
// secrets, their placeholders in the environment and the CA to trust.
nlohmann::json Supervisor::BootMessage() const {
  nlohmann::json boot = BootWithNetwork(spec_);
  // Every boot, cold or restored: the guest's clock and fresh randomness
  // (agentd/guest_init.h); a restored guest also probes its disks again.
  const agent::GuestStart start = FreshGuestStart(restoring_);
  if (!start.entropy.empty()) boot["entropy"] = start.entropy;
  boot["time_ns"] = start.time_ns;
  if (start.restored) boot["restored"] = true;
  if (secrets_) {
    if (!boot.contains("env") || !boot["env"].is_array()) boot["env"] = nlohmann::json::array();
    for (const std::string& kv : secrets_->GuestEnv()) boot["env"].push_back(kv);
    boot["ca_pem"] = secrets_->CaPem();
  }
  return boot;
}

// New values for the sandbox's secrets (msb up): applied in place; the
// payload's copy of them is wiped whatever happens.
void Supervisor::UpdateSecrets(Client* c, std::string* payload) {
  auto values = secrets::DecodeValues(*payload);
  secrets::WipeString(payload);
  Status st = !values.ok()   ? Status(values.error())
              : !secrets_    ? Status(Error(ErrorCode::kState, "this sandbox has no secrets"))
                             : secrets_->Replace(std::move(*values));
  if (!st.ok()) {
    SendClient(c, 0, FrameKind::kResult, json{{"error", st.error().message()}}.dump());
    return;
  }
  MSB_LOG(kInfo, "secrets") << "secret values replaced in place";
  SendClient(c, 0, FrameKind::kResult, json{{"ok", true}}.dump());
}

}  // namespace msb::vm
