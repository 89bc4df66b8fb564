// Booting and powering off a one-shot builder microVM (builder_vm.h).
//
// Boot: a builder template when one fits (restored, or built first), else
// cold. Cold: scratch directory → listen on <dir>/agent.sock → QEMU (its
// output in <dir>/qemu.log, the guest console in <dir>/console.log) → accept
// QEMU's agent chardev connection. QEMU connects as soon as it starts, before
// the guest runs; the caller's first frame (agentd's hello) comes later.
// Restore: the same with <dir>/qmp.sock and `-incoming fd:0`, then wait on
// the monitor until the guest runs.
#include "vm/builder_vm.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
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
#include "vm/qmp_sync.h"
#include "vm/spec.h"
#include "vm/template.h"

namespace msb::vm {
namespace {

constexpr uint64_t kMinMemoryMib = 64;
constexpr int kMaxCpus = 8;
// $TMPDIR longer than this leaves no room for "/<prefix>XXXXXX/agent.sock"
// in a unix socket path (108 bytes).
constexpr size_t kMaxTmpdir = 60;
// A restore: until QEMU has loaded the stream and runs the guest.
// MSB_RESTORE_TIMEOUT_MS replaces it (vm/template.h RestoreTimeoutMs).
constexpr int kRestoreLoadMs = 30000;
// A builder template's build: a cold boot to agentd's hello and the save.
constexpr int kTemplateBuildMs = 60000;
// The most disks a builder template pads to: an unpack's target and
// agent::kMaxUnpackLayers layers.
constexpr size_t kMaxPaddedDisks = 21;

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
                              const BuilderVmBoot& boot, const std::string& dir, bool qmp) {
  MicrovmConfig m;
  m.qemu = qemu;
  m.kvm = o.accel == "kvm";
  m.cpus = std::clamp(o.cpus, 1, kMaxCpus);
  m.memory_mib = std::max<uint64_t>(o.memory_bytes >> 20, kMinMemoryMib);
  m.kernel = o.kernel;
  m.initramfs = o.initramfs;
  // Measured once per process: the command line is a builder template's key.
  static const std::string tsc = TscKernelArg();
  m.kernel_args = o.kernel_args.empty() ? tsc : o.kernel_args;
  if (!m.kvm && m.cpus > 1) {
    std::string smp = SmpTcgKernelArgs(m.kernel_args);
    if (!smp.empty()) m.kernel_args += (m.kernel_args.empty() ? "" : " ") + smp;
  }
  QemuCommandLine cmd = QemuCommandLine::ForMicrovm(m);
  cmd.AttachSerialConsole(dir + "/console.log");
  cmd.AttachAgentPort(dir + "/agent.sock");
  if (qmp) cmd.AttachQmp(dir + "/qmp.sock");
  for (size_t i = 0; i < boot.disks.size(); ++i) cmd.AttachBlock("disk" + std::to_string(i), boot.disks[i]);
  return std::move(cmd).TakeArgv();
}

// Why this builder boots cold; "" when a template may be used.
std::string ColdReason(const BuilderVmOptions& o) {
  if (const char* b = std::getenv("MSB_BOOT"); b != nullptr && std::strcmp(b, "cold") == 0) return "MSB_BOOT=cold";
  if (o.boot_mode == "cold") return "its options say cold";
  if (!o.jail) return "it runs without its jail";
  return "";
}

// boot with its disks padded to PaddedDiskCount by empty read-only disks
// <dir>/pad-N, and with every path at <dir>/disk-N when `placeholders`.
BuilderVmBoot TemplateLayout(const BuilderVmBoot& boot, const std::string& dir, bool placeholders) {
  BuilderVmBoot b = boot;
  const size_t n = PaddedDiskCount(boot.disks.size());
  for (size_t i = boot.disks.size(); i < n; ++i)
    b.disks.push_back(VmDisk{dir + "/pad-" + std::to_string(i), "msb-pad-" + std::to_string(i), true});
  if (placeholders) {
    for (size_t i = 0; i < b.disks.size(); ++i) b.disks[i].path = dir + "/disk-" + std::to_string(i);
  }
  return b;
}

// Empty files for the disks at `from` and later.
Status CreateEmpty(const std::vector<VmDisk>& disks, size_t from) {
  for (size_t i = from; i < disks.size(); ++i) {
    UniqueFd f(::open(disks[i].path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!f) return Error::FromErrno("creating " + disks[i].path);
  }
  return OkStatus();
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
  if (!restored_) {
    MSB_TRY(agent::Frame hello, Receive(deadline));
    if (hello.kind != agent::FrameKind::kHello) return Fail("sent " + agent::ToString(hello.kind) + " before hello");
    MSB_TRY(agent::Hello h, agent::ParseHello(hello.payload));
    if (h.version != agent::kProtocolVersion)
      return Error(ErrorCode::kUnavailable, "the builder's agentd speaks agent protocol version " +
                                                std::to_string(h.version) + ", msb speaks " +
                                                std::to_string(agent::kProtocolVersion) + "; rebuild agentd");
  }
  return channel_.Send(agent::Frame{agent::kChannelId, agent::FrameKind::kHello,
                                    agent::Encode(agent::Hello{agent::kProtocolVersion, software})},
                       deadline);
}

size_t PaddedDiskCount(size_t disks) {
  if (disks > kMaxPaddedDisks) return disks;
  for (size_t c : {size_t{2}, size_t{3}, size_t{5}, size_t{9}, size_t{17}})
    if (disks <= c) return c;
  return kMaxPaddedDisks;
}

Result<agent::GuestStart> BuilderVm::Start() const {
  agent::GuestStart s = FreshGuestStart(restored_);
  // A restored guest without it would keep the template's random state.
  if (s.entropy.empty())
    return Error(ErrorCode::kIo, "no host randomness for the builder VM: getrandom failed");
  return s;
}

Result<BuilderVm> BuilderVm::Boot(const BuilderVmOptions& options, const BuilderVmBoot& boot) {
  std::string qemu_bin = options.qemu;
  if (qemu_bin.empty()) {
    MSB_TRY(qemu_bin, FindQemu());
  }
  std::string why_cold = ColdReason(options);
  if (why_cold.empty()) {
    std::vector<std::pair<std::string, std::string>> files{
        {"kernel", options.kernel}, {"initramfs", options.initramfs}, {"qemu", qemu_bin}};
    auto key = TemplateKeyOf(kBuilderTemplate, files, Argv(options, "qemu", TemplateLayout(boot, "/t", true), "/t", true));
    TemplateChoice t;
    if (!key.ok()) {
      t.why_cold = "no template key: " + key.error().message();
    } else {
      TemplateMeta what;
      what.kind = kBuilderTemplate;
      what.files = files;
      what.cpus = std::clamp(options.cpus, 1, kMaxCpus);
      what.memory_mib = std::max<uint64_t>(options.memory_bytes >> 20, kMinMemoryMib);
      what.accel = options.accel;
      what.kernel = options.kernel;
      what.disks = static_cast<int>(PaddedDiskCount(boot.disks.size()));
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(boot.deadline - Clock::now()).count();
      int timeout_ms = static_cast<int>(std::clamp<int64_t>(left, 0, kTemplateBuildMs));
      // Not waiting for another start's build: that could outlast the deadline.
      t = PrepareTemplateFor(*key, what, timeout_ms, [&](const std::string& work) {
        BuilderVmBoot b = TemplateLayout(boot, work, true);
        TemplateVm vm;
        vm.argv = Argv(options, qemu_bin, b, work, true);
        vm.jail = BuilderJail(options, b, work, true);
        for (const VmDisk& d : b.disks) vm.placeholders.push_back(d.path);
        vm.qmp_socket = work + "/qmp.sock";
        vm.agent_socket = work + "/agent.sock";
        vm.console_log = work + "/console.log";
        return vm;
      }, /*wait=*/false);
    }
    if (!t.key.empty()) {
      bool refused = false;
      auto vm = Restore(options, qemu_bin, boot, t.state_path, &refused);
      if (vm.ok()) {
        vm->how_ = "restored from builder template " + t.key + (t.built ? " (built for this boot)" : "");
        MSB_LOG(kDebug, "vm") << boot.name << ": " << vm->how_;
        return vm;
      }
      // A stream QEMU refused is never tried again; a slow load, or a
      // failure on the host before QEMU ran, says nothing against it.
      const bool bad = refused;
      if (bad) RemoveTemplateTried(t);
      why_cold = "builder template " + t.key + " did not restore (" + vm.error().message() + ")" +
                 (bad ? "; removed it" : "");
      MSB_LOG(kWarn, "vm") << boot.name << ": " << why_cold << "; booting cold";
    } else {
      why_cold = t.why_cold;
    }
  }
  MSB_TRY(BuilderVm vm, BootCold(options, qemu_bin, boot));
  vm.how_ = "cold boot: " + why_cold;
  MSB_LOG(kDebug, "vm") << boot.name << ": " << vm.how_;
  return vm;
}

Result<BuilderVm> BuilderVm::Restore(const BuilderVmOptions& options, const std::string& qemu_bin,
                                     const BuilderVmBoot& boot, const std::string& state_path, bool* refused) {
  UniqueFd state(::open(state_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!state) return Error::FromErrno("opening " + state_path);
  ScratchDir scratch;
  MSB_TRY_STATUS(scratch.Create(boot.scratch_prefix));
  const std::string& dir = scratch.path();
  BuilderVmBoot b = TemplateLayout(boot, dir, false);
  MSB_TRY_STATUS(CreateEmpty(b.disks, boot.disks.size()));
  MSB_TRY(UniqueFd agent_l, ListenUnix(dir + "/agent.sock", false, 1));
  MSB_TRY(UniqueFd qmp_l, ListenUnix(dir + "/qmp.sock", false, 1));
  UniqueFd log(::open((dir + "/qemu.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  SpawnOptions opts;
  opts.argv = Argv(options, qemu_bin, b, dir, true);
  // The stream comes in on QEMU's stdin: the jail needs no path for it.
  opts.argv.insert(opts.argv.end(), {"-incoming", "fd:0"});
  opts.stdin_fd = state.get();
  opts.stdout_fd = log.valid() ? log.get() : -2;
  opts.stderr_fd = log.valid() ? log.get() : -2;
  opts.parent_death_signal = SIGKILL;
  MSB_TRY_STATUS(ConfineVmm(BuilderJail(options, b, dir, true), &opts));
  MSB_TRY(ChildProcess qemu, ChildProcess::Spawn(opts));
  state.Reset();

  const auto load = std::chrono::milliseconds(RestoreTimeoutMs(kRestoreLoadMs));
  const auto deadline = std::min(boot.deadline, Clock::now() + load);
  auto fail = [&](ErrorCode code, const std::string& what) {
    Error e = Fail(boot.name, dir, what);
    *refused = code != ErrorCode::kTimeout;
    return Error(code, e.message());
  };
  // QEMU connects both sockets at start, before it loads the stream.
  UniqueFd agent, qmp;
  while (!agent || !qmp) {
    if (Clock::now() >= deadline) return fail(ErrorCode::kTimeout, "did not start in time");
    if (auto st = qemu.TryWait()) return fail(ErrorCode::kUnavailable, "exited at start (" + st->ToString() + ")");
    pollfd p[2] = {{agent ? -1 : agent_l.get(), POLLIN, 0}, {qmp ? -1 : qmp_l.get(), POLLIN, 0}};
    if (::poll(p, 2, 100) <= 0) continue;
    if (p[0].revents) agent.Reset(::accept4(agent_l.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (p[1].revents) qmp.Reset(::accept4(qmp_l.get(), nullptr, nullptr, SOCK_CLOEXEC));
  }
  // Until the guest runs: "inmigrate" while QEMU loads the stream, then
  // RESUME and "running". A stream QEMU cannot load ends QEMU, and with it
  // the monitor; any other state is a stream that did not restore a
  // running guest.
  QmpSync mon(qmp.get(), deadline);
  Status loaded = mon.Handshake();
  if (loaded.ok()) {
    auto st = mon.Call("query-status", nullptr);
    const nlohmann::json* status = st.ok() && st->is_object() && st->contains("status") ? &(*st)["status"] : nullptr;
    if (!st.ok()) {
      loaded = st.error();
    } else if (status == nullptr || !status->is_string()) {
      loaded = Error(ErrorCode::kProtocol, "QEMU's query-status has no status");
    } else if (*status == "inmigrate") {
      loaded = mon.WaitForEvent("RESUME");
    } else if (*status != "running") {
      loaded = Error(ErrorCode::kState, "QEMU's guest is " + BoundedGuestText(status->get<std::string>()) +
                                            ", not running, after the load");
    }
  }
  if (!loaded.ok()) {
    ErrorCode code = loaded.error().code() == ErrorCode::kTimeout ? ErrorCode::kTimeout : ErrorCode::kUnavailable;
    return fail(code, "did not resume from its template: " + loaded.error().message());
  }
  // The monitor is not needed any more; QEMU runs on without it.
  qmp.Reset();
  BuilderVm vm(std::move(scratch), std::move(qemu), std::move(agent), boot.name);
  vm.restored_ = true;
  return vm;
}

Result<BuilderVm> BuilderVm::BootCold(const BuilderVmOptions& options, const std::string& qemu_bin,
                                      const BuilderVmBoot& boot) {
  ScratchDir scratch;
  MSB_TRY_STATUS(scratch.Create(boot.scratch_prefix));
  const std::string& dir = scratch.path();
  MSB_TRY(UniqueFd listener, ListenUnix(dir + "/agent.sock", false, 1));
  UniqueFd log(::open((dir + "/qemu.log").c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  SpawnOptions opts;
  opts.argv = Argv(options, qemu_bin, boot, dir, false);
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
