// Counting judgements and rate-limiting block log lines. See counters.h.
#include "secrets/counters.h"

namespace msb::secrets {

std::optional<std::string> InjectionCounters::Record(const Substitution& judgement, Clock::time_point now) {
  if (judgement.verdict == Verdict::kSubstituted) {
    for (const std::string& name : judgement.substituted) ++counts_[name].substituted;
    return std::nullopt;
  }
  if (judgement.verdict != Verdict::kBlocked) return std::nullopt;
  ++counts_[judgement.blocked_secret].blocked;
  LogState& st = log_[judgement.blocked_secret];
  if (st.logged && now - st.last < kBlockLogInterval) {
    ++st.held_back;
    return std::nullopt;
  }
  std::string line = "blocked: " + judgement.reason;
  if (st.held_back > 0) {
    line += " (" + std::to_string(st.held_back) + " more blocks of secret " + judgement.blocked_secret + " not logged)";
  }
  st.logged = true;
  st.last = now;
  st.held_back = 0;
  return line;
}

SecretCounts InjectionCounters::CountsFor(const std::string& secret) const {
  auto it = counts_.find(secret);
  return it == counts_.end() ? SecretCounts{} : it->second;
}

}  // namespace msb::secrets
