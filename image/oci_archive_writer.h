// Writing an OCI image archive (a tar of an OCI image layout: oci-layout,
// index.json, blobs/sha256/<hex>) of one image: a stored base image's layers
// plus new layers on top, with the config's rootfs.diff_ids and history
// extended and a new OCI manifest. `skopeo copy oci-archive:FILE ...` and
// `msb load` (image/image_archive.h) read it. The documents are built by a
// pure function; writing only copies files into the tar. Not a reader, and
// nothing here looks inside a layer.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "image/oci.h"

namespace msb::image {

// A layer to append: an uncompressed tar file whose digest is its diff_id.
struct AppendedLayer {
  std::string path;
  std::string digest;      // "sha256:<hex>" of the file
  uint64_t size = 0;
  std::string created_by;  // the history entry's created_by
  std::string comment;     // and its comment
};

struct ArchiveDocuments {
  std::string config;  // bytes, and their digests
  std::string config_digest;
  std::string manifest;
  std::string manifest_digest;
  std::string index;
  std::vector<oci::Descriptor> layers;  // the manifest's, in order
};

// The OCI media type for a stored layer of `compression`
// (application/vnd.oci.image.layer.v1.tar[+gzip|+zstd]): Docker layer types
// become their OCI equivalent, the bytes being the same.
std::string_view OciLayerMediaType(oci::LayerCompression compression);

// From the base image's config bytes (any fields kept; rootfs.diff_ids and,
// when the config has a history array, history are appended to; "created"
// set to `created`, RFC 3339) and its layer descriptors (OCI media types),
// the documents of the image with `layers` on top. `ref_name` ("" = none)
// becomes the index entry's org.opencontainers.image.ref.name. Errors when
// the config is not a JSON object with rootfs.diff_ids matching base_layers
// in number.
Result<ArchiveDocuments> BuildArchiveDocuments(std::string_view base_config,
                                               const std::vector<oci::Descriptor>& base_layers,
                                               const std::vector<AppendedLayer>& layers, const std::string& ref_name,
                                               const std::string& created);

// A blob file to put in the archive under blobs/sha256/<hex of digest>.
struct ArchiveBlobFile {
  std::string digest;
  std::string path;
  uint64_t size = 0;  // checked against the file while it is copied
};

// Writes the archive to out_fd: oci-layout, index.json, each blob file once
// (in order, duplicates skipped), the config and the manifest. A blob file
// whose size differs from what it should be is an error.
Status WriteOciArchive(int out_fd, const ArchiveDocuments& docs, const std::vector<ArchiveBlobFile>& blobs);

}  // namespace msb::image
