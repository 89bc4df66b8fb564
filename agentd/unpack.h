// agentd's unpack mode: OCI layer tarballs, read from read-only virtio-blk
// disks, applied in order onto an ext4 disk the host created, the way the OCI
// image spec says (whiteouts, opaque directories, hard links, devices, owners,
// modes, xattrs). Runs only in a builder microVM, as root: the tar data is
// hostile, so the applying process is chrooted into the target and every
// name it is given is resolved inside it. Not the host side (image/flatten.h) and
// not the protocol glue (server.cc). docs/agent-protocol.md "unpack" has the
// rules.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "agent/messages.h"
#include "common/result.h"

namespace msb::agent {

// Bounds on what one tar entry may carry.
inline constexpr size_t kMaxEntryPath = 4096;     // a name or link target, bytes
inline constexpr size_t kMaxNameComponent = 255;  // one component, bytes
inline constexpr size_t kMaxXattrName = 255;
inline constexpr size_t kMaxXattrValue = 65536;
inline constexpr size_t kMaxXattrsPerEntry = 128;

// A tar entry's name as a path relative to the root: a leading "/" and "./"
// are dropped, empty and "." components skipped, ".." removes the previous
// component. "" is the root itself. Names that climb above the root, contain
// NUL, or exceed the bounds above are errors.
Result<std::string> CleanEntryPath(std::string_view name);

// What a cleaned entry path means for whiteouts.
struct Whiteout {
  enum class Kind : uint8_t { kNone = 0, kRemove = 1, kOpaque = 2, kIgnore = 3 };
  Kind kind = Kind::kNone;
  // kRemove: the path to delete; kOpaque: the directory to clear ("" = root).
  std::string target;
};
// ".wh.NAME" → kRemove of NAME beside it; ".wh..wh..opq" → kOpaque of its
// directory; any other ".wh..wh.*" (aufs bookkeeping) → kIgnore. A whiteout
// of "." or ".." is an error.
Result<Whiteout> ClassifyWhiteout(const std::string& cleaned);

// True for the extended attributes unpack writes: user.*,
// security.capability and the POSIX ACL attributes. trusted.* (overlayfs
// reads trusted.overlay.* from the base layer) and other security.* names are
// skipped.
bool XattrAllowed(std::string_view name);

class LayerStream;

// Applies layer stream_index of stream (layer_stream.h: the decompressed tar,
// read ahead on another thread) onto "/", then skips the rest of its stream
// for the diff_id. The calling process must be chrooted into the target file
// system. `index` only names the layer in errors and the report.
Result<LayerReport> ApplyLayer(LayerStream& stream, uint32_t stream_index, uint32_t index);

// The same for one layer: the first `size` bytes of fd (a gzip, zstd or
// uncompressed tar stream; the compression is detected).
Result<LayerReport> ApplyLayer(int fd, uint64_t size, uint32_t index);

// As PID 1: mounts the target disk, applies every layer in a forked child
// chrooted into it, calling on_layer after each, then unmounts the target.
// The error names the layer and the entry.
Status RunUnpack(const UnpackRequest& request,
                 const std::function<void(const LayerReport&)>& on_layer);

}  // namespace msb::agent
