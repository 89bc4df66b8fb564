// Sandbox mounts inside the new root (mounts.h). openat2 and move_mount are
// called through syscall(2): agentd's static glibc may predate their wrappers.
#include "agentd/mounts.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "agentd/guest_init.h"
#include "common/io.h"

#ifndef MOVE_MOUNT_T_EMPTY_PATH
#define MOVE_MOUNT_T_EMPTY_PATH 0x00000040
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef SYS_openat2
#define SYS_openat2 437
#endif

namespace msb::agent {
namespace {

// Where each file system is mounted before it is moved onto its target: a
// directory of the initramfs, which the image cannot touch.
constexpr const char* kStaging = "/run/msb/mount";

int OpenAt2(int dirfd, const std::string& path, uint64_t flags, uint64_t resolve) {
  open_how how{};
  how.flags = flags;
  how.resolve = resolve;
  return static_cast<int>(::syscall(SYS_openat2, dirfd, path.c_str(), &how, sizeof how));
}

// The components of an absolute path, empty ones skipped.
std::vector<std::string> Components(const std::string& path) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    if (end > start) out.push_back(path.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

// The target as an O_PATH directory fd below root_fd.
Result<UniqueFd> Resolve(int root_fd, const std::string& rel) {
  return OpenInRoot(root_fd, "/" + rel, O_PATH | O_DIRECTORY);
}

std::string Octal(uint32_t mode) {
  char buf[16];
  std::snprintf(buf, sizeof buf, "%o", mode);
  return buf;
}

// Mounts m's file system on kStaging.
// /dev and /sys were moved into new_root already.
Status MountStaging(const MountConfig& m, const std::string& new_root) {
  auto mount = [&](const std::string& source, const char* type, unsigned long flags,
                   const std::string& data) -> Status {
    if (::mount(source.c_str(), kStaging, type, flags, data.empty() ? nullptr : data.c_str()) != 0)
      return Error::FromErrno(std::string("mount -t ") + type + " " + source +
                              (data.empty() ? "" : " -o " + data));
    return OkStatus();
  };
  const unsigned long ro = m.read_only ? MS_RDONLY : 0;
  switch (m.type) {
    case MountConfig::Type::kDisk: {
      MSB_TRY(std::string dev, FindDiskBySerial(m.source, 5000, new_root));
      Status s = mount(dev, "ext4", ro, "");
      // A read-only disk cannot replay a journal left dirty: mount without it.
      if (!s.ok() && m.read_only) s = mount(dev, "ext4", ro, "norecovery");
      return s;
    }
    case MountConfig::Type::kVirtiofs:
      return mount(m.source, "virtiofs", ro, "");
    case MountConfig::Type::kTmpfs: {
      std::string data = "mode=" + Octal(m.mode);
      if (m.size_bytes > 0) data += ",size=" + std::to_string(m.size_bytes);
      return mount("tmpfs", "tmpfs", MS_NOSUID | MS_NODEV, data);
    }
  }
  return Error(ErrorCode::kInvalidArgument, "unknown mount type");
}

}  // namespace

Result<UniqueFd> OpenInRoot(int root_fd, const std::string& path, int flags) {
  const uint64_t resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  int fd = OpenAt2(root_fd, path.empty() ? "." : path, static_cast<uint64_t>(flags | O_CLOEXEC), resolve);
  if (fd < 0) return Error::FromErrno(path);
  return UniqueFd(fd);
}

Result<UniqueFd> OpenDirInRoot(int root_fd, const std::string& path, bool create) {
  std::string rel;
  for (const std::string& c : Components(path)) {
    if (c == "." || c == "..")
      return Error(ErrorCode::kInvalidArgument, "path " + path + " has a \".\" or \"..\" component");
    std::string parent = rel;
    rel += (rel.empty() ? "" : "/") + c;
    auto fd = Resolve(root_fd, rel);
    if (fd.ok()) continue;
    int err = fd.error().sys_errno();
    if (err == ENOTDIR)
      return Error(ErrorCode::kInvalidArgument, "/" + rel + " is not a directory", ENOTDIR);
    if (err != ENOENT || !create) return fd.error();
    MSB_TRY(UniqueFd parent_fd, Resolve(root_fd, parent));
    if (::mkdirat(parent_fd.get(), c.c_str(), 0755) != 0) {
      if (errno == EEXIST)
        return Error(ErrorCode::kInvalidArgument,
                     "/" + rel + " is a symlink to a path that does not exist in the root file system",
                     ENOENT);
      return Error::FromErrno("creating /" + rel);
    }
  }
  return Resolve(root_fd, rel);
}

Status MountAll(const std::vector<MountConfig>& mounts, const std::string& new_root) {
  if (mounts.empty()) return OkStatus();
  MSB_TRY_STATUS(MakeDirs(kStaging, 0700));
  UniqueFd root(::open(new_root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root) return Error::FromErrno("open " + new_root);
  for (const MountConfig& m : mounts) {
    std::string what = std::string(ToString(m.type)) +
                       (m.source.empty() ? "" : " " + m.source) + " at " + m.target;
    auto target = OpenDirInRoot(root.get(), m.target, true);
    if (!target.ok()) return target.error().Wrap("mounting " + what);
    if (auto s = MountStaging(m, new_root); !s.ok()) return s.error().Wrap("mounting " + what);
    if (::syscall(SYS_move_mount, AT_FDCWD, kStaging, target->get(), "", MOVE_MOUNT_T_EMPTY_PATH) != 0) {
      Error e = Error::FromErrno("moving it onto its target");
      ::umount2(kStaging, MNT_DETACH);
      return e.Wrap("mounting " + what);
    }
  }
  return OkStatus();
}

}  // namespace msb::agent
