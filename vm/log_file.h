// RotatingLog: an append-only log file of bounded size with one previous
// generation. When a record would take PATH past max_bytes, PATH becomes
// PATH.1 (replacing the older one) and a new PATH starts, so a sandbox's log
// costs the host at most 2 x max_bytes however much the guest writes, and
// the newest output is always in PATH. A record longer than max_bytes is
// cut to it (ending in a newline still). Not a reader: LogFollower reads both generations.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/fd.h"
#include "common/result.h"

namespace msb::vm {

inline constexpr uint64_t kDefaultLogMaxBytes = 16ull << 20;
// Above the longest record the supervisor writes (one output frame, escaped).
inline constexpr uint64_t kMinLogMaxBytes = 1ull << 20;

class RotatingLog {
 public:
  static Result<RotatingLog> Open(std::string path, uint64_t max_bytes);
  Status Append(std::string_view record);
  uint64_t rotations() const { return rotations_; }

 private:
  std::string path_;
  uint64_t max_ = kDefaultLogMaxBytes;
  uint64_t size_ = 0;
  uint64_t rotations_ = 0;
  UniqueFd fd_;
};

// Reads a RotatingLog from where it was: first PATH.1 then PATH, then, on
// each Read, whatever was appended since, across rotations (a new PATH is
// noticed by its inode), without reading anything twice. Whole lines only:
// a partial last line waits for the rest.
class LogFollower {
 public:
  explicit LogFollower(std::string path) : path_(std::move(path)) {}
  // The complete lines appended since the last call (the first call: all).
  std::string Read();

 private:
  std::string Drain();
  std::string path_;
  UniqueFd fd_;
  uint64_t ino_ = 0;
  bool started_ = false;
  std::string partial_;
};

}  // namespace msb::vm
