// The content-addressed image store under $MSB_HOME/images: published blobs
// by sha256 digest, resumable partial writes, per-digest writer locks, the
// per-image metadata read back from stored manifests and configs, and garbage
// collection given the set of images to keep. Not the record of references
// (tags and what they are pinned to live in the state store, written by the
// orchestrator), not any transport, and not the unpacker of layers.
//
// Layout under the root:
//   blobs/sha256/<hex>     published blobs, read-only, verified on publication
//   ingest/<hex>.partial   the prefix of an interrupted write of <hex>
//   ingest/<hex>.lock      flock(2) held by the one writer of <hex>
//   ingest/new-XXXXXX      a blob whose digest is not known yet (CreateBlob)
//   disks/<hex>.ext4       base disk of manifest <hex> (the unpacker writes it)
//   local/<hex>.ext4       base disk of a local directory of tree hash <hex>
//   gc.lock                shared by imports, exclusive for garbage collection
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "common/fd.h"
#include "common/result.h"
#include "image/blob_target.h"
#include "image/oci.h"

namespace msb::image {

// $MSB_HOME/images.
std::string DefaultImageRoot();

// One layer of a stored image, in manifest order (the order to apply them).
struct StoredLayer {
  std::string digest;      // of the blob as stored (usually compressed)
  std::string media_type;  // as the manifest says
  int64_t size = 0;
  oci::LayerCompression compression = oci::LayerCompression::kNone;
  std::string diff_id;  // config rootfs.diff_ids[i]: sha256 of the uncompressed tar
  std::string path;     // the published blob; read it, never write it
};

// An image whose manifest and config are in the store (layers may not be:
// see missing_blobs).
struct StoredImage {
  std::string root_digest;          // what was asked for: a manifest or an index
  std::string manifest_digest;      // the linux/amd64 image manifest
  std::string manifest_media_type;  // as written; OCI manifests may leave it out
  oci::Manifest manifest;
  std::string config_digest;
  oci::ImageConfig config;
  std::vector<StoredLayer> layers;
  int64_t size_bytes = 0;  // manifest + config + layers (compressed, as stored)
  std::string base_disk;   // DiskPath(manifest_digest); may not exist yet
  std::vector<std::string> missing_blobs;  // config or layers not (yet) in the store
};

// What garbage collection removed (or, with dry_run, would remove).
struct PruneReport {
  std::vector<std::string> blobs;     // digests, sorted
  std::vector<std::string> partials;  // ingest file paths
  std::vector<std::string> disks;     // base disk paths
  uint64_t bytes = 0;                 // freed, by st_size
};

// A hold on gc.lock. Shared (LockForImport): an import is in progress and
// its blobs must survive until the orchestrator has recorded the reference.
// Exclusive (LockForGc): nothing is importing, blobs may be removed. Released
// on destruction. Move-only.
class StoreLock {
 public:
  StoreLock(StoreLock&&) noexcept = default;
  StoreLock& operator=(StoreLock&&) noexcept = default;
  bool exclusive() const { return exclusive_; }

 private:
  friend class ImageStore;
  StoreLock(UniqueFd fd, bool exclusive, std::string root)
      : fd_(std::move(fd)), exclusive_(exclusive), root_(std::move(root)) {}
  UniqueFd fd_;
  bool exclusive_ = false;
  std::string root_;
};

// A blob whose digest is learnt from its bytes (a docker-archive layer, a
// synthesized manifest). Write, then Commit() publishes it under its sha256.
// Destroyed without Commit(): the bytes are discarded. Not thread-safe.
class BlobWriter {
 public:
  virtual ~BlobWriter() = default;
  virtual Status Write(std::string_view bytes) = 0;
  virtual uint64_t size() const = 0;
  // The digest it was published under ("sha256:<hex>").
  virtual Result<std::string> Commit() = 0;
};

// The store. A value holding only the root path: cheap to copy, usable from
// several threads and processes at once (all coordination is through the
// file system: flock and rename). Sinks and writers copy what they need and
// may outlive it.
//
// Writing a blob of known digest (BlobTarget::OpenBlob): the writer holds
// ingest/<hex>.lock for the sink's life; a second opener of the same digest
// waits. If the blob was published meanwhile, the waiter's sink is already
// complete: Offset() equals the blob's size, Write() fails, Commit() succeeds
// without work (two pulls of one image download each blob once). A source
// that calls Restart() on it anyway may write the bytes again; they are only
// checked against the stored blob, which is never rewritten. An existing
// partial is re-hashed on open to restore the sha256 state, and Offset() is
// its length (a partial longer than a known size is discarded). Commit()
// checks size and sha256, fsyncs, makes the file read-only and renames it to
// blobs/sha256/<hex>. Any failure to write (ENOSPC included) or to verify
// removes the partial and publishes nothing.
class ImageStore final : public BlobTarget {
 public:
  // Creates root and its sub-directories when missing.
  static Result<ImageStore> Open(const std::string& root);

