// A sandbox's volumes, bind mounts and tmpfs at launch: named volumes get
// their disk (created on first use, recorded in the store), bind mounts a
// virtio-fs share, and the guest a mount list in an order where a mount that
// nests in another comes after it. Also which sandboxes use a volume (for
// `msb volume rm`). Not the disks themselves (storage/volume.h) and not the
// daemons (vm/virtiofs.h).
#pragma once

#include <string>
#include <vector>

#include "agent/messages.h"
#include "common/result.h"
#include "orchestrator/launch.h"
#include "orchestrator/store.h"
#include "vm/spec.h"

namespace msb::orchestrator {

// Fills spec->volumes, spec->shares and boot->mounts from req.mounts and
// req.tmpfs. Creates missing volume disks under MsbHome() and records every
// volume (the project must be recorded). Refuses a bind source that is not a
// directory, more devices than microvm has transports for, and a volume that
// another running sandbox has attached when either side would write to it.
Status PrepareMounts(Store& store, const LaunchRequest& req, vm::VmSpec* spec,
                     agent::BootConfig* boot);

// A sandbox that has a volume's disk attached (by its spec), with its
// observed status.
struct VolumeUser {
  std::string project;
  std::string name;
  SandboxStatus status = SandboxStatus::kCreated;
  bool read_only = false;
};
Result<std::vector<VolumeUser>> VolumeUsers(Store& store, const std::string& disk_path);

}  // namespace msb::orchestrator
