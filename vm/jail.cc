// The jail of QEMU and virtiofsd (jail.h). The host side is prepared in the
// parent; everything that runs in the child between clone and exec makes
// system calls only, on strings built in the parent beforehand.
#include "vm/jail.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/audit.h>
#include <linux/capability.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <set>

#include "common/fd.h"
#include "common/fnv1a.h"
#include "vm/builder_vm.h"
#include "vm/devices.h"
#include "vm/spec.h"

#ifndef __NR_fchmodat2
#define __NR_fchmodat2 452
#endif

namespace msb::vm {
namespace {

// In the child only: "msb: jail set-up: <what> <path>: <errno text>" on fd 2;
// returns err. No allocation.
int ChildFail(const char* what, const char* path, int err) {
  const char* text = strerrordesc_np(err);
  for (const char* part :
       {"msb: jail set-up: ", what, " ", path, ": ", text != nullptr ? text : "error", "\n"}) {
    ssize_t unused = ::write(2, part, std::strlen(part));
    (void)unused;
  }
  return err;
}

// In the child only: writes `text` to the file at `path` in one write(2), as
// the id map files of /proc require.
int WriteFile(const char* path, const std::string& text) {
  UniqueFd fd(::open(path, O_WRONLY | O_CLOEXEC));
  if (!fd) return ChildFail("opening", path, errno);
  ssize_t n = ::write(fd.get(), text.data(), text.size());
  int err = n == static_cast<ssize_t>(text.size()) ? 0 : (n < 0 ? errno : EIO);
  return err != 0 ? ChildFail("writing", path, err) : 0;
}

// In the child only, in a user namespace it just entered: denies setgroups
// and writes its uid and gid maps.
int WriteIdMaps(const std::string& uid_map, const std::string& gid_map) {
  if (int e = WriteFile("/proc/self/setgroups", "deny")) return e;
  if (int e = WriteFile("/proc/self/uid_map", uid_map)) return e;
  return WriteFile("/proc/self/gid_map", gid_map);
}

// In the child only: the mount flags a bind of `path` already carries that a
// user namespace may not clear (they are locked), as MS_* flags.
unsigned long LockedFlags(const char* path) {
  struct statvfs sv;
  if (::statvfs(path, &sv) != 0) return 0;
  unsigned long f = 0;
  if (sv.f_flag & ST_NOSUID) f |= MS_NOSUID;
  if (sv.f_flag & ST_NODEV) f |= MS_NODEV;
  if (sv.f_flag & ST_NOEXEC) f |= MS_NOEXEC;
  if (sv.f_flag & ST_NOATIME) f |= MS_NOATIME;
  if (sv.f_flag & ST_NODIRATIME) f |= MS_NODIRATIME;
  if (sv.f_flag & ST_RELATIME) f |= MS_RELATIME;
  return f;
}

// Everything the child does, decided in the parent.
struct VmmPlan {
  struct Bind {
    std::string source;  // host path
    std::string target;  // root + host path
    bool directory = false;
    unsigned long flags = 0;  // MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC
  };
  struct Link {
    std::string target;  // what the link says
    std::string path;    // root + host path
  };
  std::string root;
  std::string proc;
  std::vector<std::string> dirs;  // parents first
  std::vector<Link> links;
  std::vector<Bind> binds;
  bool user_ns = false;
  uid_t uid = 0;
  gid_t gid = 0;
  std::string uid_map, gid_map;
};

// In the child only: mounts the jail, pivots into it and drops privilege.
int EnterVmmJail(const VmmPlan& p) {
  // msb's umask (077) would leave the jail's directories closed to its id.
  ::umask(022);
  if (p.user_ns) {
    if (int e = WriteIdMaps(p.uid_map, p.gid_map)) return e;
  }
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
    return ChildFail("making private", "/", errno);
  if (::mount("tmpfs", p.root.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=1m") != 0)
    return ChildFail("mounting a tmpfs on", p.root.c_str(), errno);
  for (const std::string& d : p.dirs) {
    if (::mkdir(d.c_str(), 0755) != 0 && errno != EEXIST) return ChildFail("creating", d.c_str(), errno);
  }
  for (const VmmPlan::Link& l : p.links) {
    if (::symlink(l.target.c_str(), l.path.c_str()) != 0) return ChildFail("linking", l.path.c_str(), errno);
  }
  for (const VmmPlan::Bind& b : p.binds) {
    const char* t = b.target.c_str();
    if (b.directory) {
      if (::mkdir(t, 0755) != 0 && errno != EEXIST) return ChildFail("creating", t, errno);
    } else {
      UniqueFd fd(::open(t, O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
      if (!fd) return ChildFail("creating", t, errno);
    }
    if (::mount(b.source.c_str(), t, nullptr, MS_BIND | MS_REC, nullptr) != 0)
      return ChildFail("binding", b.source.c_str(), errno);
    unsigned long flags = MS_BIND | MS_REMOUNT | b.flags | LockedFlags(t);
    if (::mount(nullptr, t, nullptr, flags, nullptr) != 0) return ChildFail("restricting", t, errno);
  }
  if (::mkdir(p.proc.c_str(), 0555) != 0) return ChildFail("creating", p.proc.c_str(), errno);
  if (::mount("proc", p.proc.c_str(), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0)
    return ChildFail("mounting", p.proc.c_str(), errno);
  if (::chdir(p.root.c_str()) != 0) return ChildFail("entering", p.root.c_str(), errno);
  if (::syscall(SYS_pivot_root, ".", ".") != 0) return ChildFail("pivot_root into", p.root.c_str(), errno);
  if (::umount2(".", MNT_DETACH) != 0) return ChildFail("detaching the host root from", p.root.c_str(), errno);
  if (::chdir("/") != 0) return ChildFail("entering", "/", errno);
  if (::mount(nullptr, "/", nullptr, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, nullptr) != 0)
    return ChildFail("remounting read-only", "/", errno);
  for (int cap = 0; cap <= 63; ++cap) {
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL)
      return ChildFail("dropping a capability from", "the bounding set", errno);
  }
  if (!p.user_ns) {
    if (::setgroups(0, nullptr) != 0) return ChildFail("clearing", "supplementary groups", errno);
    if (::setresgid(p.gid, p.gid, p.gid) != 0) return ChildFail("changing to the jail's", "gid", errno);
    if (::setresuid(p.uid, p.uid, p.uid) != 0) return ChildFail("changing to the jail's", "uid", errno);
  }
  __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2] = {};
  if (::syscall(SYS_capset, &hdr, data) != 0) return ChildFail("clearing", "capabilities", errno);
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
    return ChildFail("clearing", "ambient capabilities", errno);
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return ChildFail("setting", "no_new_privs", errno);
  // A change of credentials clears the death signal.
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) return ChildFail("setting", "the death signal", errno);
  return 0;
}

// Adds the parents of `path` (inside root) to plan->dirs, outermost first.
void AddParents(const std::string& path, std::set<std::string>* seen, VmmPlan* plan) {
  for (size_t slash = path.find('/', 1); slash != std::string::npos; slash = path.find('/', slash + 1)) {
    std::string dir = plan->root + path.substr(0, slash);
    if (seen->insert(dir).second) plan->dirs.push_back(dir);
  }
}

std::function<int()> Chain(std::function<int()> first, std::function<int()> then) {
  if (!first) return then;
  return [first = std::move(first), then = std::move(then)]() -> int {
    if (int e = first()) return e;
    return then();
  };
}

bool IsUnder(const std::string& path, const char* dir) {
  size_t n = std::strlen(dir);
  return path.compare(0, n, dir) == 0 && (path.size() == n || path[n] == '/');
}

}  // namespace

uid_t JailIdFor(const std::string& root) { return 0x6d730000u + (Fnv1a32(root) & 0xffffu); }

VmmJail SandboxJail(const VmSpec& s) {
  VmmJail j;
  j.root = s.dir + "/jail";
  j.kvm = s.accel == "kvm";
  j.paths.push_back({s.kernel, false});
  if (!s.initramfs.empty()) j.paths.push_back({s.initramfs, false});
  j.paths.push_back({s.base_disk, false});
  for (const std::string& layer : s.lower_disks) j.paths.push_back({layer, false});
  if (!s.upper_disk.empty()) j.paths.push_back({s.upper_disk, true});
  for (const VmDisk& v : s.volumes) j.paths.push_back({v.path, !v.read_only});
  for (size_t i = 0; i < s.shares.size(); ++i) j.paths.push_back({ShareSocket(s.dir, i), true});
  j.paths.push_back({s.ConsoleSocket(), true});
  j.paths.push_back({s.QmpSocket(), true});
  j.paths.push_back({s.AgentSocket(), true});
  if (s.network) j.paths.push_back({s.NetSocket(), true});
  return j;
}

VmmJail BuilderJail(const BuilderVmOptions& o, const BuilderVmBoot& boot, const std::string& dir, bool qmp) {
  VmmJail j;
  j.root = dir + "/jail";
  j.kvm = o.accel == "kvm";
  j.paths.push_back({o.kernel, false});
  if (!o.initramfs.empty()) j.paths.push_back({o.initramfs, false});
  for (const VmDisk& d : boot.disks) j.paths.push_back({d.path, !d.read_only});
  j.paths.push_back({dir + "/console.log", true});
  j.paths.push_back({dir + "/agent.sock", true});
  if (qmp) j.paths.push_back({dir + "/qmp.sock", true});
  return j;
}

Status ConfineVmm(const VmmJail& jail, SpawnOptions* opts) {
  auto plan = std::make_shared<VmmPlan>();
  plan->root = jail.root;
  plan->proc = jail.root + "/proc";
  plan->user_ns = ::geteuid() != 0;
  if (plan->user_ns) {
    plan->uid = ::geteuid();
    plan->gid = ::getegid();
    plan->uid_map = std::to_string(plan->uid) + " " + std::to_string(plan->uid) + " 1\n";
    plan->gid_map = std::to_string(plan->gid) + " " + std::to_string(plan->gid) + " 1\n";
  } else {
    plan->uid = JailIdFor(jail.root);
    plan->gid = plan->uid;
  }
  if (::mkdir(jail.root.c_str(), 0700) != 0 && errno != EEXIST)
    return Error::FromErrno("cannot create QEMU's jail directory " + jail.root +
                            " (its parent must exist and be writable by this user)");

  std::set<std::string> seen;
  // The system: libraries and programs read-only, as the host lays them out
  // (on a merged /usr, /lib and friends are symbolic links into it).
  for (const char* sys : {"/usr", "/lib", "/lib64", "/lib32", "/libx32", "/bin", "/sbin"}) {
    struct stat st;
    if (::lstat(sys, &st) != 0) continue;
    if (S_ISLNK(st.st_mode)) {
      char target[4096];
      ssize_t n = ::readlink(sys, target, sizeof target - 1);
      if (n <= 0) continue;
      plan->links.push_back({std::string(target, static_cast<size_t>(n)), plan->root + sys});
    } else if (S_ISDIR(st.st_mode)) {
      plan->binds.push_back({sys, plan->root + sys, true, MS_RDONLY | MS_NOSUID | MS_NODEV});
    }
  }
  AddParents("/etc/ld.so.cache", &seen, plan.get());
  if (::access("/etc/ld.so.cache", R_OK) == 0)
    plan->binds.push_back({"/etc/ld.so.cache", plan->root + "/etc/ld.so.cache", false,
                           MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC});
  AddParents("/dev/null", &seen, plan.get());
  std::vector<const char*> devices = {"/dev/null", "/dev/zero", "/dev/random", "/dev/urandom"};
  if (jail.kvm) devices.push_back("/dev/kvm");
  for (const char* dev : devices) {
    plan->binds.push_back({dev, plan->root + dev, false, MS_NOSUID | MS_NOEXEC});
  }

  std::vector<JailPath> paths = jail.paths;
  // A VMM outside /usr (MSB_QEMU) comes along read-only.
  if (!opts->argv.empty() && !IsUnder(opts->argv[0], "/usr")) paths.push_back({opts->argv[0], false});
  for (const JailPath& jp : paths) {
    if (jp.path.empty() || jp.path[0] != '/')
      return Error(ErrorCode::kInvalidArgument,
                   "'" + jp.path + "' is not an absolute path: QEMU's jail binds every file QEMU is given "
                   "at its host path (MSB_QEMU, when set, must be absolute too)");
    struct stat st;
    if (::stat(jp.path.c_str(), &st) != 0) {
      if (errno != ENOENT || !jp.writable)
        return Error::FromErrno("cannot bind " + jp.path +
                                " into QEMU's jail (QEMU is given it, so it must exist)");
      // A log QEMU creates: it exists before QEMU starts so it can be bound.
      UniqueFd fd(::open(jp.path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600));
      if (!fd)
        return Error::FromErrno("cannot create " + jp.path + ", which QEMU writes, to bind it into its jail");
      fd.Reset();
      if (::stat(jp.path.c_str(), &st) != 0) return Error::FromErrno("cannot stat " + jp.path + " after creating it");
    }
    if (S_ISDIR(st.st_mode))
      return Error(ErrorCode::kInvalidArgument,
                   "QEMU's jail binds files only, and " + jp.path + " is a directory: give QEMU a file at that path");
    if (!plan->user_ns) {
      if (jp.writable) {
        if (::lchown(jp.path.c_str(), plan->uid, plan->gid) != 0)
          return Error::FromErrno("cannot give " + jp.path + " to QEMU's jail uid " + std::to_string(plan->uid));
      } else if ((st.st_mode & S_IROTH) == 0 || (S_ISREG(st.st_mode) && opts->argv[0] == jp.path &&
                                                 (st.st_mode & S_IXOTH) == 0)) {
        // Readable (and the VMM itself executable) by the jail's user: the
        // directories above keep everyone else out ($MSB_HOME is 0700).
        mode_t mode = (st.st_mode & 07777) | S_IROTH | (opts->argv[0] == jp.path ? S_IXOTH : 0);
        if (::chmod(jp.path.c_str(), mode) != 0)
          return Error::FromErrno("cannot make " + jp.path + " readable by QEMU's jail uid " +
                                  std::to_string(plan->uid));
      }
    }
    AddParents(jp.path, &seen, plan.get());
    unsigned long flags = MS_NOSUID | MS_NODEV | (jp.writable ? 0 : MS_RDONLY);
    if (opts->argv[0] != jp.path) flags |= MS_NOEXEC;
    plan->binds.push_back({jp.path, plan->root + jp.path, false, flags});
  }

  opts->clone_flags = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET |
                      CLONE_NEWCGROUP | (plan->user_ns ? CLONE_NEWUSER : 0);
  opts->before_exec = Chain(std::move(opts->before_exec), [plan]() { return EnterVmmJail(*plan); });
  return OkStatus();
}

namespace {

struct FileServerPlan {
  std::string source;
  bool read_only = false;
  bool root = false;  // msb runs as root: become the owner first
  uid_t owner_uid = 0;
  gid_t owner_gid = 0;
  std::string uid_map, gid_map;
  std::vector<sock_filter> filter;
};

// In the child only: the private view of the share, the owner's identity, the
// user namespace and the filter.
int EnterFileServerJail(const FileServerPlan& p) {
  ::umask(022);
  const char* dst = kFileServerSource;
  if (!p.root) {
    // Not root: the user namespace comes first, to be allowed to mount.
    if (::unshare(CLONE_NEWUSER) != 0) return ChildFail("unshare(CLONE_NEWUSER) for", p.source.c_str(), errno);
    if (int e = WriteIdMaps(p.uid_map, p.gid_map)) return e;
  }
  // Its own IPC and host name too: virtiofsd itself adds the PID and network namespaces.
  if (::unshare(CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS) != 0)
    return ChildFail("unshare(CLONE_NEWNS|CLONE_NEWIPC|CLONE_NEWUTS) for", p.source.c_str(), errno);
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
    return ChildFail("making / private before sharing", p.source.c_str(), errno);
  if (::mount("tmpfs", "/mnt", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=64k") != 0)
    return ChildFail("mounting a tmpfs on", "/mnt", errno);
  if (::mkdir(dst, 0755) != 0) return ChildFail("creating", dst, errno);
  if (::mount(p.source.c_str(), dst, nullptr, MS_BIND | MS_REC, nullptr) != 0)
    return ChildFail("bind-mounting", p.source.c_str(), errno);
  if (p.read_only) {
    mount_attr attr{};
    attr.attr_set = MOUNT_ATTR_RDONLY;
    if (::mount_setattr(AT_FDCWD, dst, AT_RECURSIVE, &attr, sizeof attr) != 0) {
      if (errno != ENOSYS) return ChildFail("making read-only", p.source.c_str(), errno);
      // No mount_setattr: a non-recursive bind (nested mounts stay hidden)
      // made read-only with a remount.
      if (::umount2(dst, MNT_DETACH) != 0) return ChildFail("unmounting the bind of", p.source.c_str(), errno);
      if (::mount(p.source.c_str(), dst, nullptr, MS_BIND, nullptr) != 0)
        return ChildFail("bind-mounting", p.source.c_str(), errno);
      if (::mount(nullptr, dst, nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | LockedFlags(dst), nullptr) != 0)
        return ChildFail("remounting read-only", p.source.c_str(), errno);
    }
  }
  if (p.root) {
    if (::setgroups(0, nullptr) != 0) return ChildFail("clearing supplementary groups for", p.source.c_str(), errno);
    if (::setresgid(p.owner_gid, p.owner_gid, p.owner_gid) != 0)
      return ChildFail("taking the group of the owner of", p.source.c_str(), errno);
    if (::setresuid(p.owner_uid, p.owner_uid, p.owner_uid) != 0)
      return ChildFail("taking the identity of the owner of", p.source.c_str(), errno);
    // A process that changed its uid may not write its own id maps unless
    // it is dumpable; it stops being dumpable again below.
    if (::prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) != 0) return ChildFail("setting dumpable for", p.source.c_str(), errno);
    if (::unshare(CLONE_NEWUSER) != 0) return ChildFail("unshare(CLONE_NEWUSER) for", p.source.c_str(), errno);
    if (int e = WriteIdMaps(p.uid_map, p.gid_map)) return e;
    if (::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0) return ChildFail("clearing dumpable for", p.source.c_str(), errno);
  }
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) != 0) return ChildFail("setting the death signal for", p.source.c_str(), errno);
  if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return ChildFail("setting no_new_privs for", p.source.c_str(), errno);
  sock_fprog prog{static_cast<unsigned short>(p.filter.size()), const_cast<sock_filter*>(p.filter.data())};
  if (::prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0) != 0)
    return ChildFail("installing the seccomp filter for", p.source.c_str(), errno);
  return 0;
}

// The filter, written as blocks that each end in a return.
class FilterWriter {
 public:
  void Insn(sock_filter f) { prog_.push_back(f); }
  void LoadNr() { Insn(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr))); }
  void LoadArg(int i) {
    Insn(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, static_cast<uint32_t>(offsetof(seccomp_data, args) + 8 * i)));
  }
  void Return(uint32_t action) { Insn(BPF_STMT(BPF_RET | BPF_K, action)); }
  // "if nr == n, run body (which ends in returns); else go on after it".
  template <typename Body>
  void ForSyscall(int n, Body body) {
    LoadNr();
    size_t jump = prog_.size();
    Insn(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(n), 0, 0));
    body();
    prog_[jump].jf = static_cast<uint8_t>(prog_.size() - jump - 1);
  }
  std::vector<sock_filter> Take() { return std::move(prog_); }

 private:
  std::vector<sock_filter> prog_;
};

