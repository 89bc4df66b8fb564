// The hidden `msb supervisor --dir DIR`: runs one sandbox's vm::Supervisor in
// this (detached) process and mirrors its state into the state store. Stdout
// is the launching CLI's readiness pipe; stderr is the supervisor's log.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdlib>

#include "common/dispatcher.h"
#include "common/log.h"
#include "cli/cli.h"
#include "orchestrator/launch.h"
#include "orchestrator/store.h"
#include "vm/supervisor.h"

namespace msb::cli {
namespace {

orchestrator::SandboxStatus ToStoreStatus(const vm::StatusReport& r) {
  using orchestrator::SandboxStatus;
  switch (r.state) {
    case vm::State::kBooting: return SandboxStatus::kStarting;
    case vm::State::kRunning:
    case vm::State::kStopping: return SandboxStatus::kRunning;
    case vm::State::kStopped: return r.exit_code ? SandboxStatus::kExited : SandboxStatus::kStopped;
    case vm::State::kFailed: return SandboxStatus::kFailed;
  }
  return SandboxStatus::kFailed;
}

int RunSupervisor(const std::string& dir) {
  // Readiness goes to the pipe on stdout; everything else away from it.
  int notify = ::dup(1);
  int devnull = ::open("/dev/null", O_RDWR);
  if (devnull >= 0) {
    ::dup2(devnull, 0);
    ::dup2(devnull, 1);
    ::close(devnull);
  }
  ::fcntl(notify, F_SETFD, FD_CLOEXEC);
  ::signal(SIGHUP, SIG_IGN);
  ::signal(SIGPIPE, SIG_IGN);
  if (std::getenv("MSB_LOG") == nullptr) SetLogLevel(LogLevel::kInfo);

  // One supervisor per sandbox: the lock is held until this process ends.
  int lock = ::open(orchestrator::SupervisorLockPath(dir).c_str(),
                    O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock < 0 || ::flock(lock, LOCK_EX | LOCK_NB) != 0) {
    std::string msg = "error: another supervisor already runs the sandbox in " + dir + "\n";
    ssize_t u = ::write(notify, msg.data(), msg.size());
    (void)u;
    return 1;
  }
  auto spec = vm::ReadSpec(dir);
  if (!spec.ok()) {
    std::string msg = "error: " + spec.error().message() + "\n";
    ssize_t u = ::write(notify, msg.data(), msg.size());
    (void)u;
    return 1;
  }
  auto store = orchestrator::Store::Open(orchestrator::Store::DefaultPath());
  if (!store.ok()) {
    std::string msg = "error: " + store.error().message() + "\n";
    ssize_t u = ::write(notify, msg.data(), msg.size());
    (void)u;
    return 1;
  }
  const std::string project = spec->project, name = spec->name;
  Dispatcher dispatcher;
  vm::Supervisor sup(dispatcher, std::move(*spec), notify, [&](const vm::StatusReport& r) {
    orchestrator::SandboxStatusUpdate u;
    u.status = ToStoreStatus(r);
    u.reason = r.reason;
    u.exit_code = r.exit_code;
    u.count_restart = r.restarted;
    const bool gone = r.state == vm::State::kStopped || r.state == vm::State::kFailed;
    u.supervisor_pid = gone ? 0 : static_cast<int64_t>(::getpid());
    auto st = store->UpdateSandboxStatus(project, name, u);
    if (!st.ok()) {
      MSB_LOG(kWarn, "vm") << "cannot record status: " << st.error().message();
    }
  });
  if (auto st = sup.Start(); !st.ok()) {
    std::string msg = "error: " + st.error().message() + "\n";
    ssize_t u = ::write(notify, msg.data(), msg.size());
    (void)u;
    orchestrator::SandboxStatusUpdate u2;
    u2.status = orchestrator::SandboxStatus::kFailed;
    u2.reason = st.error().message();
    u2.supervisor_pid = 0;
    (void)store->UpdateSandboxStatus(project, name, u2);
    return 1;
  }
  dispatcher.Run();
  return sup.ExitCode();
}

}  // namespace

void RegisterSupervisorCommand(CLI::App& app) {
  auto* cmd = app.add_subcommand("supervisor", "");  // hidden: empty description
  cmd->group("");
  auto dir = std::make_shared<std::string>();
  cmd->add_option("--dir", *dir, "sandbox directory")->required();
  OnRun(cmd, [dir]() { return RunSupervisor(*dir); });
}

}  // namespace msb::cli
