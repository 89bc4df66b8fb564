// FrameChannel: a blocking, deadline-bounded frame transport over one
// connected fd (a unix socket to QEMU's chardev, a socketpair in tests).
// For callers without an event loop: the CLI, tests, one-shot tools. The
// supervisor, on libevent, uses FrameReader (frame.h) directly.
// Every byte read is treated as hostile: frames are bounded by kMaxPayload and
// a truncated or oversized frame is an error that ends the channel.
#pragma once

#include <chrono>

#include "agent/frame.h"
#include "agent/protocol.h"
#include "common/fd.h"
#include "common/result.h"

namespace msb::agent {

using Clock = std::chrono::steady_clock;

// Takes ownership of fd. Single-threaded: one caller at a time.
class FrameChannel {
 public:
  explicit FrameChannel(UniqueFd fd);

  // Writes the whole frame, waiting (poll) until the fd accepts it or the
  // deadline passes. The payload must not exceed kMaxPayload.
  Status Send(const Frame& frame, Clock::time_point deadline);
  Status Send(const Frame& frame) { return Send(frame, Clock::time_point::max()); }
  Status Send(uint32_t id, FrameKind kind, std::string payload) {
    return Send(Frame{id, kind, std::move(payload)});
  }

  // The next frame. Errors: kTimeout (deadline passed, channel still usable),
  // kUnavailable (peer closed between frames), kProtocol (oversized or
  // truncated frame: the channel is done), kIo.
  Result<Frame> Receive(Clock::time_point deadline);
  Result<Frame> Receive(std::chrono::milliseconds timeout) {
    return Receive(Clock::now() + timeout);
  }

  int fd() const { return fd_.get(); }
  // Closes the write direction only (shutdown(SHUT_WR) on sockets).
  void CloseWrite();

 private:
  UniqueFd fd_;
  FrameReader reader_;
  bool eof_ = false;
};

}  // namespace msb::agent
