// A blocking QMP exchange (qmp_sync.h).
#include "vm/qmp_sync.h"

#include <errno.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>

#include "common/io.h"
#include "common/unix_socket.h"
#include "vm/guest_text.h"

namespace msb::vm {

using nlohmann::json;

Status QmpSync::Handshake() {
  MSB_TRY(json greeting, NextMessage());
  if (!greeting.contains("QMP")) return Error(ErrorCode::kProtocol, "QEMU's monitor sent no greeting");
  MSB_TRY_STATUS(Call("qmp_capabilities", nullptr));
  return OkStatus();
}

Result<json> QmpSync::Call(const std::string& command, json arguments, int pass_fd) {
  json cmd{{"execute", command}};
  if (!arguments.is_null()) cmd["arguments"] = std::move(arguments);
  std::string line = cmd.dump() + "\n";
  Status sent = pass_fd >= 0 ? SendWithFd(fd_, line, pass_fd) : WriteAll(fd_, line);
  if (!sent.ok()) return sent.error().Wrap("sending " + command + " to QEMU");
  for (;;) {
    MSB_TRY(json reply, NextMessage());
    if (reply.contains("return")) return reply["return"];
    if (reply.contains("error")) {
      std::string desc = reply["error"].is_object() ? reply["error"].value("desc", std::string("?")) : "?";
      return Error(ErrorCode::kUnavailable, "QEMU refused " + command + ": " + BoundedGuestText(desc));
    }
  }
}

Status QmpSync::WaitForEvent(const std::string& name) {
  for (;;) {
    MSB_TRY(json m, NextMessage(true));
    if (m.contains("event") && m["event"] == name) return OkStatus();
  }
}

Result<json> QmpSync::NextMessage(bool events) {
  for (;;) {
    if (size_t nl = in_.find('\n'); nl != std::string::npos) {
      json j = json::parse(in_.substr(0, nl), nullptr, false);
      in_.erase(0, nl + 1);
      if (j.is_discarded() || !j.is_object()) return Error(ErrorCode::kProtocol, "QEMU's monitor sent malformed JSON");
      if (j.contains("event") && !events) continue;
      return j;
    }
    if (in_.size() > (1u << 20)) return Error(ErrorCode::kProtocol, "QEMU's monitor sent an overlong line");
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline_ - Clock::now()).count();
    if (left <= 0) return Error(ErrorCode::kTimeout, "QEMU's monitor did not answer in time");
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 60000))) < 0 && errno != EINTR)
      return Error::FromErrno("poll");
    if (p.revents == 0) continue;
    char buf[4096];
    ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return Error(ErrorCode::kUnavailable, "QEMU closed its monitor");
    in_.append(buf, static_cast<size_t>(n));
  }
}

}  // namespace msb::vm
