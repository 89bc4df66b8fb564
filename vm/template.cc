// Booted templates (template.h): the key, the build (one jailed QEMU driven
// with poll(2) and a blocking QMP exchange), the checks before a restore.
// The restore itself is the supervisor's (vm/supervisor.cc).
#include "vm/template.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>

#include "agent/frame.h"
#include "agent/messages.h"
#include "agent/protocol.h"
#include "common/child.h"
#include "common/fd.h"
#include "common/hex.h"
#include "common/io.h"
#include "common/sha256.h"
#include "common/unix_socket.h"
#include "vm/guest_text.h"
#include "vm/jail.h"
#include "vm/qmp_sync.h"

namespace msb::vm {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

// The stream of a restorable template, next to its meta.json.
constexpr char kStateName[] = "state";
constexpr char kMetaName[] = "meta.json";
// The console of a template build is kept (in the build directory, for the
// error message) up to this much.
constexpr size_t kMaxConsole = 256 * 1024;
// After the save: QEMU's `quit` must end it within this.
constexpr auto kQuitGrace = std::chrono::seconds(5);
// Bytes/s for the save: QEMU 7.2 throttles a migration to 32 MiB/s by default.
constexpr uint64_t kSaveBandwidth = 8ull << 30;

std::string NowIso() {
  std::time_t t = std::time(nullptr);
  struct tm tm_buf;
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm_buf));
  return buf;
}

// The sandbox's machine and device layout with every path under `dir`: the
// template's own placeholders when building, fixed names when keying.
VmSpec TemplateSpec(const VmSpec& s, const std::string& dir, bool for_key) {
  VmSpec t;
  t.project = "template";
  t.name = "template";
  t.dir = dir;
  t.cpus = s.cpus;
  t.memory_bytes = s.memory_bytes;
  t.accel = s.accel;
  t.kernel = for_key ? dir + "/kernel" : s.kernel;
  t.initramfs = s.initramfs.empty() ? "" : for_key ? dir + "/initramfs" : s.initramfs;
  t.tsc_khz = s.tsc_khz;
  t.boot_timeout_ms = s.boot_timeout_ms;
  t.base_disk = dir + "/disk-base";
  for (size_t i = 0; i < s.lower_disks.size(); ++i) t.lower_disks.push_back(dir + "/disk-lower" + std::to_string(i));
  if (!s.upper_disk.empty()) t.upper_disk = dir + "/disk-upper";
  for (size_t i = 0; i < s.volumes.size(); ++i) {
    t.volumes.push_back(VmDisk{dir + "/disk-vol" + std::to_string(i), s.volumes[i].serial, s.volumes[i].read_only});
  }
  if (s.network) {
    VmNetwork n;
    n.mac = s.network->mac;
    t.network = n;
  }
  return t;
}

std::vector<std::string> PlaceholderDisks(const VmSpec& t) {
  std::vector<std::string> disks{t.base_disk};
  disks.insert(disks.end(), t.lower_disks.begin(), t.lower_disks.end());
  if (!t.upper_disk.empty()) disks.push_back(t.upper_disk);
  for (const auto& v : t.volumes) disks.push_back(v.path);
  return disks;
}

std::string KeyDir(const std::string& key) { return TemplatesDir() + "/" + key; }

// A file's identity: any write to it, or a new file in its place, changes it.
Result<json> FileIdentity(const std::string& path) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) return Error::FromErrno("stat " + path);
  auto ns = [](const timespec& t) { return static_cast<int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec; };
  return json{{"dev", static_cast<uint64_t>(st.st_dev)}, {"ino", static_cast<uint64_t>(st.st_ino)},
              {"size", static_cast<int64_t>(st.st_size)}, {"mtime_ns", ns(st.st_mtim)},
              {"ctime_ns", ns(st.st_ctim)}};
}

