// Supervisor: the per-sandbox host process. Owns the QEMU child, the QMP
// client, the agent channel, the control socket and the sandbox's logs, all on
// one Dispatcher (single thread). Not the CLI: it never reads the Sandboxfile,
// only the VmSpec the CLI wrote.
//
// Lifecycle (State): kBooting (QEMU started, waiting for the agent's kReady
// within spec.boot_timeout_ms) → kRunning → kStopping (kShutdown sent to the
// agent; after stop_timeout_ms QMP system_powerdown; after as long again, kill)
// → kStopped, or kFailed from any state (boot timeout, QEMU died, the guest
// broke the protocol). The process exits when QEMU is gone, unless the
// restart policy (vm/lifecycle_policy.h) says to boot again: the workload ended, or QEMU
// died, and the policy allows it → after RestartBackoff, kBooting again with a
// new QEMU (restarts counted). A stop the user asked for never restarts.
//
// Booted templates (vm/template.h): each QEMU start first looks for the
// sandbox's template (building it when missing, blocking) and, when there is
// one, starts QEMU with `-incoming fd:0` on the saved stream instead of
// booting the kernel, and sends the agent's hello and boot message as soon as
// the agent port connects (the template's agentd already said hello). A
// restore that does not reach kReady within RestoreTimeoutMs, or whose QEMU
// exits, falls back to a cold boot (FallBackToColdBoot), and this supervisor
// boots cold from then on; a stream QEMU could not load is removed. Why a
// start boots cold is in the supervisor log.
//
// Health checks run as agent execs every interval (timeout: SIGKILL, counted
// as a failure); the state is in the kStatus answer.
//
// Guest output is hostile: frames are bounded by the FrameReader, stream bytes
// beyond the credit window are a protocol violation, and nothing the guest
// says chooses a host path.
//
// Memory: every byte the supervisor buffers for the guest or because of it
// is charged to one MemoryBudget of kMemoryBudget bytes: the frames queued
// towards the agent and towards control clients, and the network stack's
// flows and buffers (net/stack.h). The queue towards the agent holds at most
// kMaxAgentBacklog: past that, or while the budget is exhausted, the agent
// port is not read (the guest's writes block in its own virtio queue) and a
// control client whose request goes to the guest is not read either, until
// the queue drained to half. The workload's output is credited once per read
// from the port, not once per frame, so the answer is never larger than the
// question.
//
// Descriptors: RaiseDescriptorLimit (at Start and each boot) lifts the soft
// RLIMIT_NOFILE to the hard one; the network stack's flows may hold all of it
// but kReservedFds, kept for QEMU, the control socket and its clients. An
// accept that fails for lack of descriptors pauses that listener for
// kAcceptPause instead of spinning on its readiness.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "agent/flow.h"
#include "agent/frame.h"
#include "common/acceptor.h"
#include "common/child.h"
#include "common/dispatcher.h"
#include "common/fd.h"
#include "common/log.h"
#include "common/memory_budget.h"
#include "vm/lifecycle_policy.h"
#include "vm/qmp.h"
#include "vm/spec.h"
#include "vm/template.h"
#include "vm/console_log.h"
#include "vm/log_file.h"
#include "vm/network.h"
#include "vm/sandbox_secrets.h"
#include "vm/virtiofs.h"

namespace msb::vm {

enum class State : int { kBooting = 0, kRunning = 1, kStopping = 2, kStopped = 3, kFailed = 4 };
const char* ToString(State s);

struct StatusReport {
  State state;
  std::string reason;           // why failed/stopped, human sentence
  std::optional<int> exit_code;  // the workload's, when it exited
  pid_t qemu_pid = -1;
  bool restarted = false;  // this report follows an automatic restart
  bool stop_requested = false;  // a stop was asked for (msb stop, down, rm)
};

class Supervisor {
 public:
  using Reporter = std::function<void(const StatusReport&)>;
  // notify_fd: written once with "ok\n" when the guest is ready, or
  // "error: ...\n" when boot failed, then closed (-1: none).
  Supervisor(Dispatcher& dispatcher, VmSpec spec, int notify_fd, Reporter reporter);
  ~Supervisor();

  // The values of spec.secrets (secrets/transfer.h), before Start.
  void SetSecretValues(std::map<std::string, secrets::SecretValue> values) {
    secret_values_ = std::move(values);
  }
  Status Start();
  State state() const { return state_; }
  // Exit status for the supervisor process.
  int ExitCode() const { return state_ == State::kFailed ? 1 : 0; }

  // The budget of the supervisor's buffered bytes, and its per-queue bounds.
  static constexpr size_t kMemoryBudget = 64u << 20;
  static constexpr size_t kMaxAgentBacklog = 1u << 20;
  static constexpr size_t kReservedFds = 64;
  // At most this long (and never longer than spec.boot_timeout_ms) from
  // QEMU's start to the restored guest's kReady; MSB_RESTORE_TIMEOUT_MS (a
  // positive number of ms, in the supervisor's environment) replaces it.
  // MSB_TEST_HOLD_RESTORED_BOOT (set to anything) makes the supervisor send a
  // restored guest neither hello nor boot, so that it never gets ready, as if
  // it hung: tests/integration/template_test.cc drives the fallback with it.
  static constexpr int kRestoreTimeoutMs = 30000;

