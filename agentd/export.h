// agentd's export mode: a snapshot's layer disks (copies of sandboxes'
// writable layers) turned into OCI layer tars, inside a builder microVM, so
// that the host never mounts or parses the guest's file system. Not the host
// side (image/layer_export.h) and not the protocol glue (server.cc).
// docs/agent-protocol.md "export" has the rules.
#pragma once

#include <functional>
#include <string>

#include "agent/messages.h"
#include "common/result.h"

namespace msb::agent {

// What one name in an overlayfs upper directory becomes in an OCI layer.
enum class UpperKind : int {
  kCopy = 0,      // stored as it is
  kWhiteout = 1,  // a 0/0 character device: ".wh.NAME" beside it
  kSkip = 2,      // a socket: not representable in a tar
};
// From lstat's mode and rdev.
UpperKind ClassifyUpperEntry(unsigned mode, unsigned long rdev);

// True for the extended attributes an exported layer carries: everything but
// trusted.overlay.* (overlayfs's own bookkeeping: opaque, redirect, origin).
bool ExportXattr(const std::string& name);

// Writes the OCI layer tar of the upper directory `upper` (entries named
// relative to it, directories with a trailing '/', uid/gid numeric) to
// out_fd from its current offset, failing once more than `limit` bytes would
// be written. A whiteout device becomes an empty regular file ".wh.NAME"
// (mode 0, 0:0); a directory with trusted.overlay.opaque "y" is followed by
// an empty "DIR/.wh..wh..opq". Hard links within the layer are kept; the
// upper directory's own entry is not written. Returns the entry count and
// the bytes written.
Result<ExportReport> WriteUpperTar(const std::string& upper, int out_fd, uint64_t limit);

// As PID 1: for each layer, mounts its disk read-only (journal not
// replayed), writes the tar of its upper/ directory onto its output disk,
// unmounts it, and calls on_layer.
Status RunExport(const ExportRequest& request, const std::function<void(const ExportReport&)>& on_layer);

}  // namespace msb::agent
