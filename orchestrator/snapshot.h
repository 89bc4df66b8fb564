// Disk snapshots: `msb snapshot create SANDBOX NAME` keeps a sandbox's root
// file system as it is now, its writable layer copied (storage/disk.h
// CopyDiskFile) over the base disk and the layers it booted from, under a
// name; `image: snapshot:NAME` boots new sandboxes on it, each with its own
// writable layer, the snapshot's staying read-only. Named volumes and bind
// mounts are not part of a snapshot. `msb snapshot export` writes one as an
// OCI image archive (snapshot_export.cc). Not a booted (memory) template.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "agent/protocol.h"
#include "common/result.h"
#include "orchestrator/images.h"
#include "orchestrator/store.h"
#include "orchestrator/up.h"

namespace msb::orchestrator {

// How long a running sandbox's writable layer may stay frozen while its disk
// is copied and hashed (SnapshotFreezeMs); agentd thaws it by itself after
// that, and a copy that took longer is discarded. The floor covers the
// freeze's own sync and a small layer on a loaded host; the allowance per GiB
// of the upper disk's allocated size is a copy at about 50 MiB/s, a slow
// disk's rate when the host file system cannot clone the file (FICLONE); the
// cap is the most agentd accepts (agent/protocol.h kMaxFreezeMs), reached at
// about 28 GiB allocated, beyond which a sandbox is snapshotted stopped.
inline constexpr int kSnapshotFreezeFloorMs = 30000;
inline constexpr int kSnapshotFreezeMsPerGiB = 20000;
static_assert(kSnapshotFreezeFloorMs <= agent::kMaxFreezeMs);
// kSnapshotFreezeFloorMs + kSnapshotFreezeMsPerGiB per GiB (rounded up to the
// millisecond) of allocated_bytes, at most agent::kMaxFreezeMs.
int SnapshotFreezeMs(uint64_t allocated_bytes);

// $MSB_HOME/snapshots.
std::string SnapshotRoot();
// The layer file of a snapshot kept in dir.
std::string SnapshotLayerPath(const std::string& dir);

// The name rule (schema::IsValidName); the error says what is allowed.
Status CheckSnapshotName(const std::string& name);

// The snapshot's digest: sha256 over its parent's digest (an image's, or the
// snapshot the source booted from) and its layer file's digest.
std::string SnapshotDigest(const std::string& parent_digest, const std::string& layer_digest);

// The layer files a sandbox booting on `record` attaches, oldest first.
// Errors on malformed JSON or more than agent::kMaxLowerLayers.
Result<std::vector<std::string>> SnapshotLayers(const SnapshotRecord& record);

// Copies `source`'s writable layer into a new snapshot `name`: a running
// sandbox is frozen for the copy (its supervisor asks agentd) and thawed
// after; a stopped one is copied as it is. Refuses an existing or invalid
// name, a sandbox without a disk-backed writable layer (ephemeral,
// read-only root), one that is starting or stopping, and a chain longer than
// agent::kMaxLowerLayers. Leaves nothing behind when it fails.
Result<SnapshotRecord> CreateSnapshot(Store& store, const SandboxRecord& source, const std::string& name);

// What keeps a snapshot from being removed: "sandbox PROJECT/NAME (state)"
// for each recorded sandbox whose image is snapshot:NAME, "snapshot NAME"
// for each snapshot whose layers include this one's (taken of such a
// sandbox). Sorted.
Result<std::vector<std::string>> SnapshotUsers(Store& store, const SnapshotRecord& record);

// Removes a snapshot nobody uses (else kState naming the users). Holds the
// lock (orchestrator/up.h ProjectLock, waiting for an `msb up` in progress,
// or an `msb run` between ResolveRunImage and its record) of `msb run`'s
// project and of every project whose Sandboxfile names snapshot:NAME or that
// has a sandbox on it, from the check to the removal.
Status RemoveSnapshot(Store& store, const std::string& name);

// An image resolved for `msb run`. For snapshot:NAME, `hold` is the run
// project's lock, shared (ProjectLock::AcquireShared), taken before the
// snapshot was resolved: the caller keeps it until the record of the sandbox
// booting it exists (launch.h Prepare), then drops it. RemoveSnapshot takes
// that lock exclusively, so it either removed the snapshot before this
// resolution (which then fails: no such snapshot) or waits and finds the
// record and refuses; it never removes layers a run is about to boot. Runs
// hold it together and never wait for each other; a registry image, whose
// pull may take minutes, holds nothing.
struct RunImage {
  ResolvedImage image;
  std::optional<ProjectLock> hold;
};
Result<RunImage> ResolveRunImage(Store& store, const schema::Image& image, const ImageOptions& options);

struct SnapshotExportOptions {
  std::string output;    // the archive to write; "-" = stdout
  std::string ref_name;  // index.json's org.opencontainers.image.ref.name; "" = the snapshot's name
  bool quiet = false;    // no progress line on stderr
};
struct SnapshotExport {
  std::string manifest_digest;
  size_t image_layers = 0;     // the base image's, copied from the image store
  size_t snapshot_layers = 0;  // one per snapshot level, oldest first
  uint64_t bytes = 0;          // the archive's size (0 for stdout)
};

// Writes snapshot `name` as an OCI image archive: the layers of the image
// its chain sits on (as stored, media types made OCI's), then one
// uncompressed layer per level with that level's changes (OCI whiteouts for
// deletions, opaque markers for replaced directories), made in a builder VM
// from the layer disks (image/layer_export.h); the image config with
// diff_ids and history appended. Refuses a snapshot over a local directory
// (no layers to start from). Holds the image store against garbage
// collection (image/image_store.h LockForImport) while it reads blobs. The
// archive is written to a temporary file beside the output and renamed; on
// failure nothing is left there.
Result<SnapshotExport> ExportSnapshot(Store& store, const std::string& name, const SnapshotExportOptions& options);

// image: snapshot:NAME, for EnsureImage: the base disk, the layers and the
// defaults of the image the chain started from.
Result<ResolvedImage> ResolveSnapshotImage(Store& store, const std::string& name);

}  // namespace msb::orchestrator
