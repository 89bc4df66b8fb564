// Acceptor: see acceptor.h.
#include "common/acceptor.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "common/log.h"

namespace msb {

Acceptor::Acceptor(Dispatcher& dispatcher, int listen_fd, int accept_flags, OnConnection cb)
    : dispatcher_(dispatcher), listen_fd_(listen_fd), flags_(accept_flags), cb_(std::move(cb)) {
  pause_ = dispatcher_.Timer([this]() { Watch(); });
  Watch();
}

void Acceptor::Watch() {
  watch_ = dispatcher_.WatchFd(listen_fd_, Dispatcher::kRead, [this](short) { OnReadable(); });
}

void Acceptor::OnReadable() {
  UniqueFd fd(::accept4(listen_fd_, nullptr, nullptr, flags_));
  if (fd) {
    // The callback may destroy this Acceptor: nothing touches it afterwards.
    auto cb = cb_;
    cb(std::move(fd));
    return;
  }
  if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
    if (starved_++ == 0) {
      MSB_LOG(kWarn, "accept") << "accept: " << std::strerror(errno)
                            << "; pausing the listener, connections wait in its backlog";
    }
    watch_.Reset();
    pause_.Arm(kAcceptPause);
  }
}

}  // namespace msb
