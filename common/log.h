// Logging with a component tag to stderr: "msb[vm] warn: message".
// Level from MSB_LOG (debug|info|warn|error; default warn for the CLI).
// Not a structured event log: the workload's own output goes to the sandbox log.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <sstream>
#include <string>
#include <string_view>

namespace msb {

enum class LogLevel : int { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

const char* ToString(LogLevel level);
LogLevel CurrentLogLevel();
void SetLogLevel(LogLevel level);
// Sends log lines to fd (default 2). The supervisor points it at its log file.
void SetLogFd(int fd);
// Starts every line with the UTC time to the millisecond. Lines to a fd other
// than 2 always carry it; a process whose stderr is a log file (the
// supervisor) turns it on for fd 2 too.
void SetLogTimestamps(bool on);
void LogLine(LogLevel level, std::string_view component, std::string_view message);

class LogMessage {
 public:
  LogMessage(LogLevel level, std::string_view component) : level_(level), component_(component) {}
  ~LogMessage() { LogLine(level_, component_, stream_.str()); }
  std::ostringstream& stream() { return stream_; }

 private:
  LogLevel level_;
  std::string_view component_;
  std::ostringstream stream_;
};

// At most `burst` lines per key per interval, for lines a guest can cause at
// will (a DNS answer, a refused flow): the first few of a burst still show
// what happened, the rest are counted and the next line that goes out says
// how many were held back. Keys are fixed categories, not guest text, so the
// map stays small.
class LogRateLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  explicit LogRateLimiter(std::chrono::milliseconds interval = std::chrono::seconds(10), unsigned burst = 10)
      : interval_(interval), burst_(burst) {}
  // Whether a line for key goes out now; *held: how many were held back
  // since the last one that did.
  bool Allow(const std::string& key, Clock::time_point now, uint64_t* held);
  bool Allow(const std::string& key, uint64_t* held) { return Allow(key, Clock::now(), held); }

 private:
  struct State {
    Clock::time_point window_start{};
    bool started = false;
    unsigned lines = 0;  // lines out in this window
    uint64_t held = 0;
  };
  std::chrono::milliseconds interval_;
  unsigned burst_;
  std::map<std::string, State, std::less<>> keys_;
};

// " (N more like it not logged)" for held > 0, else "".
std::string HeldBackNote(uint64_t held);

}  // namespace msb

#define MSB_LOG(level, component)                                  \
  if (::msb::LogLevel::level < ::msb::CurrentLogLevel()) {         \
  } else                                                           \
    ::msb::LogMessage(::msb::LogLevel::level, component).stream()
