// The sandbox's optional devices, beside the fixed ones of QemuArgv: named
// volumes (ext4 disks on virtio-blk) and shared host directories (virtio-fs
// over vhost-user, one virtiofsd each; vm/virtiofs.h runs them). Their part of
// the VmSpec JSON, and their ids and sockets on the QEMU command line (the
// options themselves are vm/qemu_cmdline.h's). Not the guest's view: agentd
// mounts them from the boot configuration (agentd/mounts.h).
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "common/result.h"

namespace msb::vm {

// A named volume's disk: attached as virtio-blk with `serial`, read-only at
// the QEMU level too when `read_only`.
struct VmDisk {
  std::string path;    // the ext4 image
  std::string serial;  // at most 20 bytes (virtio-blk); VolumeSerial(i)
  bool read_only = false;
};

// A host directory shared through virtio-fs. `read_only` is enforced on the
// host: its virtiofsd sees the directory through a read-only bind mount.
struct VmShare {
  std::string source;  // absolute host directory
  std::string tag;     // the guest's mount source; ShareTag(i)
  bool read_only = false;
};

// "msb-vol-<i>" and "msbfs<i>".
std::string VolumeSerial(size_t index);
std::string ShareTag(size_t index);
// <dir>/fs<i>.sock: the vhost-user socket between QEMU and share i's virtiofsd.
std::string ShareSocket(const std::string& dir, size_t index);

nlohmann::json DisksToJson(const std::vector<VmDisk>& disks);
nlohmann::json SharesToJson(const std::vector<VmShare>& shares);
// Absent or null: none. Throws nlohmann::json::exception on a wrong type (the
// spec reader catches it).
std::vector<VmDisk> DisksFromJson(const nlohmann::json& j);
std::vector<VmShare> SharesFromJson(const nlohmann::json& j);

class QemuCommandLine;
// Attaches the disks (drive ids vol<i>) and then the shares (chardev ids
// fs<i>, sockets ShareSocket(dir, i)) in index order.
void AttachVolumesAndShares(const std::vector<VmDisk>& disks, const std::vector<VmShare>& shares,
                            const std::string& dir, QemuCommandLine& cmd);

}  // namespace msb::vm
