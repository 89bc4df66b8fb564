// Reading layers ahead of the applier (layer_stream.h).
//
// Threads: the reader (ReadAll) and one consumer. They share only queue_,
// buffered_, peak_ and stopping_, under mu_; changed_ is notified whenever
// one of them changes. The reader waits while buffered_ + the next chunk
// would pass max_buffered_ and the queue is not empty (so one chunk larger
// than the bound still moves); the consumer waits while the queue is empty.
// Per layer the reader pushes its data chunks in order, then one end chunk
// with the digest, or one error chunk after which it stops. The consumer
// only ever pops the front, so chunks are seen in the order they were read,
// layer by layer.
//
// Data flow per layer: pread from the layer's fd, at most `size` bytes
// (OuterRead) → libarchive with the gzip and zstd filters and the raw format
// → SHA-256 over every uncompressed byte → a copy into the queue.
#include "agentd/layer_stream.h"

#include <archive.h>
#include <archive_entry.h>
#include <nettle/sha2.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/archive_ptr.h"
#include "common/hex.h"

namespace msb::agent {
namespace {

constexpr size_t kReadChunk = 1 << 20;

// libarchive's read callback over one layer's fd.
struct OuterSource {
  int fd;
  uint64_t size;
  uint64_t pos = 0;
  std::vector<char> buf = std::vector<char>(kReadChunk);
};

la_ssize_t OuterRead(archive* a, void* self, const void** buf) {
  auto* s = static_cast<OuterSource*>(self);
  uint64_t want = std::min<uint64_t>(s->buf.size(), s->size - s->pos);
  if (want == 0) return 0;
  for (;;) {
    ssize_t n = ::pread(s->fd, s->buf.data(), want, static_cast<off_t>(s->pos));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      archive_set_error(a, errno, "reading the layer disk at byte %llu: %s",
                        static_cast<unsigned long long>(s->pos), std::strerror(errno));
      return -1;
    }
    if (n == 0) {
      archive_set_error(a, EIO, "the layer disk ends at byte %llu, before the layer's %llu bytes",
                        static_cast<unsigned long long>(s->pos), static_cast<unsigned long long>(s->size));
      return -1;
    }
    s->pos += static_cast<uint64_t>(n);
    *buf = s->buf.data();
    return n;
  }
}

std::string ArchiveError(archive* a, const char* fallback) {
  const char* msg = archive_error_string(a);
  return msg != nullptr ? msg : fallback;
}

}  // namespace

LayerStream::LayerStream(std::vector<LayerSource> sources, size_t max_buffered)
    : sources_(std::move(sources)), max_buffered_(max_buffered) {
  reader_ = std::thread([this] { ReadAll(); });
}

LayerStream::~LayerStream() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  changed_.notify_all();
  reader_.join();
}

size_t LayerStream::peak_buffered() const {
  std::lock_guard lock(mu_);
  return peak_;
}

bool LayerStream::Push(Chunk chunk) {
  std::unique_lock lock(mu_);
  size_t n = chunk.data.size();
  auto room = [&] { return stopping_ || queue_.empty() || buffered_ + n <= max_buffered_; };
  if (!room()) {
    reader_waiting_ = true;
    changed_.notify_all();
    changed_.wait(lock, room);
    reader_waiting_ = false;
  }
  if (stopping_) return false;
  buffered_ += n;
  peak_ = std::max(peak_, buffered_);
  queue_.push_back(std::move(chunk));
  lock.unlock();
  changed_.notify_all();
  return true;
}

void LayerStream::ReadAll() {
  for (uint32_t i = 0; i < sources_.size(); ++i) {
    {
      std::lock_guard lock(mu_);
      if (stopping_) break;
    }
    Status s = ReadLayer(i);
    if (!s.ok()) {
      Chunk c;
      c.layer = i;
      c.error = s.error().message();
      (void)Push(std::move(c));
      break;
    }
  }
  {
    std::lock_guard lock(mu_);
    reader_done_ = true;
  }
  changed_.notify_all();
}