constexpr uint32_t kErrno(int e) { return SECCOMP_RET_ERRNO | (static_cast<uint32_t>(e) & SECCOMP_RET_DATA); }
constexpr uint32_t kSetIdBits = S_ISUID | S_ISGID;
constexpr uint32_t kCreating = O_CREAT | __O_TMPFILE;

}  // namespace

std::vector<sock_filter> FileServerFilter() {
  FilterWriter w;
  w.Insn(BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch)));
  w.Insn(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0));
  w.Return(kErrno(EPERM));
  w.LoadNr();
  w.Insn(BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0x40000000u /* __X32_SYSCALL_BIT */, 0, 1));
  w.Return(kErrno(EPERM));
  // A mode with a set-id bit: EPERM.
  for (auto [nr, mode_arg] : {std::pair{__NR_chmod, 1}, {__NR_fchmod, 1}, {__NR_fchmodat, 2},
                              {__NR_fchmodat2, 2}, {__NR_creat, 1}}) {
    w.ForSyscall(nr, [&w, mode_arg = mode_arg] {
      w.LoadArg(mode_arg);
      w.Insn(BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, kSetIdBits, 0, 1));
      w.Return(kErrno(EPERM));
      w.Return(SECCOMP_RET_ALLOW);
    });
  }
  // Creating a file with a set-id mode: EPERM.
  for (auto [nr, flags_arg, mode_arg] : {std::tuple{__NR_open, 1, 2}, {__NR_openat, 2, 3}}) {
    w.ForSyscall(nr, [&w, flags_arg = flags_arg, mode_arg = mode_arg] {
      w.LoadArg(flags_arg);
      w.Insn(BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, kCreating, 0, 3));
      w.LoadArg(mode_arg);
      w.Insn(BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, kSetIdBits, 0, 1));
      w.Return(kErrno(EPERM));
      w.Return(SECCOMP_RET_ALLOW);
    });
  }
  // Device nodes, or any node with a set-id bit: EPERM.
  for (auto [nr, mode_arg] : {std::pair{__NR_mknod, 1}, {__NR_mknodat, 2}}) {
    w.ForSyscall(nr, [&w, mode_arg = mode_arg] {
      w.LoadArg(mode_arg);
      w.Insn(BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, kSetIdBits, 4, 0));
      w.Insn(BPF_STMT(BPF_ALU | BPF_AND | BPF_K, S_IFMT));
      w.Insn(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, S_IFCHR, 2, 0));
      w.Insn(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, S_IFBLK, 1, 0));
      w.Return(SECCOMP_RET_ALLOW);
      w.Return(kErrno(EPERM));
    });
  }
  w.ForSyscall(__NR_openat2, [&w] { w.Return(kErrno(ENOSYS)); });
  // The guest's ids are never taken on: virtiofsd stays the share's owner.
  for (int nr : {__NR_setuid, __NR_setgid, __NR_setreuid, __NR_setregid, __NR_setresuid,
                 __NR_setresgid, __NR_setfsuid, __NR_setfsgid, __NR_setgroups}) {
    w.ForSyscall(nr, [&w] { w.Return(kErrno(0)); });
  }
  w.Return(SECCOMP_RET_ALLOW);
  return w.Take();
}

Status ConfineFileServer(const std::string& source, bool read_only, SpawnOptions* opts) {
  auto plan = std::make_shared<FileServerPlan>();
  plan->source = source;
  plan->read_only = read_only;
  plan->root = ::geteuid() == 0;
  struct stat st;
  if (::stat(source.c_str(), &st) != 0) return Error::FromErrno("cannot find the owner of " + source);
  // Root serves the share as its owner; anyone else as themselves.
  plan->owner_uid = plan->root ? st.st_uid : ::geteuid();
  plan->owner_gid = plan->root ? st.st_gid : ::getegid();
  plan->uid_map = "0 " + std::to_string(plan->owner_uid) + " 1\n";
  plan->gid_map = "0 " + std::to_string(plan->owner_gid) + " 1\n";
  plan->filter = FileServerFilter();
  rlimit nofile;
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    const rlimit raised = nofile;
    opts->before_exec = Chain(std::move(opts->before_exec), [raised]() {
      ::setrlimit(RLIMIT_NOFILE, &raised);
      return 0;
    });
  }
  opts->before_exec = Chain(std::move(opts->before_exec), [plan]() { return EnterFileServerJail(*plan); });
  return OkStatus();
}

}  // namespace msb::vm
