// The hidden `msb supervisor --dir DIR`: runs one sandbox's vm::Supervisor in
// this (detached) process and mirrors its state into the state store. Stdout
// is the launching CLI's readiness pipe; stderr is the supervisor's log.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include <cerrno>
#include <cstdlib>
#include <map>

#include "common/dispatcher.h"
#include "common/log.h"
#include "cli/cli.h"
#include "orchestrator/launch.h"
#include "orchestrator/store.h"
#include "secrets/placeholder.h"
#include "secrets/transfer.h"
#include "vm/cgroup.h"
#include "vm/spec.h"
#include "vm/supervisor.h"

namespace msb::cli {
namespace {

orchestrator::SandboxStatus ToStoreStatus(const vm::StatusReport& r) {
  using orchestrator::SandboxStatus;
  switch (r.state) {
    case vm::State::kBooting: return SandboxStatus::kStarting;
    case vm::State::kRunning:
    case vm::State::kStopping: return SandboxStatus::kRunning;
    // A workload ended by a stop the user asked for is stopped, whatever
    // its exit code; only one that ended by itself is exited (under up
    // --watch the difference decides whether it is started again).
    case vm::State::kStopped:
      return r.exit_code && !r.stop_requested ? SandboxStatus::kExited : SandboxStatus::kStopped;
    case vm::State::kFailed: return SandboxStatus::kFailed;
  }
  return SandboxStatus::kFailed;
}

// The secret values msb writes to stdin (secrets/transfer.h), read whole
// before stdin is closed; bounded by the transfer limits.
Result<std::map<std::string, secrets::SecretValue>> ReadSecretValuesFromStdin() {
  MSB_TRY_STATUS(secrets::ProtectProcessMemory());
  std::string text;
  text.reserve(secrets::kMaxTransferBytes);  // never reallocated: no stray copies
  char buf[16 * 1024];
  for (;;) {
    ssize_t n = ::read(0, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      secrets::WipeString(&text);
      return Error::FromErrno("reading the secret values from stdin");
    }
    if (n == 0) break;
    if (text.size() + static_cast<size_t>(n) > secrets::kMaxTransferBytes) {
      secrets::WipeString(&text);
      OPENSSL_cleanse(buf, sizeof buf);
      return Error(ErrorCode::kInvalidArgument, "the secret values on stdin exceed their limit");
    }
    text.append(buf, static_cast<size_t>(n));
  }
  OPENSSL_cleanse(buf, sizeof buf);
  auto values = secrets::DecodeValues(text);
  secrets::WipeString(&text);
  return values;
}

// The supervisor proper, inside the sandbox's control group: its children
// are all gone when this returns.
int RunInCgroup(vm::VmSpec spec, int notify, orchestrator::Store& store,
                std::map<std::string, secrets::SecretValue> secret_values) {
  const std::string project = spec.project, name = spec.name;
  Dispatcher dispatcher;
  vm::Supervisor sup(dispatcher, std::move(spec), notify, [&](const vm::StatusReport& r) {
    orchestrator::SandboxStatusUpdate u;
    u.status = ToStoreStatus(r);
    u.reason = r.reason;
    u.exit_code = r.exit_code;
    u.count_restart = r.restarted;
    const bool gone = r.state == vm::State::kStopped || r.state == vm::State::kFailed;
    u.supervisor_pid = gone ? 0 : static_cast<int64_t>(::getpid());
    auto st = store.UpdateSandboxStatus(project, name, u);
    if (!st.ok()) {
      MSB_LOG(kWarn, "vm") << "cannot record status: " << st.error().message();
    }
  });
  sup.SetSecretValues(std::move(secret_values));
  if (auto st = sup.Start(); !st.ok()) {
    std::string msg = "error: " + st.error().message() + "\n";
    ssize_t u = ::write(notify, msg.data(), msg.size());
    (void)u;
    orchestrator::SandboxStatusUpdate u2;
    u2.status = orchestrator::SandboxStatus::kFailed;
    u2.reason = st.error().message();
    u2.supervisor_pid = 0;
    (void)store.UpdateSandboxStatus(project, name, u2);
    return 1;
  }
  dispatcher.Run();
  return sup.ExitCode();
}

int RunSupervisor(const std::string& dir, bool secrets_stdin, int lock_fd) {
  std::map<std::string, secrets::SecretValue> secret_values;
  std::string secrets_error;
  if (secrets_stdin) {
    auto read = ReadSecretValuesFromStdin();
    if (read.ok()) {
      secret_values = std::move(*read);
    } else {
      secrets_error = read.error().message();
    }
  }
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
  // stderr is supervisor.log: its lines carry their time.
  SetLogTimestamps(true);

  // One supervisor per sandbox: the lock is held until this process ends.
  // The launcher took it and passed its fd (orchestrator/launch.h); started
  // by hand, the supervisor takes it itself. Never passed on to QEMU or
  // virtiofsd.
  Status locked = OkStatus();
  if (lock_fd >= 0) {
    ::fcntl(lock_fd, F_SETFD, FD_CLOEXEC);
    locked = orchestrator::HoldSupervisorLock(lock_fd);
  } else {
    auto lock = orchestrator::TakeSupervisorLock(dir);
    if (lock.ok()) {
      (void)lock->Release();  // held for the life of the process
    } else {
      locked = lock.error();
    }
  }
  if (!locked.ok()) {
    std::string msg = locked.error().code() == ErrorCode::kAlreadyExists
                          ? "error: another supervisor already runs the sandbox in " + dir + "\n"
                          : "error: " + locked.error().message() + "\n";
    ssize_t u = ::write(notify, msg.data(), msg.size());
    (void)u;
    return 1;
  }
  if (!secrets_error.empty()) {
    std::string msg = "error: " + secrets_error + "\n";
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
  // The sandbox's control group (vm/cgroup.h), joined before virtiofsd and
  // QEMU exist so they are born in it, and left once they are gone.
  const vm::CgroupHost cgroups = vm::DetectCgroupHost();
  const std::string cgroup = vm::SandboxCgroupName(spec->project, spec->name, dir);
  if (auto notice = vm::CgroupNotice(cgroups, ::geteuid() == 0); !notice.empty()) {
    MSB_LOG(kInfo, "vm") << notice;
  }
  if (!cgroups.controllers.empty()) {
    auto st = vm::JoinCgroup(cgroups, cgroup, vm::SandboxCgroupLimits(*spec), ::getpid());
    if (!st.ok()) {
      std::string msg = "error: the sandbox's control group: " + st.error().message() + "\n";
      ssize_t u = ::write(notify, msg.data(), msg.size());
      (void)u;
      return 1;
    }
  }
  const int code = RunInCgroup(std::move(*spec), notify, *store, std::move(secret_values));
  if (!cgroups.controllers.empty()) {
    if (auto st = vm::LeaveCgroup(cgroups, cgroup, ::getpid()); !st.ok()) {
      MSB_LOG(kWarn, "vm") << st.error().message();
    }
  }
  return code;
}

}  // namespace

void RegisterSupervisorCommand(CLI::App& app) {
  auto* cmd = app.add_subcommand("supervisor", "");  // hidden: empty description
  cmd->group("");
  auto dir = std::make_shared<std::string>();
  auto secrets_stdin = std::make_shared<bool>(false);
  auto lock_fd = std::make_shared<int>(-1);
  cmd->add_option("--dir", *dir, "sandbox directory")->required();
  cmd->add_flag("--secrets-stdin", *secrets_stdin, "read secret values from stdin");
  cmd->add_option("--lock-fd", *lock_fd, "an inherited fd holding the sandbox's supervisor lock");
  OnRun(cmd, [dir, secrets_stdin, lock_fd]() { return RunSupervisor(*dir, *secrets_stdin, *lock_fd); });
}

}  // namespace msb::cli
