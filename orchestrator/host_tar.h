// Tar streams on the host side of `msb cp`: packing a host path, and unpacking
// a stream that came from the guest. The guest's stream is hostile: only
// regular files, directories and symlinks under the expected top-level name
// are written, never outside the destination, never with the guest's owners.
#pragma once

#include <functional>
#include <string>
#include <string_view>

#include "common/result.h"

namespace msb::orchestrator {

// Packs host path `src` as a pax stream whose top-level entry is named
// `top_name`, handing chunks to sink.
Status PackHostPath(const std::string& src, const std::string& top_name,
                    const std::function<Status(std::string_view)>& sink);

// Unpacks the tar file at `tar_path` into directory `dest_dir`, renaming the
// top-level entry `from_top` to `to_top` (equal for no rename).
Status UnpackGuestTar(const std::string& tar_path, const std::string& dest_dir,
                      const std::string& from_top, const std::string& to_top);

}  // namespace msb::orchestrator
