// agentd's event loop: serves the agent protocol on one channel, runs the
// workload and exec'd processes, streams their I/O with credit-based flow
// control, copies tar streams in and out, reaps every child and shuts the
// guest down. The theory of operation is at the top of server.cc.
// Single-threaded; owns the channel fds and every child it starts.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "agent/frame.h"
#include "agent/messages.h"
#include "common/fd.h"

namespace msb::agent {

enum class ServerMode : uint8_t {
  kPid1 = 0,   // the guest's init: boot mounts the root, shutdown powers off
  kServe = 1,  // --serve-fd: the same protocol on a connected fd, no mounts
};

enum class ServerState : uint8_t {
  kAwaitHello = 0,    // agent hello sent, waiting for the host's
  kAwaitBoot = 1,     // PID 1 only: waiting for kBoot
  kBootFailed = 2,    // kReady carried an error; only kShutdown is served
  kServing = 3,       // exec, copy, signals, ...
  kShuttingDown = 4,  // processes signalled, waiting for them to end
  kDone = 5,          // Run() returns (serve mode)
  kUnpacked = 6,      // PID 1, unpack mode: the result was sent; only kShutdown is served
};
const char* ToString(ServerState state);

struct Session;

class Server {
 public:
  // Takes ownership of both fds; out may be the same descriptor as in, passed
  // as an invalid UniqueFd.
  Server(ServerMode mode, UniqueFd in, UniqueFd out);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Runs until the channel closes or shutdown completes (serve mode: returns
  // the process exit code; PID 1: powers off instead of returning).
  int Run();

 private:
  using Clock = std::chrono::steady_clock;

  // Channel.
  int out_fd() const { return out_.valid() ? out_.get() : in_.get(); }
  void Queue(uint32_t id, FrameKind kind, std::string_view payload);
  void SendError(uint32_t id, const std::string& message);
  void SendHello();
  void TryFlush();
  void FlushBlocking(std::chrono::milliseconds limit);
  void ReadChannel();
  void ChannelLost(const std::string& why);
  void ChannelBroken(const std::string& why);
  void CheckReconnect();

  // Frames.
  void HandleFrame(Frame frame);
  const char* Gate(FrameKind kind) const;
  void HandleHello(const Frame& f);
  void HandleBoot(const Frame& f);
  void HandleExec(const Frame& f);
  void HandleCopy(const Frame& f);
  void HandleInput(const Frame& f);
  void HandleSignal(const Frame& f);
  void HandleResize(const Frame& f);
  void HandleCredit(const Frame& f);
  void HandleShutdown(const Frame& f);
  void HandleFreeze(const Frame& f);
  void HandleThaw(const Frame& f);
  // Thaws the upper layer if frozen; `why` goes to the console log.
  Status Thaw(const std::string& why);
  void HandleUnpack(const Frame& f);
  void HandleExport(const Frame& f);
  Status StartBuilder(const GuestStart& start);
  Status CheckNewId(uint32_t id) const;
  Session* Find(uint32_t id);

  // Processes.
  Status StartWorkload(const BootConfig& boot);
  Result<std::unique_ptr<Session>> StartProcess(uint32_t id, const ExecRequest& req);
  void Reap();
  void ReadSession(Session& s, bool err_stream);
  void PumpInput(Session& s);
  void DropInput(Session& s);
  void FinishSessions();
  void KillSessions(int signo, bool workload_too);
  void DiscardKilledSessions(bool workload_too);
  void StartShutdown(std::chrono::milliseconds timeout);
  void ProgressShutdown();
  void FinishShutdown();
  int PollTimeoutMs() const;

  ServerMode mode_;
  ServerState state_ = ServerState::kAwaitHello;
  UniqueFd in_, out_;
  UniqueFd signal_fd_;
  FrameReader reader_;
  std::string outbuf_;
  size_t out_off_ = 0;
  bool connected_ = true;   // PID 1: false while the host end is closed
  bool broken_ = false;     // the channel carried garbage; no more reading
  bool booted_ = false;
  BootConfig boot_;         // defaults for exec (env, user, workdir)
  std::vector<std::string> ca_env_;  // CaEnv() once the boot's CA is installed, under boot_.env
  std::map<uint32_t, std::unique_ptr<Session>> sessions_;
  bool children_left_ = true;  // PID 1: waitpid() still finds children
  Clock::time_point shutdown_deadline_{};
  Clock::time_point kill_deadline_{};
  bool kill_sent_ = false;
  int exit_code_ = 0;
  // PID 1 with a disk-backed writable layer: its mount (kUpperMount), opened
  // before the root switch hides it; the target of kFreeze.
  UniqueFd upper_fd_;
  bool frozen_ = false;
  Clock::time_point thaw_deadline_{};  // while frozen_: thaw by then at the latest
};

}  // namespace msb::agent
