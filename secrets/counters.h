// Per-secret counts of substituted and blocked requests, and the rate limit
// on log lines about blocks (one line per secret per kBlockLogInterval, the
// lines held back counted into the next). Pure: the owner passes the time
// and writes the lines. Not the judgement itself (secrets/substitute.h).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "secrets/substitute.h"

namespace msb::secrets {

inline constexpr std::chrono::seconds kBlockLogInterval{10};

struct SecretCounts {
  uint64_t substituted = 0;  // requests forwarded with this secret's value
  uint64_t blocked = 0;      // requests blocked because of this secret
  bool operator==(const SecretCounts&) const = default;
};

// Not thread-safe; one per sandbox, on the thread that judges requests.
class InjectionCounters {
 public:
  using Clock = std::chrono::steady_clock;

  // Counts one judgement. For a block, returns the line to log now ("blocked:
  // <reason>", plus how many were held back), or nullopt while this
  // secret's last line is younger than kBlockLogInterval.
  std::optional<std::string> Record(const Substitution& judgement, Clock::time_point now);

  SecretCounts CountsFor(const std::string& secret) const;
  // All counts, by secret name.
  const std::map<std::string, SecretCounts>& counts() const { return counts_; }

 private:
  struct LogState {
    Clock::time_point last{};
    bool logged = false;
    uint64_t held_back = 0;
  };
  std::map<std::string, SecretCounts> counts_;
  std::map<std::string, LogState> log_;
};

}  // namespace msb::secrets
