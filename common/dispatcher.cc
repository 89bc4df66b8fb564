// libevent trampolines: each event carries a Callback* as its argument.
#include "common/dispatcher.h"

#include <event2/event.h>

#include "common/result.h"

namespace msb {

struct EventHandle::Callback {
  Dispatcher::FdCallback fd_cb;
  Dispatcher::Callback cb;
  static void Trampoline(evutil_socket_t, short what, void* arg) {
    auto* self = static_cast<Callback*>(arg);
    // Copies: the callback may destroy the handle that owns *self.
    if (self->fd_cb) {
      auto cb = self->fd_cb;
      cb(what);
    } else if (self->cb) {
      auto cb = self->cb;
      cb();
    }
  }
};

EventHandle::EventHandle() = default;
EventHandle::~EventHandle() { Reset(); }
EventHandle::EventHandle(EventHandle&& o) noexcept : ev_(o.ev_), cb_(std::move(o.cb_)) { o.ev_ = nullptr; }
EventHandle& EventHandle::operator=(EventHandle&& o) noexcept {
  if (this != &o) {
    Reset();
    ev_ = o.ev_;
    cb_ = std::move(o.cb_);
    o.ev_ = nullptr;
  }
  return *this;
}

void EventHandle::Reset() {
  if (ev_ != nullptr) {
    event_free(ev_);
    ev_ = nullptr;
  }
  cb_.reset();
}

void EventHandle::Arm(std::chrono::milliseconds after) {
  MSB_CHECK(ev_ != nullptr, "Arm on an empty event handle");
  timeval tv{static_cast<time_t>(after.count() / 1000),
             static_cast<suseconds_t>((after.count() % 1000) * 1000)};
  event_add(ev_, &tv);
}

void EventHandle::Disarm() {
  if (ev_ != nullptr) event_del(ev_);
}

Dispatcher::Dispatcher() : base_(event_base_new()) {
  MSB_CHECK(base_ != nullptr, "event_base_new failed");
  post_event_ = Timer([this]() {
    auto work = std::move(posted_);
    posted_.clear();
    for (auto& cb : work) cb();
  });
}

Dispatcher::~Dispatcher() {
  post_event_.Reset();
  event_base_free(base_);
}

EventHandle Dispatcher::WatchFd(int fd, short flags, FdCallback cb) {
  EventHandle h;
  h.cb_ = std::make_unique<EventHandle::Callback>();
  h.cb_->fd_cb = std::move(cb);
  h.ev_ = event_new(base_, fd, flags | EV_PERSIST, &EventHandle::Callback::Trampoline, h.cb_.get());
  MSB_CHECK(h.ev_ != nullptr, "event_new failed");
  event_add(h.ev_, nullptr);
  return h;
}

EventHandle Dispatcher::Timer(Callback cb) {
  EventHandle h;
  h.cb_ = std::make_unique<EventHandle::Callback>();
  h.cb_->cb = std::move(cb);
  h.ev_ = evtimer_new(base_, &EventHandle::Callback::Trampoline, h.cb_.get());
  MSB_CHECK(h.ev_ != nullptr, "evtimer_new failed");
  return h;
}

EventHandle Dispatcher::Signal(int signo, Callback cb) {
  EventHandle h;
  h.cb_ = std::make_unique<EventHandle::Callback>();
  h.cb_->cb = std::move(cb);
  h.ev_ = evsignal_new(base_, signo, &EventHandle::Callback::Trampoline, h.cb_.get());
  MSB_CHECK(h.ev_ != nullptr, "evsignal_new failed");
  event_add(h.ev_, nullptr);
  return h;
}

void Dispatcher::Post(Callback cb) {
  posted_.push_back(std::move(cb));
  post_event_.Arm(std::chrono::milliseconds(0));
}

void Dispatcher::Run() { event_base_dispatch(base_); }
void Dispatcher::Exit() { event_base_loopbreak(base_); }

}  // namespace msb
