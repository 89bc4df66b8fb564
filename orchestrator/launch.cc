// Sandbox mechanics: the request from a declared sandbox, disks, spec,
// detached supervisor, readiness over a pipe, in-place starts and updates.
#include "orchestrator/launch.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <random>
#include <utility>

#include "agent/protocol.h"
#include "common/child.h"
#include "common/fd.h"
#include "common/install_layout.h"
#include "common/io.h"
#include "common/log.h"
#include "storage/disk.h"
#include "orchestrator/control_client.h"
#include "orchestrator/launch_mounts.h"
#include "orchestrator/planner.h"
#include "orchestrator/sandbox_ref.h"
#include "schema/network_rule.h"
#include "schema/sandboxfile.h"
#include "schema/security.h"
#include "schema/values.h"
#include "secrets/transfer.h"
#include "vm/accel.h"
#include "vm/cgroup.h"
#include "vm/initramfs.h"
#include "vm/kernel.h"
#include "vm/lifecycle_policy.h"
#include "vm/network.h"
#include "vm/spec.h"
#include "vm/supervisor.h"

namespace msb::orchestrator {
namespace {

// The tmpfs under a read-only root: it holds only what agentd writes at boot
// (resolv.conf, hosts, the sandbox CA and its bundle) and is read-only to
// everything after.
constexpr uint64_t kReadOnlyRootScratch = 16ull << 20;

// After answering a stop request the supervisor has this long to exit.
constexpr int kSupervisorExitMs = 5000;

std::string RandomId() {
  std::random_device rd;
  std::string id;
  static const char* kHex = "0123456789abcdef";
  for (int i = 0; i < 12; ++i) id += kHex[rd() % 16];
  return id;
}

// Reads from fd within deadline_ms until a newline arrives (what was read, the
// newline and anything after it); what arrived so far on EOF or timeout.
std::string ReadLine(int fd, int deadline_ms) {
  std::string line;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(deadline_ms);
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) return line;
    pollfd p{fd, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) continue;
    char buf[4096];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return line;
    line.append(buf, static_cast<size_t>(n));
    if (line.find('\n') != std::string::npos || line.size() > 1 << 20) return line;
  }
}

}  // namespace

nlohmann::json SupervisorPolicy(const schema::Sandbox& sb) {
  vm::LifecyclePolicy p;
  p.restart.kind = static_cast<vm::RestartPolicy::Kind>(static_cast<int>(sb.restart.policy));
  p.restart.max_retries = sb.restart.max_retries;
  if (sb.healthcheck) {
    vm::HealthPolicy h;
    h.command = sb.healthcheck->command;
    h.interval_ms = sb.healthcheck->interval_ms;
    h.timeout_ms = sb.healthcheck->timeout_ms;
    h.retries = sb.healthcheck->retries;
    h.start_period_ms = sb.healthcheck->start_period_ms;
    p.health = h;
  }
  return vm::ToJson(p);
}