bool LayerStream::WaitUntilReaderWaits(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  return changed_.wait_for(lock, timeout, [&] { return reader_waiting_ || reader_done_; });
}

// Pushes layer `index`'s chunks and its end; an error ends it.
Status LayerStream::ReadLayer(uint32_t index) {
  OuterSource src{sources_[index].fd, sources_[index].size};
  ArchiveReadPtr outer(archive_read_new());
  archive_read_support_filter_gzip(outer.get());
  archive_read_support_filter_zstd(outer.get());
  archive_read_support_format_raw(outer.get());
  if (archive_read_open(outer.get(), &src, nullptr, OuterRead, nullptr) != ARCHIVE_OK)
    return Error(ErrorCode::kInvalidArgument, ArchiveError(outer.get(), "cannot read"));
  archive_entry* raw_entry = nullptr;
  if (archive_read_next_header(outer.get(), &raw_entry) != ARCHIVE_OK)
    return Error(ErrorCode::kInvalidArgument,
                 "not a gzip, zstd or uncompressed stream: " + ArchiveError(outer.get(), "?"));
  sha256_ctx sha;
  sha256_init(&sha);
  uint64_t bytes = 0;
  for (;;) {
    const void* buf = nullptr;
    size_t len = 0;
    la_int64_t off = 0;
    int r = archive_read_data_block(outer.get(), &buf, &len, &off);
    if (r == ARCHIVE_EOF) break;
    if (r < ARCHIVE_WARN) return Error(ErrorCode::kInvalidArgument, ArchiveError(outer.get(), "decompression failed"));
    if (static_cast<uint64_t>(off) != bytes)
      return Error(ErrorCode::kInvalidArgument, "the decompressed stream has a gap at byte " + std::to_string(bytes));
    if (len == 0) continue;
    sha256_update(&sha, len, static_cast<const uint8_t*>(buf));
    bytes += len;
    Chunk c;
    c.layer = index;
    c.data.assign(static_cast<const char*>(buf), len);
    if (!Push(std::move(c))) return OkStatus();  // being destroyed: nobody reads on
  }
  uint8_t digest[SHA256_DIGEST_SIZE];
  sha256_digest(&sha, sizeof digest, digest);
  Chunk end;
  end.layer = index;
  end.end = true;
  end.digest = LayerDigest{"sha256:" + HexLower(digest, sizeof digest), bytes};
  (void)Push(std::move(end));
  return OkStatus();
}

Result<LayerStream::Chunk> LayerStream::Pop(uint32_t index) {
  if (!failed_.empty()) return Error(ErrorCode::kInvalidArgument, failed_);
  std::unique_lock lock(mu_);
  changed_.wait(lock, [&] { return !queue_.empty() || reader_done_; });
  MSB_CHECK(!queue_.empty(), "LayerStream: layer " + std::to_string(index) + " asked for after the last one");
  Chunk c = std::move(queue_.front());
  queue_.pop_front();
  buffered_ -= c.data.size();
  lock.unlock();
  changed_.notify_all();
  // The reader goes in order and the consumer asks in order: anything else
  // is a bug in the caller.
  MSB_CHECK(c.layer == index, "LayerStream: layer " + std::to_string(index) + " asked for while layer " +
                                  std::to_string(c.layer) + " is due");
  if (!c.error.empty()) {
    failed_ = c.error;
    return Error(ErrorCode::kInvalidArgument, failed_);
  }
  return c;
}

Result<std::string_view> LayerStream::Next(uint32_t index) {
  MSB_TRY(Chunk c, Pop(index));
  if (c.end) {
    // Put the end back for Finish.
    std::lock_guard lock(mu_);
    queue_.push_front(std::move(c));
    current_.clear();
    return std::string_view();
  }
  current_ = std::move(c.data);
  return std::string_view(current_);
}

Result<LayerDigest> LayerStream::Finish(uint32_t index) {
  for (;;) {
    MSB_TRY(Chunk c, Pop(index));
    if (c.end) return c.digest;
  }
}

}  // namespace msb::agent
