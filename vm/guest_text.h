// Guest output quoted in a host message: the console log and QEMU's own log
// of a VM, and text the guest sent. The guest is hostile, so what reaches a
// terminal or an error message is bounded and has its control bytes replaced.
// Not the workload's log (vm/supervisor.h writes that as JSON lines).
#pragma once

#include <string>
#include <string_view>

namespace msb::vm {

// Guest text for an error message: control bytes replaced, at most 2000 bytes.
std::string BoundedGuestText(std::string_view text);

// The last `lines` lines of the log at path, control bytes replaced, at most
// the last 2000 bytes of them (after "..."); it reads only the file's last
// 16 KiB however large the guest made it. "" when the file is missing or empty.
std::string GuestLogTail(const std::string& path, int lines);

}  // namespace msb::vm
