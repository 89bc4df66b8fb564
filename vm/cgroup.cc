// Per-sandbox control groups (cgroup.h): finding the hierarchies in
// mountinfo, writing limits, joining and leaving. Nothing here decides
// whether a sandbox gets a group; the supervisor does (cli/cmd_supervisor.cc).
#include "vm/cgroup.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <sstream>

#include "common/fd.h"
#include "common/io.h"
#include "common/sha256.h"
#include "vm/spec.h"

namespace msb::vm {
namespace {

constexpr const char* kControllers[] = {"memory", "pids", "cpu"};

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string Unescape(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() &&
        std::all_of(s.begin() + i + 1, s.begin() + i + 4, [](char c) { return c >= '0' && c <= '7'; })) {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::vector<std::string> Split(std::string_view s, char sep) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find(sep, start);
    if (end == std::string_view::npos) end = s.size();
    if (end > start) out.emplace_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

Status WriteValue(const std::string& path, std::string_view value) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!fd) return Error::FromErrno("cgroup: opening " + path + " to write " + std::string(value));
  if (auto st = WriteAll(fd.get(), value); !st.ok()) {
    return Error::FromErrno("cgroup: writing " + std::string(value) + " to " + path);
  }
  return OkStatus();
}

bool Exists(const std::string& path) { return ::access(path.c_str(), F_OK) == 0; }

// The distinct directories of group `name`, each with the controllers whose
// limits are written there.
struct GroupDir {
  std::string mount, dir;
  bool v2 = false;
  std::vector<std::string> controllers;
};

std::vector<GroupDir> GroupDirs(const CgroupHost& host, const std::string& name) {
  std::vector<GroupDir> out;
  for (const auto& c : host.controllers) {
    auto it = std::find_if(out.begin(), out.end(), [&](const GroupDir& d) { return d.mount == c.mount; });
    if (it == out.end()) {
      out.push_back(GroupDir{c.mount, c.mount + "/" + name, c.v2, {}});
      it = out.end() - 1;
    }
    it->controllers.push_back(c.name);
  }
  return out;
}

Status WriteLimits(const GroupDir& d, const CgroupLimits& limits) {
  for (const auto& c : d.controllers) {
    if (c == "memory") {
      const std::string bytes = std::to_string(limits.memory_bytes);
      if (d.v2) {
        MSB_TRY_STATUS(WriteValue(d.dir + "/memory.max", bytes));
        if (Exists(d.dir + "/memory.swap.max")) MSB_TRY_STATUS(WriteValue(d.dir + "/memory.swap.max", "0"));
      } else {
        // memsw must stay at least the memory limit at every step: lift it,
        // set the limit, then hold memory plus swap to the same total.
        const std::string memsw = d.dir + "/memory.memsw.limit_in_bytes";
        const bool has_memsw = Exists(memsw);
        if (has_memsw) MSB_TRY_STATUS(WriteValue(memsw, "-1"));
        MSB_TRY_STATUS(WriteValue(d.dir + "/memory.limit_in_bytes", bytes));
        if (has_memsw) MSB_TRY_STATUS(WriteValue(memsw, bytes));
      }
    } else if (c == "pids") {
      MSB_TRY_STATUS(WriteValue(d.dir + "/pids.max", std::to_string(limits.pids)));
    } else if (c == "cpu") {
      const std::string quota = std::to_string(static_cast<uint64_t>(limits.cpus) * kCpuPeriodUs);
      const std::string period = std::to_string(kCpuPeriodUs);
      if (d.v2) {
        MSB_TRY_STATUS(WriteValue(d.dir + "/cpu.max", quota + " " + period));
      } else {
        MSB_TRY_STATUS(WriteValue(d.dir + "/cpu.cfs_period_us", period));
        MSB_TRY_STATUS(WriteValue(d.dir + "/cpu.cfs_quota_us", quota));
      }
    }
  }
  return OkStatus();
}

// mkdir that accepts an existing directory; reports whether it made one.
Result<bool> MakeDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) == 0) return true;
  if (errno == EEXIST) return false;
  return Error::FromErrno("cgroup: creating " + path);
}

std::string Parent(const std::string& path) { return path.substr(0, path.rfind('/')); }

}  // namespace

CgroupLimits SandboxCgroupLimits(const VmSpec& spec) {
  CgroupLimits l;
  l.memory_bytes = spec.memory_bytes + kVmmMemoryOverhead;
  l.cpus = std::max(1, spec.cpus);
  return l;
}

std::string SandboxCgroupName(const std::string& project, const std::string& name,
                              const std::string& dir) {
  return "msb/" + project + "-" + name + "-" + Sha256Hex(dir).substr(0, 8);
}

std::vector<std::string> CgroupHost::Dirs(const std::string& name) const {
  std::vector<std::string> out;
  for (const auto& d : GroupDirs(*this, name)) out.push_back(d.dir);
  return out;
}

