// MemoryBudget: one count of the bytes a process buffers on behalf of an
// untrusted peer (queued frames, stream buffers, per-flow state), against one
// limit. It allocates nothing and enforces nothing by itself: the code that
// buffers charges and releases, and asks Exhausted() before taking more (a
// new flow, another read from the peer). Not thread-safe: one Dispatcher.
//
// Limits are soft by at most one buffer's growth: a charge that crosses the
// limit is recorded, and the next question answers "exhausted". Listeners
// (Watch) run from Release once usage falls to kResumeFraction of the limit
// after having reached it, so paused readers resume with room to spare; they
// must not charge or release from inside the call (post work instead).
#pragma once

#include <cstddef>
#include <functional>
#include <map>

namespace msb {

class MemoryBudget {
 public:
  // Resume below 3/4 of the limit once it was reached.
  static constexpr size_t kResumeNumerator = 3, kResumeDenominator = 4;

  explicit MemoryBudget(size_t limit) : limit_(limit) {}
  MemoryBudget(const MemoryBudget&) = delete;
  MemoryBudget& operator=(const MemoryBudget&) = delete;

  size_t limit() const { return limit_; }
  size_t used() const { return used_; }
  size_t peak() const { return peak_; }
  bool Exhausted() const { return used_ >= limit_; }
  size_t Room() const { return used_ >= limit_ ? 0 : limit_ - used_; }

  void Charge(size_t n) {
    used_ += n;
    if (used_ > peak_) peak_ = used_;
    if (used_ >= limit_) reached_ = true;
  }
  void Release(size_t n) {
    used_ = n > used_ ? 0 : used_ - n;
    if (reached_ && used_ <= limit_ / kResumeDenominator * kResumeNumerator) {
      reached_ = false;
      auto listeners = listeners_;  // a listener may unwatch
      for (auto& [id, fn] : listeners) fn();
    }
  }
  // Moves a holder's charge from `from` bytes to `to` bytes.
  void Adjust(size_t from, size_t to) {
    if (to > from) Charge(to - from);
    else if (from > to) Release(from - to);
  }

  // fn runs when room returns after the limit was reached; Unwatch(id) before
  // the listener's owner dies.
  int Watch(std::function<void()> fn) {
    listeners_.emplace(next_id_, std::move(fn));
    return next_id_++;
  }
  void Unwatch(int id) { listeners_.erase(id); }

 private:
  size_t limit_;
  size_t used_ = 0;
  size_t peak_ = 0;
  bool reached_ = false;
  int next_id_ = 1;
  std::map<int, std::function<void()>> listeners_;
};

}  // namespace msb
