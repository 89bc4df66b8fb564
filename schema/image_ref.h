// The `image:` value (docs/sandboxfile.md "Images"): an OCI registry reference,
// a local root file system directory, an OCI layout directory or a snapshot,
// normalised so that equal images have equal references. Resolving a tag to
// a digest and fetching are the image store's job, not this.
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"
#include "schema/model.h"

namespace msb::schema {

// base_dir resolves relative directories; home expands "~/".
// "alpine" -> docker.io/library/alpine:latest; "./rootfs" -> /base/rootfs.
Result<Image> ParseImage(std::string_view text, const std::string& base_dir,
                         const std::string& home);

}  // namespace msb::schema
