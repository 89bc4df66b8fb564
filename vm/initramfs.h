// The guest's initramfs: a newc cpio (uncompressed: LZ4 boots no faster here,
// see initramfs.cc) holding only /init and the mount points PID 1 needs.
// Not the root file system: agentd mounts that from the image disks.
#pragma once

#include <string>

#include "common/result.h"

namespace msb::vm {

// Writes out_path atomically (temporary file + rename): /init (init_binary,
// mode 0755), the directories /dev /proc /sys /mnt (0755) and the character
// device /dev/console (5,1, mode 0600), all owned by root, mtime 0.
Status BuildInitramfs(const std::string& init_binary, const std::string& out_path);

// $MSB_HOME/initramfs/<key>.cpio for init_binary, built on first use. The key
// is the sha256 of the binary's bytes and of this builder's layout version, so
// a new agentd gives a new archive and an unchanged one is reused.
Result<std::string> CachedInitramfs(const std::string& init_binary);

}  // namespace msb::vm
