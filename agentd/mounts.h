// The sandbox's own mounts, made by agentd as PID 1 inside the new root after
// the overlay root is assembled and before switching into it: named volumes
// (ext4 disks found by serial), shared host directories (virtio-fs tags) and
// tmpfs. Targets are resolved *inside* the new root: the image is untrusted,
// and a symlink in it must never make a mount land outside. Not the root
// assembly (guest_init.h).
#pragma once

#include <string>
#include <vector>

#include "agent/messages.h"
#include "common/fd.h"
#include "common/result.h"

namespace msb::agent {

// Resolves the absolute guest path `path` inside the directory root_fd as if
// root_fd were "/" (openat2 RESOLVE_IN_ROOT: absolute symlinks and ".." stay
// inside), creating missing directories (0755) when `create`. Returns an
// O_PATH fd of the directory. A component that is not a directory, or a
// symlink that resolves to nothing (it cannot be created in place), is an
// error naming the path.
Result<UniqueFd> OpenDirInRoot(int root_fd, const std::string& path, bool create);

// open(2) of `path` resolved inside root_fd the same way (openat2
// RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS), with `flags` (O_CLOEXEC added).
// An error carries openat2's errno and names the path.
Result<UniqueFd> OpenInRoot(int root_fd, const std::string& path, int flags);

// Mounts each entry in order inside new_root. Each file system is mounted on a
// staging directory of the initramfs first and then moved onto the resolved
// target's fd (move_mount), so the target path is never resolved again.
Status MountAll(const std::vector<MountConfig>& mounts, const std::string& new_root);

}  // namespace msb::agent
