// Flattening an image's layers into its read-only base disk, inside a builder
// microVM (vm/builder_vm.h): the host creates an empty ext4 disk, attaches it
// and the layer blobs (read-only) to a VM whose agentd runs in unpack mode
// (agentd/unpack.h), checks every diff_id the guest reports, and publishes the
// disk only when all layers applied. Untrusted tar data is never read on the
// host. Not the pull and not the image store: callers pass verified blobs; and
// not the VM: no QEMU option is written here.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"
#include "vm/builder_vm.h"

namespace msb::image {

struct UnpackLayerSpec {
  std::string path;        // the blob file (read only); its size must equal `size`
  std::string media_type;  // an OCI / Docker layer media type (oci::ClassifyLayer)
  uint64_t size = 0;       // the descriptor's size (compressed bytes)
  std::string diff_id;     // expected "sha256:<hex>" of the uncompressed tar
  std::string digest;      // the blob's "sha256:<hex>", naming it in errors; empty: its path does
};

struct FlattenRequest {
  std::vector<UnpackLayerSpec> layers;  // bottom first; at least one
  std::string output;                   // the base disk to create (must not exist)
  uint64_t disk_bytes = 0;              // 0 = EstimateDiskBytes(layers)
  // The builder VM. Its memory: the guest keeps every path of the layer being
  // applied (for whiteouts within that layer), about 150 bytes per entry,
  // and up to 16 MiB of decompressed tar read ahead (agentd/layer_stream.h).
  ::msb::vm::BuilderVmOptions vm;
  // The whole unpack; 0 = UnpackTimeout(layers).
  std::chrono::milliseconds timeout{0};
};

struct LayerResult {
  std::string diff_id;
  uint64_t entries = 0;  // tar entries (whiteouts included)
  uint64_t bytes = 0;    // uncompressed tar bytes
};

struct FlattenResult {
  std::vector<LayerResult> layers;  // in request order
  uint64_t disk_bytes = 0;          // the output's (sparse) size
  int boots = 0;                    // builder VMs run (kMaxUnpackLayers layers each)
  int restored = 0;                 // of them, restored from a builder template
};

// Flattens request.layers into request.output. The disk is built at
// "<output>.tmp" (a stale one is replaced: callers serialise unpacks of one
// output, as the image store does) and renamed to output only when every layer
// applied and every diff_id matched; on any failure nothing is left behind
// (no temp file, no QEMU process, no socket directory). Errors name the layer
// (index and blob path) and, for tar problems, the entry.
Result<FlattenResult> FlattenLayers(const FlattenRequest& request);

// max(64 MiB, 8 × compressed bytes + 128 MiB), rounded to MiB: generous,
// because the disk is sparse and a compressed size says little about the
// number of inodes.
uint64_t EstimateDiskBytes(const std::vector<UnpackLayerSpec>& layers);

// 120 s per builder boot plus 4 s per compressed MiB (TCG on a busy 2-core
// host decompresses and writes at a few MiB/s).
std::chrono::milliseconds UnpackTimeout(const std::vector<UnpackLayerSpec>& layers);

}  // namespace msb::image
