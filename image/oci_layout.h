// OCI image layouts (image-spec "image-layout.md") as an image source:
// `oci-layout:PATH[:tag]` picks the index.json entry whose
// org.opencontainers.image.ref.name is the tag (or the only entry), follows a
// nested index to linux/amd64 and copies the manifest, config and layers into
// a BlobTarget, which verifies each blob. Also the entry-to-image walk that
// oci-archive loading (image/image_archive.h) shares. Not a writer of layouts,
// and not the record of references (the orchestrator's).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "image/blob_target.h"
#include "image/oci.h"

namespace msb::image {

inline constexpr std::string_view kRefNameAnnotation = "org.opencontainers.image.ref.name";

// An image now complete in a store: manifest, config and every layer.
struct ImportedImage {
  std::string name;             // the entry's ref.name annotation; "" when none
  std::string root_digest;      // the index entry: a manifest or a nested index
  std::string manifest_digest;  // the linux/amd64 image manifest: pin this one
  std::string media_type;       // of that manifest (OCI's default when unstated)
  std::string config_digest;
  int64_t size_bytes = 0;  // manifest + config + layers, as stored
};

// Imports the image `tag` of the layout at dir ("" = the only image) into
// target. Errors name the directory and what is missing or wrong, e.g.
// "OCI layout /x: no image tagged v2 (tags: v1, latest)".
Result<ImportedImage> ImportOciLayout(const std::string& dir, const std::string& tag, BlobTarget& target);

// ---- The parts shared with oci-archive loading.

// Checks an oci-layout file's content (imageLayoutVersion 1.x).
Status CheckLayoutVersion(std::string_view oci_layout_json, const std::string& where);

// The entries of a layout's index.json, in file order.
Result<std::vector<oci::Descriptor>> LayoutEntries(std::string_view index_json, const std::string& where);

// Chooses the entry for tag (see ImportOciLayout).
Result<oci::Descriptor> ChooseLayoutEntry(const std::vector<oci::Descriptor>& entries, const std::string& tag,
                                          const std::string& where);

// Makes the blob of d present in the target (copying and verifying it), or
// fails naming it; `what` says which blob this is ("layers[2]").
using EnsureBlobFn = std::function<Status(const oci::Descriptor& d, const std::string& what)>;

// Walks entry to a complete linux/amd64 image: ensures and reads the entry
// (following nested indexes, at most 4 deep), the manifest, the config and
// each layer, checking media types, that the config is linux/amd64 and that
// diff_ids match the layers. Documents are read back from target after
// ensure(), so they are the verified bytes.
Result<ImportedImage> ImportLayoutEntry(const oci::Descriptor& entry, BlobTarget& target, const EnsureBlobFn& ensure,
                                        const std::string& where);

}  // namespace msb::image
