// The supervisor's control socket: the CLI speaks the agent framing
// (agent/frame.h) to it. Exec, stdin, signal, resize, credit and copy frames
// are relayed to the guest under ids the supervisor assigns; these extra kinds
// are answered by the supervisor itself. Not reachable from the guest.
#pragma once

#include <cstdint>

#include "agent/protocol.h"

namespace msb::vm {

// Control-only frame kinds (id 0). Replies are kResult frames with JSON.
enum class ControlKind : uint8_t {
  kStatus = 64,  // -> {"state", "pid", "qemu_pid", "restarts", "health"?, "workload_exit"?}
  kStop = 65,    // {"timeout_ms":N} -> graceful stop; kResult when the VM is gone
  kUpdatePolicy = 66,  // vm/lifecycle_policy.h JSON -> applied in place; kResult
  kUpdateSecrets = 67,  // secrets/transfer.h text (new values, same names) -> applied in place; kResult
};

inline agent::FrameKind AsFrameKind(ControlKind k) { return static_cast<agent::FrameKind>(k); }

}  // namespace msb::vm