// One template build in `work` from `vm`'s plan: boots the VM to agentd's
// hello, then saves it into work/state. The ChildProcess kills QEMU on any
// return.
Status BuildIn(const TemplateVm& vm, int timeout_ms, const std::string& work) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (const std::string& disk : vm.placeholders) {
    UniqueFd f(::open(disk.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!f) return Error::FromErrno("creating " + disk);
  }
  // Every socket QEMU connects to listens before it starts.
  UniqueFd console_l, net_l, console_log;
  if (!vm.console_socket.empty()) {
    MSB_TRY(console_l, ListenUnix(vm.console_socket, true, 1));
    console_log.Reset(::open(vm.console_log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!console_log) return Error::FromErrno("creating " + vm.console_log);
  }
  MSB_TRY(UniqueFd qmp_l, ListenUnix(vm.qmp_socket, true, 1));
  MSB_TRY(UniqueFd agent_l, ListenUnix(vm.agent_socket, true, 1));
  if (!vm.net_socket.empty()) {
    MSB_TRY(net_l, ListenUnix(vm.net_socket, true, 1));
  }
  const std::string qemu_log_path = work + "/qemu.log";
  UniqueFd qemu_log(::open(qemu_log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!qemu_log) return Error::FromErrno("creating " + qemu_log_path);

  SpawnOptions opts;
  opts.argv = vm.argv;
  opts.stdout_fd = qemu_log.get();
  opts.stderr_fd = qemu_log.get();
  opts.parent_death_signal = SIGKILL;
  MSB_TRY_STATUS(ConfineVmm(vm.jail, &opts));
  MSB_TRY(ChildProcess child, ChildProcess::Spawn(opts));
  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, child.pid(), 0)));
  if (!pidfd) return Error::FromErrno("pidfd_open");

  auto failed = [&](const std::string& what) {
    std::string why = what + "; last console lines:\n" + GuestLogTail(vm.console_log, 10);
    if (auto q = ReadFile(qemu_log_path); q.ok() && !q->empty()) why += "\nQEMU said:\n" + GuestLogTail(qemu_log_path, 5);
    return Error(ErrorCode::kUnavailable, why);
  };

  // Until agentd's hello: accept what QEMU connects, keep the console, drop
  // network frames (the guest sends none before its boot message).
  UniqueFd console, qmp, agent, net;
  size_t console_bytes = 0;
  agent::FrameReader reader;
  bool hello = false;
  while (!hello) {
    std::vector<pollfd> fds{{pidfd.get(), POLLIN, 0},
                            {console ? console.get() : console_l.get(), POLLIN, 0},
                            {qmp ? -1 : qmp_l.get(), POLLIN, 0},  // the monitor is read after the hello
                            {agent ? agent.get() : agent_l.get(), POLLIN, 0},
                            {net ? net.get() : net_l.get(), POLLIN, 0}};
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return failed("the template's guest did not say hello within " + std::to_string(timeout_ms / 1000) + " s");
    int n = ::poll(fds.data(), fds.size(), static_cast<int>(std::min<int64_t>(left, 1000)));
    if (n < 0 && errno != EINTR) return Error::FromErrno("poll");
    if (n <= 0) continue;
    if (fds[0].revents) return failed("QEMU exited while the template booted");
    char buf[65536];
    auto accept_into = [&](const UniqueFd& listener, UniqueFd& into) {
      int fd = ::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0 && !into) into.Reset(fd);
      else if (fd >= 0) ::close(fd);
    };
    if (fds[1].revents) {
      if (!console) {
        accept_into(console_l, console);
      } else if (ssize_t r = ::read(console.get(), buf, sizeof buf); r > 0) {
        if (console_bytes < kMaxConsole) (void)WriteAll(console_log.get(), std::string_view(buf, static_cast<size_t>(r)));
        console_bytes += static_cast<size_t>(r);
      } else if (r == 0) {
        console.Reset();
        console_l.Reset();
      }
    }
    if (fds[2].revents && !qmp) accept_into(qmp_l, qmp);
    if (fds[4].revents) {
      if (!net) {
        accept_into(net_l, net);
      } else if (::read(net.get(), buf, sizeof buf) == 0) {
        net.Reset();
        net_l.Reset();
      }
    }
    if (fds[3].revents) {
      if (!agent) {
        accept_into(agent_l, agent);
        continue;
      }
      ssize_t r = ::read(agent.get(), buf, sizeof buf);
      if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (r <= 0) return failed("the template's agent port closed before agentd said hello");
      reader.Feed(std::string_view(buf, static_cast<size_t>(r)));
      for (;;) {
        auto next = reader.Next();
        if (!next.ok()) return failed("the template's guest broke the agent protocol: " + next.error().message());
        if (!next->has_value()) break;
        const agent::Frame& f = **next;
        if (f.id != agent::kChannelId || f.kind != agent::FrameKind::kHello) {
          return failed("the template's guest sent " + agent::ToString(f.kind) + " before its hello");
        }
        auto h = agent::ParseHello(f.payload);
        if (!h.ok() || h->version != agent::kProtocolVersion) {
          return failed("the template's guest agent speaks another protocol version");
        }
        hello = true;
      }
    }
  }
  if (!qmp) {
    // QEMU connects its monitor at start-up, long before the guest speaks.
    pollfd p{qmp_l.get(), POLLIN, 0};
    if (::poll(&p, 1, 1000) <= 0) return failed("QEMU did not connect its monitor");
    int fd = ::accept4(qmp_l.get(), nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) return Error::FromErrno("accepting QEMU's monitor");
    qmp.Reset(fd);
  }

  // Save the guest where it waits for its host's hello. It is not stopped
  // first: the stream then records it as running, and a restore resumes it
  // without a `cont` (QEMU keeps a saved paused state paused). Idle, it
  // dirties almost nothing while the save goes on; the save is not throttled.
  QmpSync mon(qmp.get(), deadline);
  MSB_TRY_STATUS(mon.Handshake());
  MSB_TRY_STATUS(mon.Call("migrate-set-parameters", json{{"max-bandwidth", kSaveBandwidth}}));
  const std::string state = work + "/" + kStateName;
  {
    UniqueFd out(::open(state.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!out) return Error::FromErrno("creating " + state);
    MSB_TRY_STATUS(mon.Call("getfd", json{{"fdname", "template"}}, out.get()));
  }
  MSB_TRY_STATUS(mon.Call("migrate", json{{"uri", "fd:template"}}));
  for (;;) {
    MSB_TRY(json st, mon.Call("query-migrate", nullptr));
    std::string status = st.is_object() ? st.value("status", std::string()) : "";
    if (status == "completed") break;
    if (status == "failed" || status == "cancelled") {
      return failed("QEMU could not save the template (" +
                    BoundedGuestText(st.value("error-desc", std::string("migration ") + status)) + ")");
    }
    // Status is polled: the save of an idle stopped guest takes a moment.
    pollfd p{pidfd.get(), POLLIN, 0};
    if (::poll(&p, 1, 20) > 0) return failed("QEMU exited while saving the template");
    if (Clock::now() > deadline) return failed("the template's save did not finish in time");
  }
  (void)mon.Call("quit", nullptr);
  pollfd p{pidfd.get(), POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(std::chrono::milliseconds(kQuitGrace).count())) <= 0) child.Kill(SIGKILL);
  child.Wait();
  UniqueFd sync(::open(state.c_str(), O_RDONLY | O_CLOEXEC));
  if (!sync || ::fsync(sync.get()) != 0) return Error::FromErrno("syncing " + state);
  return OkStatus();
}

}  // namespace