  const std::string& root() const { return root_; }

  // BlobTarget. BlobPath of an invalid digest is "" (and HasBlob false).
  bool HasBlob(const std::string& digest) const override;
  std::string BlobPath(const std::string& digest) const override;
  Result<std::unique_ptr<BlobSink>> OpenBlob(const std::string& digest, int64_t size) override;

  // A blob of unknown digest (see BlobWriter).
  Result<std::unique_ptr<BlobWriter>> CreateBlob();
  // Publishes bytes; returns their digest.
  Result<std::string> PutBlob(std::string_view bytes);

  // Reads a published document blob (manifest, index, config): at most
  // oci::kMaxDocumentBytes, sha256 checked again on read. kNotFound when the
  // blob is absent; kIo naming the digest when its content no longer matches.
  Result<std::string> ReadDocument(const std::string& digest) const;

  // The image at root_digest, a manifest or an index (followed to its
  // linux/amd64 manifest, which must be in the store). The config must be
  // stored; layers need not be (they are listed in missing_blobs).
  Result<StoredImage> ReadImage(const std::string& root_digest) const;

  // Every digest the image at root_digest holds on to: itself, and when it is
  // stored, for an index every stored child manifest's closure, for a manifest
  // its config and layers. A root that is not in the store yields just
  // itself (a local directory's content hash, or an image still arriving).
  Result<std::set<std::string>> ImageBlobs(const std::string& root_digest) const;

  // Digests of all published blobs, sorted.
  Result<std::vector<std::string>> ListBlobs() const;

  // $root/disks/<hex>.ext4 for a manifest digest ("" when invalid).
  std::string DiskPath(const std::string& manifest_digest) const;

  // Waits for any garbage collection to finish, then holds the store against
  // the next one until the returned lock is dropped. Hold it from the first
  // blob of a pull or load until its reference is recorded.
  Result<StoreLock> LockForImport() const;
  // Exclusive: fails fast (kState) while an import holds the store.
  Result<StoreLock> LockForGc() const;

  // Removes every blob outside the closures of keep_roots, every partial and
  // stray lock no writer holds, and every base disk {disks,local}/<hex>.ext4
  // whose sha256:<hex> is outside the closures (a local directory's tree
  // hash digest keeps its disk when listed in keep_roots). Fails, removing nothing, when a kept
  // root's manifest or index cannot be read (the error names it).
  Result<PruneReport> Prune(const std::set<std::string>& keep_roots, const StoreLock& gc,
                            bool dry_run = false);

  // Removes what only root_digest held: the blobs of its closure outside the
  // closures of keep_roots, and the base disks of its manifests (when they
  // are not kept). Nothing when root_digest is itself kept.
  Result<PruneReport> RemoveImage(const std::string& root_digest, const std::set<std::string>& keep_roots,
                                  const StoreLock& gc);

 private:
  explicit ImageStore(std::string root) : root_(std::move(root)) {}
  Status CheckGcLock(const StoreLock& gc) const;
  Result<std::set<std::string>> KeptClosure(const std::set<std::string>& keep_roots) const;
  // {disks,local}/<hex>.ext4 of a digest.
  std::vector<std::string> DiskPaths(const std::string& digest) const;
  // Removes the published blobs (by digest) and base disks (by path) named.
  Status RemoveBlobs(const std::set<std::string>& blobs, const std::set<std::string>& disks, bool dry_run,
                     PruneReport* report);

  std::string root_;
};

}  // namespace msb::image
