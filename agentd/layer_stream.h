// LayerStream: the uncompressed tar streams of an unpack's layers, read,
// decompressed (gzip, zstd or none, detected) and hashed (the diff_id) on a
// thread of their own, layer after layer, ahead of the applier, into a
// bounded queue. Unpack mode's applier (unpack.h) takes them in order, so
// with two vCPUs decompressing layer N+1 overlaps applying layer N. Not the
// tar reader and not the applier: this holds bytes, never names.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "common/result.h"

namespace msb::agent {

// Uncompressed bytes LayerStream holds at most before its reader waits (plus
// one chunk when a single chunk is larger). The builder VM's RAM is small.
inline constexpr size_t kMaxLayerReadAhead = 16u << 20;

// One layer blob: fd is read with pread from offset 0 up to `size` bytes.
struct LayerSource {
  int fd = -1;
  uint64_t size = 0;
};

// What the reader computed over a layer's whole uncompressed stream,
// trailing bytes after the tar end marker included.
struct LayerDigest {
  std::string diff_id;  // "sha256:<hex>"
  uint64_t bytes = 0;
};

// Owns the reading thread; does not own the fds, which must outlive it.
// Next and Finish are called from one consumer thread, for layer 0, then 1,
// and so on. Destroying it stops the reader (a consumer that gave up early
// does not wait for the rest) and joins it.
class LayerStream {
 public:
  // Starts reading at once. max_buffered: see kMaxLayerReadAhead.
  LayerStream(std::vector<LayerSource> sources, size_t max_buffered = kMaxLayerReadAhead);
  ~LayerStream();
  LayerStream(const LayerStream&) = delete;
  LayerStream& operator=(const LayerStream&) = delete;

  // The next chunk of layer `index`, valid until the next call; an empty
  // chunk when the layer's stream has ended. An error (the disk, a corrupt
  // stream) names the layer; after it, every call returns it.
  Result<std::string_view> Next(uint32_t index);

  // Skips what is left of layer `index` (it is still hashed) and returns
  // its digest. The next call to Next is for index + 1.
  Result<LayerDigest> Finish(uint32_t index);

  // The most uncompressed bytes queued at one time so far.
  size_t peak_buffered() const;

  // For tests: waits until the reader waits for room in the queue or has
  // stopped (every layer read, or an error); false if `timeout` passes first.
  bool WaitUntilReaderWaits(std::chrono::milliseconds timeout);

 private:
  struct Chunk {
    uint32_t layer = 0;
    std::string data;        // empty: the layer's end (digest) or an error
    bool end = false;
    LayerDigest digest;      // end only
    std::string error;       // not empty: reading the layer failed
  };

  void ReadAll();
  Status ReadLayer(uint32_t index);
  bool Push(Chunk chunk);  // false: the stream is being destroyed
  Result<Chunk> Pop(uint32_t index);

  std::vector<LayerSource> sources_;
  size_t max_buffered_;

  mutable std::mutex mu_;
  std::condition_variable changed_;
  std::deque<Chunk> queue_;  // guarded by mu_
  size_t buffered_ = 0;      // bytes of data in queue_; guarded by mu_
  size_t peak_ = 0;          // guarded by mu_
  bool stopping_ = false;    // guarded by mu_
  bool reader_waiting_ = false;  // in Push, for room; guarded by mu_
  bool reader_done_ = false;     // guarded by mu_

  // The consumer's side: the chunk handed out by Next, and a sticky error.
  std::string current_;
  std::string failed_;

  std::thread reader_;  // last: started once everything above exists
};

}  // namespace msb::agent
