// The frame codec: encoding a Frame to bytes and an incremental FrameReader
// that turns a byte stream back into frames. Pure: no I/O, no JSON. Used by
// agentd, by FrameChannel (channel.h) and by event-loop users (the supervisor)
// that feed it what they read.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "agent/protocol.h"
#include "common/result.h"

namespace msb::agent {

// Appends header + payload to out. The payload must not exceed kMaxPayload
// (an invariant: senders chunk their data).
void AppendFrame(std::string& out, uint32_t id, FrameKind kind, std::string_view payload);
std::string EncodeFrame(const Frame& frame);

// Incremental decoder. Feed() the bytes as they arrive, then call Next() until
// it returns no frame. Buffers at most one partial frame plus what was fed and
// not yet popped; a header declaring more than kMaxPayload is a channel error:
// Next() returns it, and keeps returning it (the reader is poisoned; close
// the channel). Unknown kinds are passed through: the consumer answers them.
// Not thread-safe; owns only its buffer.
class FrameReader {
 public:
  void Feed(std::string_view bytes);
  // A complete frame, std::nullopt when more bytes are needed, or the error.
  Result<std::optional<Frame>> Next();

  // Bytes buffered and not yet returned as frames.
  size_t buffered() const { return buf_.size() - pos_; }
  // True when the buffer ends in the middle of a frame (for "truncated
  // frame" errors at end of stream).
  bool mid_frame() const { return buffered() != 0; }
  // How many more bytes the current frame needs (at least 1 when nothing is
  // buffered): a reader can size its read so it never buffers much beyond.
  size_t wanted() const;
  bool poisoned() const { return poisoned_; }

 private:
  std::string buf_;
  size_t pos_ = 0;  // start of the first unconsumed byte
  bool poisoned_ = false;
  std::string poison_message_;
};

}  // namespace msb::agent
