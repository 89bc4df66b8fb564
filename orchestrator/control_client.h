// ControlClient: the CLI's blocking connection to one supervisor's control
// socket (vm/control.h). Exec relays a guest process to this terminal; copy
// streams tar through the agent. Everything received is guest-influenced and
// bounded by the frame codec. Not used inside the supervisor.
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <string>

#include "agent/frame.h"
#include "agent/messages.h"
#include "common/fd.h"
#include "common/result.h"

namespace msb::orchestrator {

struct ExecIo {
  bool forward_stdin = false;  // -i
  bool tty = false;            // -t: raw mode on our terminal, window size sent
  int stdin_fd = 0;
  int stdout_fd = 1;
  int stderr_fd = 2;
};

class ControlClient {
 public:
  static Result<ControlClient> Connect(const std::string& socket_path);

  Result<nlohmann::json> GetStatus();
  // Replaces the restart policy and health check of the running sandbox.
  Status UpdatePolicy(const nlohmann::json& policy);
  // New secret values (secrets/transfer.h text) for the running sandbox;
  // *values is wiped once sent.
  Status UpdateSecrets(std::string* values);
  // Asks for a graceful stop and waits until the supervisor is gone.
  Status Stop(int timeout_ms);
  // Freezes the guest's writable layer (agent kFreeze): once it returns, the
  // upper disk file holds a consistent file system until Thaw, or until
  // agentd thaws by itself after timeout_ms, or this client disconnects.
  Status Freeze(int timeout_ms);
  // Thaws it; an error when agentd had already thawed (the copy made
  // meanwhile is not consistent).
  Status Thaw();
  // Runs req in the guest; returns its shell-style exit code (128+signal).
  Result<int> Exec(agent::ExecRequest req, const ExecIo& io);
  // Sends a tar stream (produced by `produce`, which calls `sink` with
  // chunks) to be unpacked into guest directory `dir`.
  using Sink = std::function<Status(std::string_view)>;
  Status CopyIn(const std::string& dir, const std::function<Status(const Sink&)>& produce);
  // Receives a tar stream of guest `path`, handing each chunk to `consume`.
  Status CopyOut(const std::string& path, const Sink& consume);

 private:
  explicit ControlClient(UniqueFd fd) : fd_(std::move(fd)) {}
  Status Send(uint32_t id, agent::FrameKind kind, std::string_view payload);
  // Next frame, waiting at most timeout_ms (-1: forever).
  Result<agent::Frame> Receive(int timeout_ms);

  UniqueFd fd_;
  agent::FrameReader reader_;
  uint32_t next_id_ = 2;
};

}  // namespace msb::orchestrator
