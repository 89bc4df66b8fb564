// FrameChannel: poll(2)-based blocking send and receive with deadlines.
#include "agent/channel.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "common/io.h"

namespace msb::agent {
namespace {

// poll() timeout in ms for a deadline: -1 for "none", at least 0.
int PollTimeout(Clock::time_point deadline) {
  if (deadline == Clock::time_point::max()) return -1;
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left <= 0) return 0;
  // Round up so that a wait never ends just before the deadline.
  return static_cast<int>(std::min<long long>(left + 1, 1 << 30));
}

}  // namespace

FrameChannel::FrameChannel(UniqueFd fd) : fd_(std::move(fd)) {
  (void)SetNonBlocking(fd_.get());
}

void FrameChannel::CloseWrite() { ::shutdown(fd_.get(), SHUT_WR); }

Status FrameChannel::Send(const Frame& frame, Clock::time_point deadline) {
  std::string bytes = EncodeFrame(frame);
  size_t off = 0;
  while (off < bytes.size()) {
    ssize_t n = ::send(fd_.get(), bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == ENOTSOCK) n = ::write(fd_.get(), bytes.data() + off, bytes.size() - off);
    if (n > 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
      return Error::FromErrno("sending a " + ToString(frame.kind) + " frame to the agent channel");
    pollfd p{fd_.get(), POLLOUT, 0};
    int r = ::poll(&p, 1, PollTimeout(deadline));
    if (r < 0 && errno != EINTR) return Error::FromErrno("poll on the agent channel");
    if (r == 0)
      return Error(ErrorCode::kTimeout,
                   "timed out sending a " + ToString(frame.kind) + " frame to the agent channel");
  }
  return OkStatus();
}

Result<Frame> FrameChannel::Receive(Clock::time_point deadline) {
  char buf[64 * 1024];
  for (;;) {
    auto next = reader_.Next();
    if (!next.ok()) return next.error();
    if (next->has_value()) return std::move(**next);
    if (eof_) {
      if (reader_.mid_frame())
        return Error(ErrorCode::kProtocol, "agent channel closed in the middle of a frame (" +
                                               std::to_string(reader_.buffered()) +
                                               " bytes of a truncated frame)");
      return Error(ErrorCode::kUnavailable, "agent channel closed by the peer");
    }
    // Read no more than the current frame still needs (plus a header), so the
    // buffer never holds much beyond one frame.
    size_t want = std::min(sizeof buf, std::max<size_t>(reader_.wanted(), kHeaderSize));
    ssize_t n = ::read(fd_.get(), buf, want);
    if (n > 0) {
      reader_.Feed(std::string_view(buf, static_cast<size_t>(n)));
      continue;
    }
    if (n == 0) {
      eof_ = true;
      continue;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return Error::FromErrno("reading the agent channel");
    pollfd p{fd_.get(), POLLIN, 0};
    int r = ::poll(&p, 1, PollTimeout(deadline));
    if (r < 0 && errno != EINTR) return Error::FromErrno("poll on the agent channel");
    if (r == 0) return Error(ErrorCode::kTimeout, "timed out waiting for a frame from the agent");
  }
}

}  // namespace msb::agent
