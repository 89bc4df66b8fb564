// Kernel modules for a modular guest kernel (Debian's cloud kernel, booted
// while the tuned kernel of vm/kernel.config is not built yet). The tuned
// kernel has every driver the guest needs built in and takes no modules.
//
// Module files come from a Debian package the host fetched (scripts/setup):
// host data, never the guest's. The dependency order is read from each
// module's .modinfo section ("depends=a,b"), so no depmod is needed.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace msb::vm {

// What the guest needs from a modular kernel: the virtio-mmio transport and
// its block, network, console and entropy devices, virtio-fs, and the file
// systems agentd mounts (overlay for the root, erofs for erofs base images).
inline constexpr const char* kGuestModules[] = {
    "virtio_mmio", "virtio_blk", "virtio_net", "virtio_console", "virtio_rng",
    "virtiofs",    "overlay",    "erofs",
};

// The module names in the "depends=" entry of an ELF module's .modinfo
// section ("" when it has none). Errors name the file when it is not a
// 64-bit little-endian ELF object or its section table is out of bounds.
Result<std::vector<std::string>> ModuleDepends(std::string_view elf, const std::string& path);

// The module files under modules_dir (searched recursively for NAME.ko; '-'
// and '_' are the same in module names, as for modprobe) for `wanted` and
// everything they depend on, dependencies first, each once. A wanted or
// depended-on module that is missing, or a dependency cycle, is an error
// naming it.
Result<std::vector<std::string>> ModuleLoadOrder(const std::string& modules_dir,
                                                 const std::vector<std::string>& wanted);

}  // namespace msb::vm