std::string TemplatesDir() { return MsbHome() + "/templates"; }

std::string ColdBootReason(const VmSpec& spec) {
  if (const char* b = std::getenv("MSB_BOOT"); b != nullptr && std::strcmp(b, "cold") == 0) {
    return "MSB_BOOT=cold";
  }
  if (spec.boot_mode == "cold") return "the Sandboxfile says boot: cold";
  if (!spec.shares.empty()) {
    return "its shared directories are virtio-fs devices, whose vhost-user back-end QEMU 7.2 cannot migrate";
  }
  return "";
}

// A file's identity as a key takes it: not its change time, which the jail
// touches on every start by granting read access (vm/jail.h ConfineVmm).
Result<json> KeyIdentity(const std::string& path) {
  MSB_TRY(json id, FileIdentity(path));
  id.erase("ctime_ns");
  return id;
}

Result<std::string> TemplateKeyOf(std::string_view kind,
                                  const std::vector<std::pair<std::string, std::string>>& files,
                                  const std::vector<std::string>& argv) {
  Sha256 h;
  h.Update("msb-template " + std::to_string(kTemplateFormat) + "\n");
  if (kind != kSandboxTemplate) h.Update("kind " + std::string(kind) + "\n");
  // The kernel, initramfs and QEMU by path and identity, not by content:
  // hashing them would cost every start a tenth of a second, and any change
  // to one of them changes its identity.
  for (const auto& [what, path] : files) {
    if (path.empty()) continue;
    MSB_TRY(json id, KeyIdentity(path));
    h.Update(what + " " + path + " " + id.dump() + "\n");
  }
  // The command line with its paths normalised: machine and device layout.
  for (const std::string& arg : argv) {
    h.Update(arg);
    h.Update(std::string_view("\0", 1));
  }
  return h.HexFinal().substr(0, 32);
}

Result<std::string> TemplateKey(const VmSpec& spec, const std::string& qemu) {
  return TemplateKeyOf(kSandboxTemplate, {{"kernel", spec.kernel}, {"initramfs", spec.initramfs}, {"qemu", qemu}},
                       QemuArgv(TemplateSpec(spec, "/t", true), "qemu"));
}

