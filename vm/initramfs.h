// The guest's initramfs: a newc cpio (uncompressed: LZ4 boots no faster here,
// see initramfs.cc) holding only /init and the mount points PID 1 needs.
// Not the root file system: agentd mounts that from the image disks.
#pragma once

#include <string>
#include <vector>

#include "common/result.h"

namespace msb::vm {

// Where the archive holds the kernel modules agentd loads, in name order,
// before it mounts anything (a modular kernel only; see vm/kernel_modules.h).
inline constexpr char kInitramfsModulesDir[] = "/lib/modules/msb";

// Writes out_path atomically (temporary file + rename): /init (init_binary,
// mode 0755), the directories /dev /proc /sys /mnt (0755) and the character
// device /dev/console (5,1, mode 0600), all owned by root, mtime 0; and, when
// modules are given, each as kInitramfsModulesDir/NNN-NAME.ko (0644), NNN its
// position in `modules` (dependencies first).
Status BuildInitramfs(const std::string& init_binary, const std::string& out_path,
                      const std::vector<std::string>& modules = {});

// $MSB_HOME/initramfs/<key>.cpio for init_binary and modules, built on first
// use. The key is the sha256 of the binary's bytes, the modules' names and
// bytes and this builder's layout version, so a new agentd or module set gives
// a new archive and an unchanged one is reused.
Result<std::string> CachedInitramfs(const std::string& init_binary,
                                    const std::vector<std::string>& modules = {});

}  // namespace msb::vm