Result<LaunchRequest> MakeLaunchRequest(const schema::Project& project, const schema::Sandbox& sb,
                                        const ResolvedImage& image, const LaunchOptions& options) {
  const std::string& digest = image.digest;
  LaunchRequest req;
  req.project = project.name;
  req.name = sb.name;
  req.image_ref = sb.image.reference;
  req.image_dir = sb.image.path;
  req.base_disk = image.base_disk;
  req.lower_disks = image.lower_disks;
  req.cpus = sb.cpus;
  req.memory_bytes = sb.memory;
  req.disk_bytes = sb.disk;
  req.ephemeral = sb.ephemeral;
  req.read_only_root = sb.security.read_only_root;
  req.log_max_bytes = sb.logs.max_size;
  req.cold_boot = sb.cold_boot;
  req.boot.security.no_new_privileges = sb.security.no_new_privileges;
  if (auto caps = schema::EffectiveCapabilities(sb.security)) {
    req.boot.security.capabilities = schema::CapabilityNames(*caps);
  }
  req.mounts = sb.volumes;
  req.tmpfs = sb.tmpfs;
  for (const auto& m : sb.volumes) {
    auto v = project.volumes.find(m.source);
    if (m.kind == schema::Mount::Kind::kVolume && v != project.volumes.end())
      req.volume_sizes[m.source] = v->second.size;
  }
  for (const auto& [k, v] : sb.envs) req.boot.env.push_back(k + "=" + v);
  req.boot.user = sb.user;
  req.boot.workdir = sb.workdir;
  req.boot.command = sb.command;
  if (req.boot.command.empty()) {
    auto start = sb.scripts.find("start");
    if (start != sb.scripts.end()) req.boot.command = start->second;
  }
  ApplyImageDefaults(image.defaults, !req.boot.command.empty(), req.boot);
  if (!options.boot_workload) req.exec_command = std::exchange(req.boot.command, {});
  if (options.boot_timeout_ms > 0) req.boot_timeout_ms = options.boot_timeout_ms;
  if (options.network_device) {
    vm::VmNetwork net;
    net.profile = schema::ToString(sb.network.policy);
    for (const auto& rule : sb.network.rules) net.rules.push_back(schema::ToString(rule));
    net.dns_servers = sb.network.dns_servers;
    net.rebind_protection = sb.network.rebind_protection;
    for (const auto& p : sb.ports) {
      net.ports.push_back({p.host_ip, p.host_port, p.guest_port, schema::ToString(p.protocol)});
    }
    if (options.network_group) {
      net.group_dir = MsbHome() + "/net/" + project.name;
      net.group_name = sb.name;
    }
    if (options.mtu != 0) net.mtu = options.mtu;
    net.tls_ca_file = sb.network.tls_ca;
    req.network = net;
  }
  req.secrets = VmSecretsOf(sb);
  req.policy = SupervisorPolicy(sb);
  req.config_hash = schema::ConfigHash(sb, digest);
  req.spec_json = RecordSpecJson(sb, digest);
  req.image_digest = digest;
  return req;
}

uint64_t CachedTscKhz() {
  auto boot_id = ReadFile("/proc/sys/kernel/random/boot_id");
  std::string path = MsbHome() + "/host-tsc.json";
  if (boot_id.ok()) {
    if (auto text = ReadFile(path); text.ok()) {
      auto j = nlohmann::json::parse(*text, nullptr, false);
      if (j.is_object() && j.value("boot_id", "") == *boot_id && j.contains("tsc_khz") &&
          j["tsc_khz"].is_number_unsigned()) {
        return j["tsc_khz"].get<uint64_t>();
      }
    }
  }
  auto khz = vm::HostTscKhz();
  if (!khz.ok() || *khz <= 0) return 0;
  if (boot_id.ok()) {
    (void)WriteFileAtomic(path, nlohmann::json{{"boot_id", *boot_id}, {"tsc_khz", *khz}}.dump());
  }
  return static_cast<uint64_t>(*khz);
}


Result<std::string> FindAgentd() {
  if (const char* a = std::getenv("MSB_AGENTD"); a != nullptr && *a != '\0') return std::string(a);
  const std::string cand = LibexecPath("agentd");
  if (::access(cand.c_str(), X_OK) == 0) return cand;
  if (RunningFromBuildTree()) {
    return Error(ErrorCode::kUnavailable, "agentd (the guest agent) was not found at " + cand +
                                              "; build it with scripts/setup");
  }
  return Error(ErrorCode::kUnavailable, "agentd (the guest agent) was not found at " + cand +
                                            ", where msb's installation puts it; install msb "
                                            "again (cmake --install)");
}

std::string SupervisorLockPath(const std::string& sandbox_dir) {
  return sandbox_dir + "/supervisor.lock";
}

namespace {

struct flock WholeFile(short type) {
  struct flock l {};
  l.l_type = type;
  l.l_whence = SEEK_SET;
  l.l_start = 0;
  l.l_len = 0;  // to the end, however long
  return l;
}

}  // namespace

Status HoldSupervisorLock(int fd) {
  struct flock l = WholeFile(F_WRLCK);
  if (::fcntl(fd, F_OFD_SETLK, &l) == 0) return OkStatus();
  if (errno == EAGAIN || errno == EACCES) {
    return Error(ErrorCode::kAlreadyExists, "another supervisor holds its lock", errno);
  }
  return Error::FromErrno("locking the supervisor lock");
}

