// Log sink: one write(2) per line so lines from several processes don't interleave.
#include "common/log.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace msb {
namespace {

LogLevel LevelFromEnv() {
  const char* v = std::getenv("MSB_LOG");
  if (v == nullptr) return LogLevel::kWarn;
  if (std::strcmp(v, "debug") == 0) return LogLevel::kDebug;
  if (std::strcmp(v, "info") == 0) return LogLevel::kInfo;
  if (std::strcmp(v, "error") == 0) return LogLevel::kError;
  return LogLevel::kWarn;
}

std::atomic<int> g_level{-1};
std::atomic<int> g_fd{2};
std::atomic<bool> g_timestamps{false};

}  // namespace

const char* ToString(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kError: return "error";
  }
  return "?";
}

LogLevel CurrentLogLevel() {
  int v = g_level.load();
  if (v < 0) {
    v = static_cast<int>(LevelFromEnv());
    g_level.store(v);
  }
  return static_cast<LogLevel>(v);
}

void SetLogLevel(LogLevel level) { g_level.store(static_cast<int>(level)); }
void SetLogFd(int fd) { g_fd.store(fd); }
void SetLogTimestamps(bool on) { g_timestamps.store(on); }

void LogLine(LogLevel level, std::string_view component, std::string_view message) {
  std::string line;
  if (g_fd.load() != 2 || g_timestamps.load()) {  // files get a timestamp; the terminal does not
    // Milliseconds: lines of two supervisors' logs can be ordered.
    struct timespec now;
    ::clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm_buf;
    char ts[48];
    size_t n = std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", gmtime_r(&now.tv_sec, &tm_buf));
    std::snprintf(ts + n, sizeof ts - n, ".%03ldZ ", now.tv_nsec / 1000000);
    line += ts;
  }
  line += "msb[";
  line += component;
  line += "] ";
  line += ToString(level);
  line += ": ";
  line += message;
  line += '\n';
  ssize_t unused = ::write(g_fd.load(), line.data(), line.size());
  (void)unused;
}

bool LogRateLimiter::Allow(const std::string& key, Clock::time_point now, uint64_t* held) {
  State& st = keys_[key];
  if (!st.started || now - st.window_start >= interval_) {
    st.window_start = now;
    st.started = true;
    st.lines = 0;
  }
  if (st.lines >= burst_) {
    ++st.held;
    return false;
  }
  ++st.lines;
  *held = st.held;
  st.held = 0;
  return true;
}

std::string HeldBackNote(uint64_t held) {
  return held > 0 ? " (" + std::to_string(held) + " more like it not logged)" : "";
}

}  // namespace msb