int RestoreTimeoutMs(int fallback_ms) {
  const char* env = std::getenv("MSB_RESTORE_TIMEOUT_MS");
  const int ms = env != nullptr ? std::atoi(env) : 0;
  return ms > 0 ? ms : fallback_ms;
}

agent::GuestStart FreshGuestStart(bool restored) {
  agent::GuestStart s;
  unsigned char entropy[64];
  ssize_t n;
  do {
    n = ::getrandom(entropy, sizeof entropy, 0);
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof entropy)) s.entropy = HexLower(entropy, sizeof entropy);
  s.time_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                  std::chrono::system_clock::now().time_since_epoch()).count();
  s.restored = restored;
  return s;
}

void RemoveTemplate(const std::string& key) {
  std::error_code ec;
  std::filesystem::remove_all(KeyDir(key), ec);
}

void RemoveTemplateTried(const TemplateChoice& tried) {
  if (tried.key.empty()) return;
  UniqueFd lock(::open((TemplatesDir() + "/" + tried.key + ".lock").c_str(), O_RDWR | O_CLOEXEC));
  if (!lock || ::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) return;
  auto id = FileIdentity(KeyDir(tried.key) + "/" + kStateName);
  if (id.ok() && id->dump() == tried.identity) RemoveTemplate(tried.key);
}

