// StreamDecoder and StreamLink: see stream.h.
#include "net/stream.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace msb::net {

Status StreamDecoder::Feed(std::span<const uint8_t> bytes, const OnFrame& on_frame) {
  if (failed_) return Error(ErrorCode::kProtocol, "network stream: framing already broken");
  buf_.insert(buf_.end(), bytes.begin(), bytes.end());
  size_t off = 0;
  while (buf_.size() - off >= 4) {
    const uint8_t* p = buf_.data() + off;
    size_t len = static_cast<size_t>(p[0]) << 24 | static_cast<size_t>(p[1]) << 16 |
                 static_cast<size_t>(p[2]) << 8 | p[3];
    if (len == 0 || len > kMaxStreamFrame) {
      failed_ = true;
      buf_.clear();
      return Error(ErrorCode::kProtocol,
                   "network stream: frame length " + std::to_string(len) + " is out of range (1.." +
                       std::to_string(kMaxStreamFrame) + ")");
    }
    if (buf_.size() - off - 4 < len) break;
    on_frame({p + 4, len});
    off += 4 + len;
  }
  buf_.erase(buf_.begin(), buf_.begin() + static_cast<ptrdiff_t>(off));
  return OkStatus();
}

void EncodeStreamFrame(std::span<const uint8_t> frame, std::vector<uint8_t>& out) {
  uint32_t n = static_cast<uint32_t>(frame.size());
  uint8_t hdr[4] = {static_cast<uint8_t>(n >> 24), static_cast<uint8_t>(n >> 16),
                    static_cast<uint8_t>(n >> 8), static_cast<uint8_t>(n)};
  out.insert(out.end(), hdr, hdr + 4);
  out.insert(out.end(), frame.begin(), frame.end());
}

StreamLink::StreamLink(Dispatcher& dispatcher, UniqueFd fd, OnFrame on_frame, OnClose on_close)
    : dispatcher_(dispatcher),
      fd_(std::move(fd)),
      on_frame_(std::move(on_frame)),
      on_close_(std::move(on_close)),
      in_(256 * 1024) {
  Rewatch();
}

StreamLink::~StreamLink() = default;

void StreamLink::Rewatch() {
  watch_.Reset();
  if (!fd_) return;
  bool want_write = out_.size() > out_off_;
  watching_write_ = want_write;
  watch_ = dispatcher_.WatchFd(fd_.get(), Dispatcher::kRead | (want_write ? Dispatcher::kWrite : 0),
                               [this](short flags) { OnReady(flags); });
}

void StreamLink::OnReady(short flags) {
  if (flags & Dispatcher::kWrite) Flush();
  if (!fd_ || !(flags & Dispatcher::kRead)) return;
  for (int i = 0; i < 16 && fd_; ++i) {
    ssize_t n = recv(fd_.get(), in_.data(), in_.size(), MSG_DONTWAIT);
    if (n == 0) return Close(Error(ErrorCode::kIo, "network stream: QEMU closed the connection"));
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return;
      return Close(Error::FromErrno("network stream: read"));
    }
    Status s = decoder_.Feed({in_.data(), static_cast<size_t>(n)}, on_frame_);
    if (!s.ok()) return Close(s);
    if (static_cast<size_t>(n) < in_.size()) return;
  }
}

void StreamLink::Send(std::span<const uint8_t> frame) {
  if (!fd_) return;
  if (out_.size() - out_off_ + frame.size() + 4 > kMaxStreamQueue) {
    ++dropped_;
    return;
  }
  EncodeStreamFrame(frame, out_);
  if (!watching_write_) Flush();
}

void StreamLink::Flush() {
  while (out_off_ < out_.size()) {
    ssize_t n = send(fd_.get(), out_.data() + out_off_, out_.size() - out_off_,
                     MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) break;
      return Close(Error::FromErrno("network stream: write"));
    }
    out_off_ += static_cast<size_t>(n);
  }
  if (out_off_ == out_.size()) {
    out_.clear();
    out_off_ = 0;
  } else if (out_off_ > (1 << 20)) {
    out_.erase(out_.begin(), out_.begin() + static_cast<ptrdiff_t>(out_off_));
    out_off_ = 0;
  }
  bool want_write = out_.size() > out_off_;
  if (want_write != watching_write_) Rewatch();
}

void StreamLink::Close(Status why) {
  if (!fd_) return;
  watch_.Reset();
  fd_.Reset();
  out_.clear();
  out_off_ = 0;
  if (on_close_) on_close_(std::move(why));
}

}  // namespace msb::net