Result<UniqueFd> TakeSupervisorLock(const std::string& sandbox_dir) {
  const std::string path = SupervisorLockPath(sandbox_dir);
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return Error::FromErrno("cannot open " + path);
  if (fd.get() < 3) {
    // Spawn puts the child's stdio on 0-2: the lock must live above them.
    UniqueFd high(::fcntl(fd.get(), F_DUPFD_CLOEXEC, 3));
    if (!high) return Error::FromErrno("cannot duplicate the descriptor of " + path);
    fd = std::move(high);
  }
  if (auto st = HoldSupervisorLock(fd.get()); !st.ok()) return st.error().Wrap(path);
  return fd;
}

bool SupervisorRunning(const std::string& sandbox_dir) {
  UniqueFd fd(::open(SupervisorLockPath(sandbox_dir).c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return false;  // never started
  // The lock is held for the supervisor's whole life (taken for it before it
  // was spawned); the kernel drops it when the last holder of the open file
  // dies, however it dies.
  struct flock l = WholeFile(F_WRLCK);
  if (::fcntl(fd.get(), F_OFD_GETLK, &l) == 0 && l.l_type != F_UNLCK) return true;
  // A supervisor of an earlier msb holds a flock(2) instead.
  if (::flock(fd.get(), LOCK_SH | LOCK_NB) == 0) {
    ::flock(fd.get(), LOCK_UN);
    return false;
  }
  return errno == EWOULDBLOCK;
}

bool SupervisorAlive(const SandboxRecord& r) {
  return !r.sandbox_dir.empty() && SupervisorRunning(r.sandbox_dir);
}

SandboxRecord Observe(Store& store, SandboxRecord r) {
  const bool live_state = r.status == SandboxStatus::kRunning || r.status == SandboxStatus::kStarting;
  if (!live_state && r.status != SandboxStatus::kCreated) return r;
  if (r.status == SandboxStatus::kCreated) {
    // A launcher killed between spawning the supervisor and recording it: the
    // supervisor is the truth, and it reports its own state shortly.
    if (SupervisorAlive(r)) r.status = SandboxStatus::kStarting;
    return r;
  }
  if (!SupervisorAlive(r)) {
    SandboxStatusUpdate u;
    u.status = SandboxStatus::kFailed;
    u.reason = "its supervisor is gone (killed or crashed); the VM died with it";
    u.supervisor_pid = 0;
    (void)store.UpdateSandboxStatus(r.project, r.name, u);
    r.status = u.status;
    r.status_reason = u.reason;
    r.supervisor_pid = 0;
  }
  return r;
}

Result<SandboxRecord> Prepare(Store& store, const LaunchRequest& req) {
  MSB_TRY(std::string qemu, vm::FindQemu());
  MSB_TRY(BootFiles files, FindBootFiles());
  const std::string& kernel = files.kernel;
  const std::string& initramfs = files.initramfs;
  MSB_TRY(std::string accel, vm::ChooseAccel(kernel, qemu));
  std::string home = MsbHome();
  // A published port another program holds: say so before anything starts.
  if (req.network) MSB_TRY_STATUS(vm::CheckPortsFree(req.network->ports));
  std::string base = req.base_disk;
  if (base.empty()) {
    MSB_TRY(base, storage::BuildBaseDiskFromDir(req.image_dir, home + "/images/local"));
  }

  std::string dir = home + "/sandboxes/" + RandomId();
  MSB_TRY_STATUS(MakeDirs(dir, 0700));
  auto cleanup_dir = [&]() { std::filesystem::remove_all(dir); };

  vm::VmSpec spec;
  spec.project = req.project;
  spec.name = req.name;
  spec.dir = dir;
  spec.cpus = req.cpus;
  spec.memory_bytes = req.memory_bytes;
  spec.accel = accel;
  spec.kernel = kernel;
  spec.initramfs = initramfs;
  spec.base_disk = base;
  spec.lower_disks = req.lower_disks;
  spec.boot_timeout_ms = req.boot_timeout_ms;
  spec.boot_mode = req.cold_boot ? "cold" : "auto";
  if (req.log_max_bytes > 0) {
    spec.log_max_bytes = req.log_max_bytes;
  } else if (const char* max = std::getenv("MSB_LOG_MAX_SIZE"); max != nullptr && *max != '\0') {
    auto bytes = schema::ParseSize(max);
    if (!bytes.ok()) {
      cleanup_dir();
      return bytes.error().Wrap("MSB_LOG_MAX_SIZE " + std::string(max));
    }
    spec.log_max_bytes = *bytes;
  }
  spec.tsc_khz = CachedTscKhz();
  agent::BootConfig boot = req.boot;
  if (boot.hostname.empty()) boot.hostname = req.name;
  boot.root.ephemeral = req.ephemeral || req.read_only_root;
  boot.root.read_only = req.read_only_root;
  if (req.read_only_root) {
    boot.root.upper_size_bytes = kReadOnlyRootScratch;
  } else if (req.ephemeral) {
    boot.root.upper_size_bytes = req.disk_bytes;
  } else {
    spec.upper_disk = dir + "/upper.ext4";
    if (auto st = storage::CreateSparseExt4(spec.upper_disk, req.disk_bytes, "msb-upper"); !st.ok()) {
      cleanup_dir();
      return st.error().Wrap("creating the writable layer of " + req.name);
    }
  }
  if (auto st = PrepareMounts(store, req, &spec, &boot); !st.ok()) {
    cleanup_dir();
    return st.error();
  }
  // A snapshot's layers take virtio-mmio transports too: the Sandboxfile's
  // check (schema::kMaxMounts) could not count them.
  if (req.lower_disks.size() > agent::kMaxLowerLayers ||
      spec.volumes.size() + spec.shares.size() + req.lower_disks.size() > size_t{schema::kMaxMounts}) {
    cleanup_dir();
    return Error(ErrorCode::kInvalidArgument,
                 req.name + ": " + std::to_string(spec.volumes.size() + spec.shares.size()) +
                     " volumes and bind mounts and " + std::to_string(req.lower_disks.size()) +
                     " snapshot layers exceed the microVM limit of " + std::to_string(schema::kMaxMounts) +
                     " devices (docs/design.md \"Disks and devices\"); mount fewer");
  }
  for (size_t i = 0; i < req.lower_disks.size(); ++i) boot.root.lower_serials.push_back(vm::LowerSerial(i));
  spec.boot = nlohmann::json::parse(agent::Encode(boot));
  spec.policy = req.policy;
  spec.network = req.network;
  spec.secrets = req.secrets;
  if (auto st = vm::WriteSpec(spec); !st.ok()) {
    cleanup_dir();
    return st.error();
  }

  SandboxRecord rec;
  rec.project = req.project;
  rec.name = req.name;
  rec.config_hash = req.config_hash;
  rec.image_ref = req.image_ref;
  rec.image_digest = req.image_digest;
  rec.spec_json = req.spec_json;
  rec.sandbox_dir = dir;
  rec.control_socket = spec.ControlSocket();
  rec.agent_socket = spec.AgentSocket();
  rec.qmp_socket = spec.QmpSocket();
  if (auto st = store.UpsertSandbox(rec); !st.ok()) {
    cleanup_dir();
    return st.error();
  }
  MSB_TRY(auto got, store.GetSandbox(req.project, req.name));
  if (!got) return Error(ErrorCode::kInternal, "sandbox record vanished");
  return *got;
}

Result<SandboxRecord> Launch(Store& store, const LaunchRequest& req) {
  MSB_TRY(SandboxRecord rec, Prepare(store, req));
  return StartSupervisor(store, rec);
}

namespace {

// The supervisor's environment, which QEMU and virtiofsd inherit: msb's,
// kept to what they use (the search path, locale, msb's own settings, the
// host's trust store for intercepted upstreams), so that no variable a
// secret of any sandbox is read from reaches them; and never this
// sandbox's secret sources, whatever their names.
std::vector<std::string> SupervisorEnvironment(const std::vector<vm::VmSecret>& secrets) {
  static const char* const kKept[] = {"PATH", "HOME", "USER", "LOGNAME", "LANG", "TZ", "TMPDIR",
                                      "SSL_CERT_FILE", "SSL_CERT_DIR"};
  static const char* const kKeptPrefixes[] = {"MSB_", "LC_", "XDG_"};
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view kv(*e);
    std::string_view name = kv.substr(0, kv.find('='));
    bool keep = false;
    for (const char* k : kKept) keep = keep || name == k;
    for (const char* p : kKeptPrefixes) keep = keep || name.rfind(p, 0) == 0;
    for (const auto& s : secrets) keep = keep && !(s.source == "env" && s.from == name);
    if (keep) env.emplace_back(kv);
  }
  return env;
}

// Once per msb process, before the first sandbox starts: the host cgroup
// limits sandboxes run without (vm/cgroup.h), if any.
void NoteMissingCgroupLimits() {
  static std::once_flag once;
  std::call_once(once, [] {
    std::string notice = vm::CgroupNotice(vm::DetectCgroupHost(), ::geteuid() == 0);
    if (!notice.empty()) std::fprintf(stderr, "msb: note: %s\n", notice.c_str());
  });
}

}  // namespace

Result<BootFiles> FindBootFiles() {
  MSB_TRY(vm::GuestKernel k, vm::FindGuestKernel());
  MSB_TRY(std::string agentd, FindAgentd());
  MSB_TRY(std::string initramfs, vm::CachedInitramfs(agentd, k.modules));
  if (!k.debian_version.empty()) {
    static std::once_flag once;
    std::call_once(once, [&] {
      std::fprintf(stderr,
                   "msb: note: booting Debian's kernel %s: the tuned guest kernel is not built yet "
                   "(msb kernel build; about 1 s faster per boot). Sandboxes started now keep this "
                   "kernel until they are replaced.\n",
                   k.debian_version.c_str());
    });
  }
  return BootFiles{k.image, initramfs};
}

Result<vm::BuilderVmOptions> HostBuilderVmOptions() {
  vm::BuilderVmOptions o;
  MSB_TRY(o.qemu, vm::FindQemu());
  MSB_TRY(BootFiles boot, FindBootFiles());
  o.kernel = boot.kernel;
  o.initramfs = boot.initramfs;
  MSB_TRY(o.accel, vm::ChooseAccel(o.kernel, o.qemu));
  if (uint64_t khz = CachedTscKhz(); khz > 0) o.kernel_args = "tsc_early_khz=" + std::to_string(khz);
  return o;
}

Result<SandboxRecord> StartSupervisor(Store& store, const SandboxRecord& rec) {
  MSB_TRY(vm::VmSpec spec, vm::ReadSpec(rec.sandbox_dir));
  NoteMissingCgroupLimits();
  const std::string& dir = rec.sandbox_dir;
  struct {
    std::string project, name;
    int boot_timeout_ms;
  } req{rec.project, rec.name, spec.boot_timeout_ms};
  // The supervisor's lock, taken here and handed to it: never a moment
  // when the supervisor runs unlocked, and no second one started between a
  // check and a spawn.
  auto lock = TakeSupervisorLock(dir);
  if (!lock.ok() && lock.error().code() == ErrorCode::kAlreadyExists) {
    // Already started by a launcher that did not live to record it.
    SandboxRecord live = rec;
    live.status = SandboxStatus::kStarting;
    return live;
  }
  if (!lock.ok()) return lock.error();
  if (::flock(lock->get(), LOCK_SH | LOCK_NB) != 0) {
    // A supervisor of an earlier msb, which holds a flock(2) instead.
    SandboxRecord live = rec;
    live.status = SandboxStatus::kStarting;
    return live;
  }
  ::flock(lock->get(), LOCK_UN);
  auto record_failed = [&](const std::string& why) {
    SandboxStatusUpdate failed;
    failed.status = SandboxStatus::kFailed;
    failed.reason = why;
    failed.supervisor_pid = 0;
    (void)store.UpdateSandboxStatus(req.project, req.name, failed);
  };
  // The supervisor: detached (own session), stdout is our readiness pipe,
  // stderr its log file.
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) return Error::FromErrno("pipe2");
  UniqueFd rd(p[0]), wr(p[1]);
  UniqueFd log(::open(spec.SupervisorLog().c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  SpawnOptions so;
  const int lock_fd = lock->get();
  so.argv = {"/proc/self/exe", "supervisor", "--dir", dir, "--lock-fd", std::to_string(lock_fd)};
  // The lock's fd, and so the lock, passes to the supervisor through exec.
  so.before_exec = [lock_fd]() -> int {
    int flags = ::fcntl(lock_fd, F_GETFD);
    return flags >= 0 && ::fcntl(lock_fd, F_SETFD, flags & ~FD_CLOEXEC) == 0 ? 0 : errno;
  };
  // Secret values go to the supervisor on its stdin, a pipe of their own,
  // read now from their sources (never a file, argv or its environment).
  std::string values;
  UniqueFd values_rd, values_wr;
  if (!spec.secrets.empty()) {
    auto read = ReadSecretValues(rec.name, spec.secrets);
    if (!read.ok()) {
      record_failed(read.error().message());
      return read.error();
    }
    values = std::move(*read);
    int vp[2];
    if (::pipe2(vp, O_CLOEXEC) != 0) {
      secrets::WipeString(&values);
      return Error::FromErrno("pipe2");
    }
    values_rd = UniqueFd(vp[0]);
    values_wr = UniqueFd(vp[1]);
    so.stdin_fd = values_rd.get();
    so.argv.push_back("--secrets-stdin");

  }
  so.stdout_fd = wr.get();
  so.stderr_fd = log.get();
  so.new_session = true;
  so.env = SupervisorEnvironment(spec.secrets);
  char exe[4096];
  ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) so.argv[0] = std::string(exe, static_cast<size_t>(n));
  auto child = ChildProcess::Spawn(so);
  lock->Reset();  // the supervisor holds it now (or, when the spawn failed, nobody)
  values_rd.Reset();
  if (child.ok() && values_wr) {
    // The supervisor reads all of it before anything else; a supervisor that
    // died makes the write fail (EPIPE), and its readiness line says why.
    (void)WriteAll(values_wr.get(), values);
  }
  values_wr.Reset();
  secrets::WipeString(&values);
  if (!child.ok()) {
    record_failed(child.error().message());
    return child.error();
  }
  pid_t sup_pid = child->Release();
  wr.Reset();
  SandboxStatusUpdate starting;
  starting.status = SandboxStatus::kStarting;
  starting.supervisor_pid = sup_pid;
  (void)store.UpdateSandboxStatus(req.project, req.name, starting);

  // A safety net only: the supervisor bounds each step itself and says why
  // one failed. The longest start is a template build (one boot timeout), a
  // restore that times out (at most another) and the cold boot after it.
  std::string line = ReadLine(rd.get(), 3 * req.boot_timeout_ms + 15000);
  // Reap the supervisor if it already exited (it is our child until we exit).
  int wst;
  ::waitpid(sup_pid, &wst, WNOHANG);
  if (line != "ok\n") {
    std::string why;
    if (line.rfind("error: ", 0) == 0) {
      why = line.substr(7);
      // The supervisor writes multi-line reasons: read the rest.
      std::string more;
      char buf[4096];
      ssize_t m;
      while ((m = ::read(rd.get(), buf, sizeof buf)) > 0) more.append(buf, static_cast<size_t>(m));
      if (!more.empty()) why += "\n" + more;
    } else {
      ::kill(sup_pid, SIGKILL);
      ::waitpid(sup_pid, &wst, 0);
      why = "the supervisor exited before the sandbox was ready; its log:\n" +
            vm::Supervisor::ConsoleTail(spec.SupervisorLog(), 10);
    }
    while (!why.empty() && why.back() == '\n') why.pop_back();
    record_failed(why);
    ::waitpid(sup_pid, &wst, 0);
    return Error(ErrorCode::kUnavailable, "sandbox " + req.name + " failed to start: " + why);
  }
  MSB_TRY(auto got, store.GetSandbox(req.project, req.name));
  if (!got) return Error(ErrorCode::kInternal, "sandbox record vanished");
  return *got;
}

std::vector<vm::VmSecret> VmSecretsOf(const schema::Sandbox& sb) {
  std::vector<vm::VmSecret> out;
  for (const auto& [name, s] : sb.secrets) {
    vm::VmSecret v;
    v.name = name;
    v.source = schema::ToString(s.source);
    v.from = s.from;
    v.allow = s.allow;
    v.inject_headers = s.inject_headers;
    v.inject_basic_auth = s.inject_basic_auth;
    v.inject_query = s.inject_query;
    v.inject_body = s.inject_body;
    out.push_back(std::move(v));
  }
  return out;
}

Result<std::string> ReadSecretValues(const std::string& sandbox, const std::vector<vm::VmSecret>& secrets) {
  std::vector<secrets::SecretValue> held;
  held.reserve(secrets.size());
  std::vector<std::pair<std::string, std::string_view>> pairs;
  for (const auto& s : secrets) {
    auto v = secrets::ReadSecretSource(s.source, s.from);
    if (!v.ok()) {
      return Error(ErrorCode::kInvalidArgument, "sandbox " + sandbox + ": secret " + s.name + ": " +
                                                    v.error().message());
    }
    held.push_back(std::move(*v));
    pairs.emplace_back(s.name, held.back().view());
  }
  return secrets::EncodeValues(pairs);
}

Status RefreshSecrets(Store& store, const schema::Project& project, const std::vector<std::string>& names) {
  for (const std::string& name : names) {
    auto sb = project.sandboxes.find(name);
    if (sb == project.sandboxes.end() || sb->second.secrets.empty()) continue;
    MSB_TRY(auto rec, store.GetSandbox(project.name, name));
    if (!rec || !SupervisorAlive(*rec)) continue;
    MSB_TRY(std::string values, ReadSecretValues(name, VmSecretsOf(sb->second)));
    auto client = ControlClient::Connect(rec->control_socket);
    Status st = client.ok() ? client->UpdateSecrets(&values) : Status(client.error());
    secrets::WipeString(&values);
    if (!st.ok()) return st.error().Wrap("handing new secret values to " + name);
  }
  return OkStatus();
}

Result<SandboxRecord> StartPrepared(Store& store, const SandboxRecord& record,
                                    const schema::Sandbox& sb, const std::string& image_digest) {
  SandboxRecord updated = record;
  updated.spec_json = RecordSpecJson(sb, image_digest);
  MSB_TRY_STATUS(store.UpsertSandbox(updated));
  if (auto spec = vm::ReadSpec(record.sandbox_dir); spec.ok()) {
    spec->policy = SupervisorPolicy(sb);
    MSB_TRY_STATUS(vm::WriteSpec(*spec));
  }
  return StartSupervisor(store, updated);
}

Status UpdateInPlace(Store& store, const SandboxRecord& record, const schema::Sandbox& sb,
                     const std::string& image_digest) {
  SandboxRecord updated = record;
  updated.spec_json = RecordSpecJson(sb, image_digest);
  // The supervisor applies the new policy in place and keeps it in its spec.
  nlohmann::json policy = SupervisorPolicy(sb);
  if (SupervisorAlive(record)) {
    MSB_TRY(ControlClient client, ControlClient::Connect(record.control_socket));
    MSB_TRY_STATUS(client.UpdatePolicy(policy));
  } else if (auto spec = vm::ReadSpec(record.sandbox_dir); spec.ok()) {
    spec->policy = policy;
    MSB_TRY_STATUS(vm::WriteSpec(*spec));
  }
  return store.UpsertSandbox(updated);
}

Result<nlohmann::json> LiveStatus(const SandboxRecord& record) {
  if (record.status != SandboxStatus::kRunning && record.status != SandboxStatus::kStarting) {
    return Error(ErrorCode::kState, record.name + " is " + ToString(record.status));
  }
  MSB_TRY(ControlClient client, ControlClient::Connect(record.control_socket));
  return client.GetStatus();
}

namespace {

// The pid of the process running `msb supervisor --dir DIR` for this
// sandbox, found by its command line (the record's pid is 0 once the
// supervisor reported its end, and a recorded pid may have been reused); 0
// when there is none. Never a pid that is not that supervisor: a kill(0)
// would hit the caller's own process group.
pid_t SupervisorPid(const SandboxRecord& r) {
  auto is_ours = [&](pid_t pid) {
    auto cmdline = ReadFile("/proc/" + std::to_string(pid) + "/cmdline");
    if (!cmdline.ok()) return false;
    std::vector<std::string> argv;
    for (size_t at = 0; at < cmdline->size();) {
      size_t end = cmdline->find('\0', at);
      if (end == std::string::npos) end = cmdline->size();
      argv.push_back(cmdline->substr(at, end - at));
      at = end + 1;
    }
    for (size_t i = 1; i + 2 < argv.size(); ++i) {
      if (argv[i] == "supervisor" && argv[i + 1] == "--dir" && argv[i + 2] == r.sandbox_dir) return true;
    }
    return false;
  };
  if (r.supervisor_pid > 0 && is_ours(static_cast<pid_t>(r.supervisor_pid))) {
    return static_cast<pid_t>(r.supervisor_pid);
  }
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    pid_t pid = static_cast<pid_t>(std::atoi(e.path().filename().c_str()));
    if (pid > 0 && is_ours(pid)) return pid;
  }
  return 0;
}

}  // namespace