CgroupHost ParseCgroupHost(std::string_view mountinfo) {
  // controller -> (mount, v2), first mount wins.
  std::vector<CgroupHost::Controller> v1, v2;
  std::istringstream in{std::string(mountinfo)};
  std::string line;
  while (std::getline(in, line)) {
    auto fields = Split(line, ' ');
    auto dash = std::find(fields.begin(), fields.end(), "-");
    if (fields.size() < 5 || dash == fields.end() || fields.end() - dash < 4) continue;
    const std::string mount = Unescape(fields[4]);
    const std::string& fstype = *(dash + 1);
    const std::string& super = *(dash + 3);
    if (fstype == "cgroup2") {
      auto text = ReadFile(mount + "/cgroup.controllers");
      if (!text.ok()) continue;
      for (const auto& name : Split(std::string_view(*text).substr(0, text->find('\n')), ' ')) {
        v2.push_back({name, mount, true});
      }
    } else if (fstype == "cgroup") {
      for (const auto& opt : Split(super, ',')) v1.push_back({opt, mount, false});
    }
  }
  CgroupHost host;
  for (const char* want : kControllers) {
    auto pick = [&](const std::vector<CgroupHost::Controller>& from) -> const CgroupHost::Controller* {
      for (const auto& c : from) {
        if (c.name == want) return &c;
      }
      return nullptr;
    };
    const CgroupHost::Controller* c = pick(v2);
    if (c == nullptr) c = pick(v1);
    if (c == nullptr) {
      host.missing.push_back(std::string(want) + " (no cgroup v1 hierarchy or v2 mount has it)");
    } else if (::access(c->mount.c_str(), W_OK) != 0) {
      host.missing.push_back(std::string(want) + " (" + c->mount + ": " + std::strerror(errno) + ")");
    } else {
      host.controllers.push_back(*c);
    }
  }
  return host;
}

CgroupHost DetectCgroupHost() {
  auto text = ReadFile("/proc/self/mountinfo");
  if (!text.ok()) {
    CgroupHost host;
    for (const char* c : kControllers) host.missing.push_back(std::string(c) + " (cannot read /proc/self/mountinfo)");
    return host;
  }
  return ParseCgroupHost(*text);
}

std::string CgroupNotice(const CgroupHost& host, bool is_root) {
  if (!is_root) {
    return "sandboxes run without host cgroup limits (memory, pids, cpu): creating cgroups needs "
           "msb to run as root";
  }
  if (host.missing.empty()) return {};
  std::string list;
  for (const auto& m : host.missing) list += (list.empty() ? "" : ", ") + m;
  return "sandboxes run without these host cgroup limits: " + list +
         ". Mount the cgroup v1 controller or enable it in cgroup v2 to have them.";
}

Status JoinCgroup(const CgroupHost& host, const std::string& name, const CgroupLimits& limits,
                  pid_t pid) {
  std::vector<std::string> created, joined;  // group directories; mounts
  auto undo = [&](Error e) -> Status {
    for (const auto& mount : joined) (void)WriteValue(mount + "/cgroup.procs", std::to_string(pid));
    for (auto it = created.rbegin(); it != created.rend(); ++it) ::rmdir(it->c_str());
    return e;
  };
  for (const auto& d : GroupDirs(host, name)) {
    const std::string msb_dir = Parent(d.dir);
    auto made_msb = MakeDir(msb_dir);
    if (!made_msb.ok()) return undo(made_msb.error());
    if (d.v2) {
      // Controllers reach a v2 group only through every ancestor's subtree_control.
      std::string enable;
      for (const auto& c : d.controllers) enable += (enable.empty() ? "+" : " +") + c;
      for (const auto& at : {d.mount, msb_dir}) {
        if (auto st = WriteValue(at + "/cgroup.subtree_control", enable); !st.ok()) return undo(st.error());
      }
    }
    auto made = MakeDir(d.dir);
    if (!made.ok()) return undo(made.error());
    if (*made) created.push_back(d.dir);
    if (auto st = WriteLimits(d, limits); !st.ok()) return undo(st.error());
    if (auto st = WriteValue(d.dir + "/cgroup.procs", std::to_string(pid)); !st.ok()) {
      return undo(st.error());
    }
    joined.push_back(d.mount);
  }
  return OkStatus();
}

Status LeaveCgroup(const CgroupHost& host, const std::string& name, pid_t pid) {
  Status first = OkStatus();
  for (const auto& d : GroupDirs(host, name)) {
    auto st = WriteValue(d.mount + "/cgroup.procs", std::to_string(pid));
    if (!st.ok() && first.ok()) first = st;
  }
  auto removed = RemoveCgroup(host, name);
  return first.ok() ? removed : first;
}

Status RemoveCgroup(const CgroupHost& host, const std::string& name, int wait_ms) {
  for (const auto& dir : host.Dirs(name)) {
    // Processes leave a group as they exit; poll its member list until it is
    // empty or the wait is over.
    for (int waited = 0; waited < wait_ms; waited += 20) {
      auto procs = ReadFile(dir + "/cgroup.procs");
      if (!procs.ok() || procs->empty()) break;
      pollfd none{};
      ::poll(&none, 0, 20);
    }
    if (::rmdir(dir.c_str()) != 0 && errno != ENOENT) {
      return Error::FromErrno("cgroup: removing " + dir +
                              (errno == EBUSY ? " (processes of the sandbox are still in it)" : ""));
    }
  }
  return OkStatus();
}

}  // namespace msb::vm
