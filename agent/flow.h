// Credit-based flow control for the agent protocol's stream frames (kStdin,
// kStdout, kStderr, kData), one pair of counters per id and direction. Used
// by agentd, by the CLI's control client, and by the supervisor, which relays
// frames between the two and only checks the guest's side of the window
// (ReceiveCredit::OnReturned). Not thread-safe; plain values.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>

#include "agent/protocol.h"
#include "common/result.h"

namespace msb::agent {

// The sending side: bytes it may still send before the receiver returns
// credit. Starts with a full kCreditWindow.
class SendCredit {
 public:
  uint32_t available() const { return available_; }
  void Consume(size_t n) {
    MSB_CHECK(n <= available_, "stream bytes sent beyond credit");
    available_ -= static_cast<uint32_t>(n);
  }
  // A kCredit arrived. Saturates rather than wrapping on a hostile grant.
  void Grant(uint32_t n) {
    uint64_t sum = uint64_t{available_} + n;
    available_ = static_cast<uint32_t>(std::min<uint64_t>(sum, kMaxAvailable));
  }

 private:
  static constexpr uint64_t kMaxAvailable = 1u << 30;
  uint32_t available_ = kCreditWindow;
};

// The receiving side: bytes received and not yet returned. OnReceive refuses
// a peer that sends beyond the window; OnConsumed says how much credit to
// return now (0: keep batching), so a kCredit goes out for every quarter
// window consumed, or when everything received has been consumed.
class ReceiveCredit {
 public:
  Status OnReceive(size_t n) {
    if (n > kCreditWindow - outstanding_)
      return Error(ErrorCode::kProtocol,
                   "peer sent " + std::to_string(n) + " stream bytes with only " +
                       std::to_string(kCreditWindow - outstanding_) + " bytes of credit");
    outstanding_ += static_cast<uint32_t>(n);
    return OkStatus();
  }
  uint32_t OnConsumed(size_t n) {
    MSB_CHECK(n <= outstanding_ - unreturned_, "consumed more than received");
    unreturned_ += static_cast<uint32_t>(n);
    if (unreturned_ >= kCreditWindow / 4 || unreturned_ == outstanding_) {
      uint32_t give = unreturned_;
      outstanding_ -= give;
      unreturned_ = 0;
      return give;
    }
    return 0;
  }
  // Credit for n received bytes went back to the sender without passing
  // through OnConsumed: a relay forwarding the kCredit its own receiver
  // returned. Returning more than is outstanding leaves nothing outstanding.
  void OnReturned(uint32_t n) {
    outstanding_ = n >= outstanding_ ? 0 : outstanding_ - n;
    unreturned_ = std::min(unreturned_, outstanding_);
  }
  // Received and neither consumed nor returned.
  uint32_t outstanding() const { return outstanding_; }

 private:
  uint32_t outstanding_ = 0;  // received, credit not yet returned
  uint32_t unreturned_ = 0;   // part of outstanding_ already consumed
};

}  // namespace msb::agent
