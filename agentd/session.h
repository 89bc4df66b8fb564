// agentd's per-id state (one Session per live exec, workload or copy) and
// the timing constants the server and the session code share. Private to
// agentd: included only by server.cc and sessions.cc.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "agent/flow.h"
#include "agent/messages.h"
#include "common/fd.h"

namespace msb::agent {

// See the theory of operation in server.cc for what each one bounds.
inline constexpr auto kDrainGrace = std::chrono::milliseconds(200);
inline constexpr auto kKillGrace = std::chrono::milliseconds(2000);
inline constexpr auto kFinalFlush = std::chrono::milliseconds(2000);
inline constexpr size_t kMaxErrorText = 4096;  // error text kept per message

inline std::string Truncated(std::string s) {
  if (s.size() > kMaxErrorText) {
    s.resize(kMaxErrorText);
    s += "...";
  }
  return s;
}

enum class SessionKind : uint8_t { kExec = 0, kCopyIn = 1, kCopyOut = 2 };

// One live id. Owns the parent's ends of the child's stdio; the child itself
// is reaped by Server::Reap (exit is set then). Lives in Server::sessions_
// until its final frame has been queued.
struct Session {
  uint32_t id = 0;
  SessionKind kind = SessionKind::kExec;
  pid_t pid = -1;
  bool tty = false;
  UniqueFd in;   // to the child's stdin (pipe or pty master)
  UniqueFd out;  // child's stdout / pty master / tar output
  UniqueFd err;  // child's stderr
  UniqueFd start_status;  // exec: read once reaped (spawn.h ReadStartFailure)
  std::string pending;   // host bytes not yet written to `in`
  bool accepts_input = false;  // stdin pipe / pty / copy-in stream
  bool host_eof = false;       // empty kStdin / kData received
  ReceiveCredit recv;
  SendCredit send;
  std::optional<ExitInfo> exit;
  std::chrono::steady_clock::time_point last_progress{};
  std::string err_text;  // copy helpers: their stderr, for kResult

  bool streams_open() const { return out.valid() || err.valid(); }
};

}  // namespace msb::agent
