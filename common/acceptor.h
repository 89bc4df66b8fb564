// Acceptor: watches a listening socket (not owned) on the Dispatcher and
// hands each accepted connection to a callback. Not a server: what is spoken
// on the connection is the callback's business.
//
// An accept that fails for want of descriptors or memory (EMFILE, ENFILE,
// ENOBUFS, ENOMEM) leaves the connection in the backlog and the listener
// readable; the watch is level-triggered, so the Acceptor stops watching for
// kAcceptPause and tries again, instead of spinning at full CPU while the
// limit lasts.
#pragma once

#include <chrono>
#include <functional>

#include "common/dispatcher.h"
#include "common/fd.h"

namespace msb {

class Acceptor {
 public:
  static constexpr std::chrono::milliseconds kAcceptPause{100};
  using OnConnection = std::function<void(UniqueFd)>;

  // accept_flags: SOCK_NONBLOCK and/or SOCK_CLOEXEC for accept4. dispatcher
  // and listen_fd must outlive the Acceptor; cb may destroy it.
  Acceptor(Dispatcher& dispatcher, int listen_fd, int accept_flags, OnConnection cb);
  Acceptor(const Acceptor&) = delete;
  Acceptor& operator=(const Acceptor&) = delete;

  // Accepts failed for want of resources so far.
  uint64_t starved() const { return starved_; }

 private:
  void OnReadable();
  void Watch();

  Dispatcher& dispatcher_;
  int listen_fd_;
  int flags_;
  OnConnection cb_;
  EventHandle watch_, pause_;
  uint64_t starved_ = 0;
};

}  // namespace msb