TemplateChoice PrepareTemplateFor(const std::string& key, const TemplateMeta& what, int timeout_ms,
                                  const std::function<TemplateVm(const std::string& work)>& plan, bool wait) {
  TemplateChoice c;
  const std::string root = TemplatesDir();
  if (auto s = MakeDirs(root, 0700); !s.ok()) {
    c.why_cold = s.error().message();
    return c;
  }
  // One builder per key; the others wait and then find it.
  UniqueFd lock(::open((root + "/" + key + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock || ::flock(lock.get(), LOCK_EX | (wait ? 0 : LOCK_NB)) != 0) {
    c.why_cold = errno == EWOULDBLOCK && !wait ? "template " + key + " is being built by another start"
                                               : "cannot lock template " + key + ": " + std::strerror(errno);
    return c;
  }
  const std::string dir = KeyDir(key);
  const std::string state = dir + "/" + kStateName;
  struct stat st{};
  if (::stat(dir.c_str(), &st) == 0) {
    // Checked before every use: a stream that changed on disk since it was
    // made (another file in its place, or any write to it) is never restored.
    auto meta_text = ReadFile(dir + "/" + kMetaName);
    json meta = meta_text.ok() ? json::parse(*meta_text, nullptr, false) : json();
    auto id = FileIdentity(state);
    std::string problem;
    if (!meta.is_object() || meta.value("format", 0) != kTemplateFormat) {
      problem = "its meta.json is missing or of another format";
    } else if (!id.ok()) {
      problem = id.error().message();
    } else if (!meta.contains("file") || meta["file"] != *id) {
      problem = "its state file changed since it was made";
    }
    if (problem.empty()) {
      c.key = key;
      c.state_path = state;
      c.identity = id->dump();
      return c;
    }
    RemoveTemplate(key);
    c.why_cold = "template " + key + " is corrupt (" + problem + "); removed it";
    return c;
  }
  // Build it.
  std::string work = root + "/.build-XXXXXX";
  if (::mkdtemp(work.data()) == nullptr) {
    c.why_cold = std::string("cannot make a template build directory: ") + std::strerror(errno);
    return c;
  }
  Status built = BuildIn(plan(work), timeout_ms, work);
  std::string sum;
  if (built.ok()) {
    auto s = Sha256File(work + "/" + kStateName);
    if (s.ok()) sum = *s;
    else built = s.error();
  }
  if (built.ok()) {
    struct stat sst{};
    ::stat((work + "/" + kStateName).c_str(), &sst);
    std::string ready = root + "/.ready-XXXXXX";
    if (::mkdtemp(ready.data()) == nullptr) {
      built = Error::FromErrno("making a template directory");
    } else if (::rename((work + "/" + kStateName).c_str(), (ready + "/" + kStateName).c_str()) != 0) {
      built = Error::FromErrno("moving the template's state");
    }
    auto id = built.ok() ? FileIdentity(ready + "/" + kStateName) : Result<json>(built.error());
    if (built.ok() && !id.ok()) built = id.error();
    if (built.ok()) {
      json meta{{"format", kTemplateFormat},
                {"key", key},
                {"sha256", sum},
                {"size", static_cast<uint64_t>(sst.st_size)},
                {"file", *id},
                {"created", NowIso()},
                {"kind", what.kind},
                {"cpus", what.cpus},
                {"memory_mib", what.memory_mib},
                {"accel", what.accel},
                {"kernel", what.kernel},
                {"disks", what.disks},
                {"network", what.network},
                {"files", json::array()}};
      for (const auto& [name, path] : what.files) {
        if (path.empty()) continue;
        auto fid = KeyIdentity(path);
        if (fid.ok()) meta["files"].push_back({{"name", name}, {"path", path}, {"identity", *fid}});
      }
      if (auto w = WriteFileAtomic(ready + "/" + kMetaName, meta.dump(2) + "\n", 0600); !w.ok()) {
        built = w;
      } else if (::rename(ready.c_str(), dir.c_str()) != 0) {
        built = Error::FromErrno("renaming " + ready + " to " + dir);
      }
    }
    std::error_code ec;
    std::filesystem::remove_all(ready, ec);
  }
  std::error_code ec;
  std::filesystem::remove_all(work, ec);
  if (!built.ok()) {
    c.why_cold = "building template " + key + " failed: " + built.error().message();
    return c;
  }
  c.key = key;
  c.state_path = state;
  if (auto id = FileIdentity(state); id.ok()) c.identity = id->dump();
  c.built = true;
  return c;
}

TemplateChoice PrepareTemplate(const VmSpec& spec, const std::string& qemu) {
  TemplateChoice c;
  c.why_cold = ColdBootReason(spec);
  if (!c.why_cold.empty()) return c;
  auto key = TemplateKey(spec, qemu);
  if (!key.ok()) {
    c.why_cold = "no template key: " + key.error().message();
    return c;
  }
  TemplateMeta what;
  what.kind = kSandboxTemplate;
  what.files = {{"kernel", spec.kernel}, {"initramfs", spec.initramfs}, {"qemu", qemu}};
  what.cpus = spec.cpus;
  what.memory_mib = spec.memory_bytes >> 20;
  what.accel = spec.accel;
  what.kernel = spec.kernel;
  what.disks = static_cast<int>(PlaceholderDisks(TemplateSpec(spec, "/t", true)).size());
  what.network = spec.network.has_value();
  return PrepareTemplateFor(*key, what, spec.boot_timeout_ms, [&](const std::string& work) {
    VmSpec t = TemplateSpec(spec, work, false);
    TemplateVm vm;
    vm.argv = QemuArgv(t, qemu);
    vm.jail = SandboxJail(t);
    vm.placeholders = PlaceholderDisks(t);
    vm.qmp_socket = t.QmpSocket();
    vm.agent_socket = t.AgentSocket();
    vm.console_socket = t.ConsoleSocket();
    vm.console_log = t.ConsoleLog();
    if (t.network) vm.net_socket = t.NetSocket();
    return vm;
  });
}

std::vector<TemplateInfo> ListTemplates() {
  std::vector<TemplateInfo> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(TemplatesDir(), ec)) {
    std::string name = e.path().filename().string();
    if (!e.is_directory() || name.empty() || name[0] == '.') continue;
    TemplateInfo t;
    t.key = name;
    auto text = ReadFile(e.path().string() + "/" + kMetaName);
    json m = text.ok() ? json::parse(*text, nullptr, false) : json();
    if (m.is_object() && m.value("format", 0) == kTemplateFormat) {
      t.valid = true;
      t.size = m.value("size", uint64_t{0});
      t.created = m.value("created", std::string());
      t.cpus = m.value("cpus", 0);
      t.memory_mib = m.value("memory_mib", uint64_t{0});
      t.accel = m.value("accel", std::string());
      t.kernel = m.value("kernel", std::string());
      t.kind = m.value("kind", std::string(kSandboxTemplate));
      t.disks = m.value("disks", 0);
      t.network = m.value("network", false);
      if (auto f = m.find("files"); f != m.end() && f->is_array()) {
        for (const json& file : *f) {
          if (!file.is_object() || !file.contains("path") || !file["path"].is_string()) continue;
          auto now = KeyIdentity(file["path"].get<std::string>());
          if (!now.ok() || !file.contains("identity") || file["identity"] != *now) {
            t.stale = "its " + file.value("name", std::string("file")) + " " + (now.ok() ? "changed" : "is gone");
            break;
          }
        }
      }
    }
    out.push_back(std::move(t));
  }
  std::sort(out.begin(), out.end(), [](const TemplateInfo& a, const TemplateInfo& b) { return a.key < b.key; });
  return out;
}

}  // namespace msb::vm
