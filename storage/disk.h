// Disks for sandboxes: the read-only ext4 base disk built from a local root
// file system directory (`image: ./dir`), cached by the tree's content, and
// empty sparse ext4 disks for writable layers and named volumes. Built with
// mkfs.ext4 (e2fsprogs) on the host; nothing is ever mounted here. Not the
// OCI image path: registry layers are unpacked inside a builder VM.
#pragma once

#include <cstdint>
#include <string>

#include "common/result.h"

namespace msb::storage {

// What HashTree learnt about a directory tree.
struct TreeSummary {
  std::string sha256;          // hex content hash, see HashTree
  uint64_t content_bytes = 0;  // bytes of regular files (hard links once)
  uint64_t entries = 0;        // inodes below and including the root
};

// Hashes a tree in a sorted walk (byte order of names): for every entry its
// relative path, type, permission bits (incl. setuid/setgid/sticky), uid, gid,
// extended attributes, and by type the file contents, the symlink target, the
// device number, or the first path of a hard-link group. Timestamps are not
// part of the hash. Symlinks are never followed (the root itself may be one).
Result<TreeSummary> HashTree(const std::string& dir);

// Returns cache_dir/<hash>.ext4, a read-only ext4 image of rootfs_dir, building
// it first when absent (`mkfs.ext4 -d`, no journal, label "msb-base", root
// directory owned by 0:0, files keeping their host uid/gid). The image appears
// under its final name only when complete. Creates cache_dir. `summary`, when
// given, gets the HashTree of the walk the image was keyed by.
Result<std::string> BuildBaseDiskFromDir(const std::string& rootfs_dir,
                                         const std::string& cache_dir,
                                         TreeSummary* summary = nullptr);

// Creates path as an empty sparse ext4 file system (with journal) of
// size_bytes, labelled label (at most 16 bytes). Refuses an existing path: a
// volume is never overwritten. The file appears only when complete.
Status CreateSparseExt4(const std::string& path, uint64_t size_bytes, const std::string& label);

// Copies the disk file src to dst (which must not exist), mode 0600: a
// reflink (FICLONE) where the file system shares extents, else a sparse copy
// of src's data extents (SEEK_DATA/SEEK_HOLE), holes left holes. The file's
// bytes are copied, never interpreted or mounted. dst is removed again when
// the copy fails. The digest comes with it (see DiskCopy::digest).
struct DiskCopy {
  bool cloned = false;          // FICLONE did it
  uint64_t bytes_copied = 0;    // data bytes read and written (0 when cloned)
  // DiskDigest of the bytes copied, taken in the same pass as the copy (of
  // dst, read back, after a clone).
  std::string digest;
};
Result<DiskCopy> CopyDiskFile(const std::string& src, const std::string& dst);

// "sha256:<hex>" over a disk file's size and its data extents as
// SEEK_DATA/SEEK_HOLE report them (offset, length and bytes of each), so a
// sparse disk costs only what it holds. Two files with the same bytes and
// holes hash alike; reading it never interprets it.
Result<std::string> DiskDigest(const std::string& path);

}  // namespace msb::storage
