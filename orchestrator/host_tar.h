// Tar streams on the host side of `msb cp`: packing a host path, and unpacking
// a stream that came from the guest. The guest's stream is hostile: only
// regular files, directories and symlinks under the expected top-level name
// are written, never outside the destination, never with the guest's owners,
// setuid/setgid bits or modes wider than the host umask allows, and never more
// than a stated number of bytes.
#pragma once

#include <sys/types.h>

#include <functional>
#include <string>
#include <string_view>

#include "common/fd.h"
#include "common/result.h"

namespace msb::orchestrator {

// Packs host path `src` as a pax stream whose top-level entry is named
// `top_name`, handing chunks to sink.
Status PackHostPath(const std::string& src, const std::string& top_name,
                    const std::function<Status(std::string_view)>& sink);

// `msb cp`'s default bound on what one copy out of a sandbox may write.
inline constexpr uint64_t kDefaultCopyMaxBytes = 1ull << 30;

// Unpacks the tar stream readable from `tar_fd` (from its start) into
// directory `dest_dir`, renaming the top-level entry `from_top` to `to_top`
// (equal for no rename), modes masked by `umask_bits`. Fails once the
// entries' contents add up to more than max_bytes (a sparse entry counts its
// full size).
Status UnpackGuestTar(int tar_fd, const std::string& dest_dir, const std::string& from_top,
                      const std::string& to_top, uint64_t max_bytes, mode_t umask_bits);

// A private spool for a guest's tar stream in `dir`: an unnamed file
// (O_TMPFILE), else a mkstemp name unlinked at once; never a path another
// process can predict, pre-create or link.
Result<UniqueFd> OpenSpool(const std::string& dir);

}  // namespace msb::orchestrator
