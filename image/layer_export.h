// Turning a snapshot's layer disks (copies of sandboxes' writable layers,
// orchestrator/snapshot.h) into OCI layer tars inside a builder microVM
// (vm/builder_vm.h) whose agentd runs in export mode (agentd/export.h). The
// guest's file system is never mounted or parsed on the host: the host makes
// one sparse output disk per layer, reads back only the byte count the guest
// reports (checked against the disk's size), cuts the file there and hashes
// it. Not the archive around the layers (image/oci_archive_writer.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"
#include "vm/builder_vm.h"

namespace msb::image {

struct LayerExportRequest {
  // The layer disks (ext4 holding upper/), oldest first; 1 to
  // agent::kMaxExportLayers. Attached read-only.
  std::vector<std::string> layer_disks;
  // An existing directory; the tars are written there as layer-<i>.tar.
  std::string work_dir;
  ::msb::vm::BuilderVmOptions vm;
  // The whole export; 0 = 120 s plus 4 s per MiB of layer disks.
  std::chrono::milliseconds timeout{0};
};

struct ExportedLayer {
  std::string path;     // the uncompressed tar, in work_dir
  std::string digest;   // "sha256:<hex>" of it: the blob digest and the diff_id
  uint64_t size = 0;    // its bytes
  uint64_t entries = 0; // tar entries the guest reported
};

// The size of the output disk for a layer disk of `layer_bytes` (apparent
// size): twice it plus 64 MiB, sparse. A tar of a file system's content
// outgrows the file system only by its headers (512 bytes and a pax record
// per entry), and an entry takes at least an inode there.
uint64_t ExportDiskBytes(uint64_t layer_bytes);

// Exports every layer in one builder boot. On failure no tar is left in
// work_dir. Errors name the layer (index and disk) and what the guest said.
Result<std::vector<ExportedLayer>> ExportLayers(const LayerExportRequest& request);

}  // namespace msb::image