Status Stop(Store& store, const SandboxRecord& r, int timeout_ms) {
  if (!SupervisorAlive(r)) {
    Observe(store, r);
    return OkStatus();
  }
  // Its exit is watched through a pidfd, opened before the request.
  UniqueFd exited;
  if (pid_t pid = SupervisorPid(r); pid > 0) exited.Reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  auto client = ControlClient::Connect(r.control_socket);
  if (client.ok()) {
    auto res = client->Stop(timeout_ms);
    if (res.ok()) {
      // The supervisor exits right after answering: wait for the process.
      if (exited) {
        pollfd p{exited.get(), POLLIN, 0};
        while (::poll(&p, 1, kSupervisorExitMs) < 0 && errno == EINTR) {
        }
      } else {
        for (int i = 0; i < kSupervisorExitMs / 25 && SupervisorAlive(r); ++i) {
          pollfd none{};
          ::poll(&none, 0, 25);
        }
      }
      if (!SupervisorAlive(r)) return OkStatus();
    }
  }
  // No answer: end the supervisor; its QEMU dies with it (PDEATHSIG).
  if (pid_t pid = SupervisorPid(r); pid > 0) ::kill(pid, SIGKILL);
  SandboxStatusUpdate u;
  u.status = SandboxStatus::kStopped;
  u.reason = "killed: the supervisor did not answer the stop request";
  u.supervisor_pid = 0;
  return store.UpdateSandboxStatus(r.project, r.name, u);
}

Status Remove(Store& store, const SandboxRecord& r) {
  MSB_TRY_STATUS(Stop(store, r));
  // A supervisor that ended normally removed its control group; one that was
  // killed left it (vm/cgroup.h).
  if (!r.sandbox_dir.empty()) {
    auto st = vm::RemoveCgroup(vm::DetectCgroupHost(), vm::SandboxCgroupName(r.project, r.name, r.sandbox_dir),
                               2000);
    if (!st.ok()) {
      MSB_LOG(kWarn, "launch") << st.error().message();
    }
  }
  std::error_code ec;
  if (!r.sandbox_dir.empty()) std::filesystem::remove_all(r.sandbox_dir, ec);
  return store.DeleteSandbox(r.project, r.name);
}

Result<SandboxRecord> FindSandbox(Store& store, const std::string& ref,
                                  const std::string& current_project, const std::string& command) {
  MSB_TRY(auto all, store.ListAllSandboxes());
  MSB_TRY(SandboxRecord r, ResolveSandboxRef(all, ref, current_project, command));
  return Observe(store, r);
}

}  // namespace msb::orchestrator
