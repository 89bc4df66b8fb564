// Flattening an image's layers into its read-only base disk, inside a builder
// microVM: the host creates an empty ext4 disk, attaches it and the layer
// blobs (read-only) to a QEMU microvm whose agentd runs in unpack mode
// (agentd/unpack.h), checks every diff_id the guest reports, and publishes the
// disk only when all layers applied. Untrusted tar data is never read on the
// host. Not the pull and not the image store: callers pass verified blobs.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"

namespace msb::image {

struct UnpackLayerSpec {
  std::string path;        // the blob file (read only); its size must equal `size`
  std::string media_type;  // an OCI / Docker layer media type (oci::ClassifyLayer)
  uint64_t size = 0;       // the descriptor's size (compressed bytes)
  std::string diff_id;     // expected "sha256:<hex>" of the uncompressed tar
};

// How to run the builder VM. kernel and initramfs are required (vm::FindKernel,
// vm::CachedInitramfs(agentd)); the rest has defaults.
struct UnpackVm {
  std::string qemu;        // "" = vm::FindQemu()
  std::string kernel;
  std::string initramfs;   // holding agentd as /init
  std::string accel = "tcg";  // "tcg" or "kvm" (vm::ChooseAccel)
  // Guest RAM; TCG and KVM allocate it as the guest touches it. The guest
  // keeps every path of the layer being applied (for whiteouts within that
  // layer): about 150 bytes per entry.
  uint64_t memory_bytes = 512ull << 20;
  // Extra guest kernel arguments; "" = vm::TscKernelArg() (TCG boots hang
  // without a known TSC rate on a busy host).
  std::string kernel_args;
};

struct FlattenRequest {
  std::vector<UnpackLayerSpec> layers;  // bottom first; at least one
  std::string output;                   // the base disk to create (must not exist)
  uint64_t disk_bytes = 0;              // 0 = EstimateDiskBytes(layers)
  UnpackVm vm;
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
