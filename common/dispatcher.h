// Dispatcher: the one owner of a libevent event_base, with fd watches, timers,
// signals and deferred deletion. Single-threaded: every method is called on the
// thread that runs Run(). Not a thread pool and not a scheduler of its own.
//
// Order of work in one loop iteration (libevent's): active fd/signal/timer
// callbacks in priority order, then the deferred-delete list is emptied, so an
// object may ask for its own deletion from inside its callback and is freed only
// after that callback returned.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <vector>

struct event_base;
struct event;

namespace msb {

class Dispatcher;

// A registered event (fd readiness, timer or signal). Destroying it unregisters.
class EventHandle {
 public:
  EventHandle();
  ~EventHandle();
  EventHandle(EventHandle&&) noexcept;
  EventHandle& operator=(EventHandle&&) noexcept;
  EventHandle(const EventHandle&) = delete;
  EventHandle& operator=(const EventHandle&) = delete;

  bool active() const { return ev_ != nullptr; }
  void Reset();
  // Timers only: (re)arm to fire once after `after`.
  void Arm(std::chrono::milliseconds after);
  void Disarm();

 private:
  friend class Dispatcher;
  struct Callback;
  event* ev_ = nullptr;
  std::unique_ptr<Callback> cb_;
};

class Dispatcher {
 public:
  enum Flags : short { kRead = 0x02, kWrite = 0x04 };  // EV_READ, EV_WRITE
  using FdCallback = std::function<void(short ready_flags)>;
  using Callback = std::function<void()>;

  Dispatcher();
  ~Dispatcher();
  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;

  // Persistent watch of fd for `flags`; does not take ownership of fd. A
  // callback may reset its own handle; objects it owns go through DeferDelete.
  EventHandle WatchFd(int fd, short flags, FdCallback cb);
  // One-shot timer, not armed until Arm() is called on the handle.
  EventHandle Timer(Callback cb);
  // Persistent signal watch (the signal is handled in the loop, not async).
  EventHandle Signal(int signo, Callback cb);

  // Runs cb on the next loop iteration.
  void Post(Callback cb);
  // Frees obj after the current callback returns.
  template <typename T>
  void DeferDelete(std::unique_ptr<T> obj) {
    auto holder = std::make_shared<std::unique_ptr<T>>(std::move(obj));
    Post([holder]() { holder->reset(); });
  }

  // Runs until Exit() or no events remain.
  void Run();
  void Exit();
  event_base* base() const { return base_; }

 private:
  event_base* base_;
  std::vector<Callback> posted_;
  EventHandle post_event_;
};

}  // namespace msb
