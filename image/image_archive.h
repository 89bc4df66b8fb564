// `msb load`: docker-archive (docker save / skopeo docker-archive:) and
// oci-archive (a tar of an OCI layout) tarballs into the image store. The tar
// (plain or compressed; whatever libarchive reads) is streamed once, entry by
// entry, straight into the store: nothing is extracted to the host file
// system and entry names are only keys ("../x" is a name like any other).
// For a docker-archive a Docker schema-2 manifest is synthesized whose layer
// digests are the sha256 of the layer files as stored in the tar. Not the
// record of references: callers turn `names` into references.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/result.h"
#include "image/image_store.h"

namespace msb::image {

enum class ArchiveFormat : int { kDockerArchive = 0, kOciArchive = 1 };
const char* ToString(ArchiveFormat format);

struct LoadedImage {
  ArchiveFormat format = ArchiveFormat::kDockerArchive;
  // docker-archive: RepoTags as written ("busybox:latest"); oci-archive: the
  // entry's org.opencontainers.image.ref.name (a tag or a full reference).
  // May be empty: an untagged image.
  std::vector<std::string> names;
  std::string manifest_digest;  // pin this
  std::string media_type;       // of the manifest
  std::string config_digest;
  int64_t size_bytes = 0;  // manifest + config + layers
};

// Loads every image of the archive at path into store, in the archive's
// order (docker: manifest.json's; OCI: index.json's). Hold
// store.LockForImport() across this call and the recording of references.
// Errors name the file and the entry: not a tar, neither format ("no
// manifest.json or index.json"), a missing or corrupt blob (the digest).
// Blobs already in the store are not written again; blobs stored before a
// failure stay (verified, unreferenced: `msb image prune` removes them).
Result<std::vector<LoadedImage>> LoadImageArchive(const std::string& path, ImageStore& store);

}  // namespace msb::image