  // Lifts the soft RLIMIT_NOFILE to the hard one; returns the soft limit.
  static size_t RaiseDescriptorLimit();

  // Tail of the console log (for error messages).
  static std::string ConsoleTail(const std::string& path, int lines);

 private:
  struct Client;
  struct Route {
    Client* client;
    uint32_t client_id;
    // Guest stream bytes relayed and not yet credited by the client: the
    // guest may have at most kCreditWindow of them in flight.
    agent::ReceiveCredit credit;
  };

  void OnAgentAccept(UniqueFd fd);
  void OnQmpAccept(UniqueFd fd);
  void OnControlAccept(UniqueFd fd);
  void OnAgentReadable();
  void HandleAgentFrame(agent::Frame f);
  void HandleClientFrame(Client* c, agent::Frame f);
  void HandleWorkloadFrame(const agent::Frame& f);
  void FlushWorkloadOutput();
  void SendAgent(uint32_t id, agent::FrameKind kind, std::string_view payload);
  void SendClient(Client* c, uint32_t id, agent::FrameKind kind, std::string_view payload);
  void FlushClient(Client* c);
  void CloseClient(Client* c);
  void OnChildSignal();
  Status SpawnVm();
  // The VM ended by itself (failed: non-zero exit or crash); restarts it
  // when the policy says so. Returns false when it did not.
  bool MaybeRestart(bool failed, const std::string& why);
  void ResetGuestConnections();
  void StartHealthChecks();
  void RunHealthProbe();
  void OnHealthResult(bool ok);
  void OnBootTimeout();
  void BeginStop(const std::string& reason);
  void Fail(const std::string& reason);
  void Finish();
  void Notify(const std::string& line);
  void Report();
  void WriteAgent();
  // Brings the budget's charge for the queued frames up to date, and pauses
  // or resumes reading the agent port and the paused clients.
  void UpdateAgentFlow();
  void WatchAgent();
  void WatchClient(Client* c);
  nlohmann::json BootMessage() const;
  // Booted templates (vm/template.h): how long a restore may take before the
  // supervisor kills it and boots cold, and that fallback.
  int RestoreTimeoutMs() const;
  void FallBackToColdBoot(const std::string& why, bool remove);
  void UpdateSecrets(Client* c, std::string* payload);

  Dispatcher& dispatcher_;
  VmSpec spec_;
  UniqueFd notify_fd_;
  Reporter reporter_;
  State state_ = State::kBooting;
  std::string reason_;
  std::optional<int> workload_exit_;

  MemoryBudget budget_{kMemoryBudget};  // declared first: outlives net_ and the clients
  VirtiofsDaemons virtiofs_;  // one virtiofsd per shared directory, started before QEMU
  std::map<std::string, secrets::SecretValue> secret_values_;  // until Start
  std::unique_ptr<SandboxSecrets> secrets_;  // spec.secrets; outlives net_
  std::unique_ptr<NetworkAttachment> net_;  // the user-mode stack, when the spec has a network
  ChildProcess qemu_;
  // Lines in supervisor.log that the guest can cause at will go through this.
  LogRateLimiter guest_lines_;
  std::unique_ptr<ConsoleCapture> console_;  // console.log, bounded like workload.log
  UniqueFd agent_listen_, qmp_listen_, control_listen_;
  std::unique_ptr<Acceptor> agent_accept_, qmp_accept_, control_accept_;
  UniqueFd agent_fd_;
  EventHandle agent_read_, agent_write_;
  agent::FrameReader agent_reader_;
  std::string agent_out_;
  size_t agent_out_charged_ = 0;
  bool agent_paused_ = false;
  uint64_t workload_credit_ = 0;  // workload bytes read and not yet credited
  agent::FrameKind workload_kind_ = agent::FrameKind::kStdout;
  std::string workload_text_;  // workload output of the read being handled
  std::unique_ptr<QmpClient> qmp_;
  EventHandle sigchld_, sigterm_, sigint_;
  EventHandle boot_timer_, stop_timer_, kill_timer_;
  std::optional<RotatingLog> workload_log_;  // workload.log, bounded
  bool log_failed_ = false;

  std::map<Client*, std::unique_ptr<Client>> clients_;
  std::map<uint32_t, Route> routes_;  // guest id -> client
  uint32_t next_guest_id_ = agent::kFirstHostId;
  std::vector<Client*> stop_waiters_;

  TemplateChoice template_;  // of the current VM
  bool restoring_ = false;   // the current VM is restored from template_, not yet ready
  bool restore_timed_out_ = false;
  bool cold_only_ = false;   // a restore failed: this supervisor boots cold from now on
  std::chrono::steady_clock::time_point spawned_at_;

  LifecyclePolicy policy_;
  int restarts_ = 0;
  bool stop_requested_ = false;
  bool restart_after_exit_ = false;  // the workload ended: restart once QEMU is gone
  EventHandle restart_timer_;
  std::optional<HealthTracker> health_;
  std::chrono::steady_clock::time_point running_since_;
  EventHandle health_timer_, health_timeout_;
  uint32_t health_id_ = 0;  // guest id of the probe in flight, 0 when none
};

}  // namespace msb::vm
