// A BlobTarget over a directory for tests: partial/<hex> while a sink
// writes, blobs/<hex> once Commit verified size and sha256. Counts what the
// sinks did and can inject one write failure, for resume tests. Test code.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "image/blob_target.h"

namespace msb::testing {

class DirSink;

class DirTarget : public image::BlobTarget {
 public:
  explicit DirTarget(std::string root);
  bool HasBlob(const std::string& digest) const override;
  std::string BlobPath(const std::string& digest) const override;
  Result<std::unique_ptr<image::BlobSink>> OpenBlob(const std::string& digest, int64_t size) override;

  struct Stats {
    int opens = 0;
    int restarts = 0;
    uint64_t bytes_written = 0;
    std::vector<uint64_t> offsets_seen;  // Offset() answers
  };
  Stats StatsFor(const std::string& digest) {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_[digest];
  }
  size_t PublishedCount() const;
  // The sink of `digest` fails its Write once, after `after` bytes.
  void FailOnce(const std::string& digest, uint64_t after) {
    fail_digest_ = digest;
    fail_after_ = after;
  }

 private:
  friend class DirSink;
  std::string root_;
  std::mutex mu_;
  std::map<std::string, Stats> stats_;
  std::string fail_digest_;
  uint64_t fail_after_ = 0;
  bool failed_ = false;
};

}  // namespace msb::testing
