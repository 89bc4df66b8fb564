// Logging with a component tag to stderr: "msb[vm] warn: message".
// Level from MSB_LOG (debug|info|warn|error; default warn for the CLI).
// Not a structured event log: the workload's own output goes to the sandbox log.
#pragma once

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

}  // namespace msb

#define MSB_LOG(level, component)                                  \
  if (::msb::LogLevel::level < ::msb::CurrentLogLevel()) {         \
  } else                                                           \
    ::msb::LogMessage(::msb::LogLevel::level, component).stream()
