// Booting and powering off a one-shot builder microVM (builder_vm.h).
//
// Boot: scratch directory → listen on <dir>/agent.sock → QEMU (its output in
// <dir>/qemu.log, the guest console in <dir>/console.log) → accept QEMU's
// agent chardev connection. QEMU connects as soon as it starts, before the
// guest runs; the caller's first frame (agentd's hello) comes later.
#include "vm/builder_vm.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "agent/messages.h"
#include "common/io.h"
#include "common/log.h"
#include "common/unix_socket.h"
#include "vm/jail.h"
#include "vm/kernel.h"
#include "vm/qemu_cmdline.h"
#include "vm/spec.h"

namespace msb::vm {
namespace {

constexpr uint64_t kMinMemoryMib = 64;
constexpr int kMaxCpus = 8;
// $TMPDIR longer than this leaves no room for "/<prefix>XXXXXX/agent.sock"
// in a unix socket path (108 bytes).
constexpr size_t kMaxTmpdir = 60;

std::string LogTail(const std::string& path, int lines) {
  std::string tail = GuestLogTail(path, lines);
  return tail.empty() ? "(nothing)" : tail;
}

// Kernel arguments for a TCG guest with more than one vCPU: without them
// Linux spends about 0.2 s of a TCG boot calibrating the second vCPU's delay
// loop and checking that the vCPUs' TSCs agree (they do: QEMU derives them
// from one host clock), then drops the TSC as its clock source. lpj is the
// delay loop's count per jiffy that the boot CPU computes from the TSC rate
// (tsc_early_khz) at the guest kernel's HZ of 250 (vm/kernel.config keeps
// the default); "" when the rate is not in `args`.
std::string SmpTcgKernelArgs(const std::string& args) {
  const std::string key = "tsc_early_khz=";
  size_t at = args.find(key);
  if (at == std::string::npos) return "";
  uint64_t khz = std::strtoull(args.c_str() + at + key.size(), nullptr, 10);
  if (khz == 0) return "";
  constexpr uint64_t kGuestHz = 250;
  return "tsc=reliable lpj=" + std::to_string(khz * 1000 / kGuestHz);
}

std::vector<std::string> Argv(const BuilderVmOptions& o, const std::string& qemu,
                              const BuilderVmBoot& boot, const std::string& dir) {
  MicrovmConfig m;
  m.qemu = qemu;
  m.kvm = o.accel == "kvm";
  m.cpus = std::clamp(o.cpus, 1, kMaxCpus);
  m.memory_mib = std::max<uint64_t>(o.memory_bytes >> 20, kMinMemoryMib);
  m.kernel = o.kernel;
  m.initramfs = o.initramfs;
  m.kernel_args = o.kernel_args.empty() ? TscKernelArg() : o.kernel_args;
  if (!m.kvm && m.cpus > 1) {
    std::string smp = SmpTcgKernelArgs(m.kernel_args);
    if (!smp.empty()) m.kernel_args += (m.kernel_args.empty() ? "" : " ") + smp;
  }
  QemuCommandLine cmd = QemuCommandLine::ForMicrovm(m);
  cmd.AttachSerialConsole(dir + "/console.log");
  cmd.AttachAgentPort(dir + "/agent.sock");
  for (size_t i = 0; i < boot.disks.size(); ++i) cmd.AttachBlock("disk" + std::to_string(i), boot.disks[i]);
  return std::move(cmd).TakeArgv();
}

}  // namespace

BuilderVm::ScratchDir::~ScratchDir() {
  if (path_.empty()) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

Status BuilderVm::ScratchDir::Create(const std::string& prefix) {
  const char* tmp = std::getenv("TMPDIR");
  std::string base = tmp != nullptr && *tmp != '\0' && std::strlen(tmp) < kMaxTmpdir ? tmp : "/tmp";
  std::string tmpl = base + "/" + prefix + "XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) return Error::FromErrno("creating a directory in " + base);
  path_ = tmpl;
  return OkStatus();
}

Error BuilderVm::Fail(const std::string& name, const std::string& dir, const std::string& what) {
  return Error(ErrorCode::kUnavailable, name + " " + what + "; its console:\n" + LogTail(dir + "/console.log", 12) +
                                            "\nQEMU:\n" + LogTail(dir + "/qemu.log", 5));
}

Error BuilderVm::Fail(const std::string& what) const { return Fail(name_, scratch_.path(), what); }

Result<agent::Frame> BuilderVm::Receive(Clock::time_point deadline) {
  auto f = channel_.Receive(deadline);
  if (f.ok()) return f;
  if (f.error().code() == ErrorCode::kTimeout) return Fail("did not finish in time");
  return Fail("closed the agent channel (" + f.error().message() + ")");
}

Status BuilderVm::ExchangeHello(const std::string& software, Clock::time_point deadline) {
  MSB_TRY(agent::Frame hello, Receive(deadline));
  if (hello.kind != agent::FrameKind::kHello) return Fail("sent " + agent::ToString(hello.kind) + " before hello");
  MSB_TRY(agent::Hello h, agent::ParseHello(hello.payload));
  if (h.version != agent::kProtocolVersion)
    return Error(ErrorCode::kUnavailable, "the builder's agentd speaks agent protocol version " +
                                              std::to_string(h.version) + ", msb speaks " +
                                              std::to_string(agent::kProtocolVersion) + "; rebuild agentd");
  return channel_.Send(agent::Frame{agent::kChannelId, agent::FrameKind::kHello,
                                    agent::Encode(agent::Hello{agent::kProtocolVersion, software})},
                       deadline);
}

Result<BuilderVm> BuilderVm::Boot(const BuilderVmOptions& options, const BuilderVmBoot& boot) {
  std::string qemu_bin = options.qemu;
  if (qemu_bin.empty()) {
    MSB_TRY(qemu_bin, FindQemu());
  }
  ScratchDir scratch;
  MSB_TRY_STATUS(scratch.Create(boot.scratch_prefix));
  const std::string& dir = scratch.path();
  MSB_TRY(UniqueFd listener, ListenUnix(dir + "/agent.sock", false, 1));
  UniqueFd log(::open((dir + "/qemu.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  SpawnOptions opts;
  opts.argv = Argv(options, qemu_bin, boot, dir);
  opts.stdout_fd = log.valid() ? log.get() : -2;
  opts.stderr_fd = log.valid() ? log.get() : -2;
  opts.parent_death_signal = SIGKILL;
  if (options.jail) MSB_TRY_STATUS(ConfineVmm(BuilderJail(options, boot, dir), &opts));
  MSB_TRY(ChildProcess qemu, ChildProcess::Spawn(opts));

  UniqueFd conn;
  while (!conn) {
    if (Clock::now() >= boot.deadline) return Fail(boot.name, dir, "did not start in time");
    if (auto st = qemu.TryWait()) return Fail(boot.name, dir, "exited at start (" + st->ToString() + ")");
    pollfd p{listener.get(), POLLIN, 0};
    if (::poll(&p, 1, 100) == 1) conn.Reset(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
  }
  return BuilderVm(std::move(scratch), std::move(qemu), std::move(conn), boot.name);
}

ExitStatus BuilderVm::PowerOff(Clock::time_point deadline) {
  (void)channel_.Send(
      agent::Frame{agent::kChannelId, agent::FrameKind::kShutdown, agent::Encode(agent::Shutdown{1000})},
      deadline);
  for (;;) {
    auto f = channel_.Receive(deadline);
    if (!f.ok()) break;  // closed (QEMU exited) or the deadline passed
  }
  for (;;) {
    if (auto st = qemu_.TryWait()) {
      if (st->code != 0) {
        MSB_LOG(kWarn, "vm") << name_ << ": QEMU ended with " << st->ToString();
      }
      return *st;
    }
    if (Clock::now() >= deadline) {
      qemu_.Kill(SIGKILL);
      return qemu_.Wait();
    }
    ::poll(nullptr, 0, 20);
  }
}

}  // namespace msb::vm
