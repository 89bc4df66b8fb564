// Where pulled and loaded blobs go: the seam between the sources of image
// content (registry client, OCI layouts, archives) and the content-addressed
// image store (image/image_store.h). A source writes each blob through a
// BlobSink; the store publishes it under its digest only when the bytes
// verify. Not the store itself, and not any transport.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "common/result.h"

namespace msb::image {

// One blob being written. Offset() is where writing resumes: a store may keep
// the verified prefix of an interrupted download, so a source continues from
// there (an HTTP Range request) or calls Restart() to begin again. Commit()
// checks size and sha256 of everything written and publishes the blob; on a
// mismatch it discards the partial data and fails naming the digest. A sink
// destroyed without Commit() keeps its partial data for a later resume and
// publishes nothing.
class BlobSink {
 public:
  virtual ~BlobSink() = default;
  virtual uint64_t Offset() const = 0;
  virtual Status Restart() = 0;
  virtual Status Write(std::string_view bytes) = 0;
  virtual Status Commit() = 0;
};

class BlobTarget {
 public:
  virtual ~BlobTarget() = default;
  // digest: "sha256:<64 hex>". True when the blob is present and published.
  virtual bool HasBlob(const std::string& digest) const = 0;
  // The path of a published blob (read it, never write it).
  virtual std::string BlobPath(const std::string& digest) const = 0;
  // Opens a sink for a blob of `size` bytes (-1: size unknown). Concurrent
  // opens of one digest: the second waits for, or fails fast against, the
  // first; never two writers of one blob.
  virtual Result<std::unique_ptr<BlobSink>> OpenBlob(const std::string& digest, int64_t size) = 0;
};

}  // namespace msb::image
