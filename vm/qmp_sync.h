// QmpSync: a blocking QMP exchange on a connected monitor socket, for code
// that drives one QEMU step by step without an event loop (vm/template.cc's
// template build, vm/builder_vm.cc's restore). The supervisor's monitor is
// event-driven (vm/qmp.h). Everything QEMU sends is bounded: a line of at
// most 1 MiB, every wait by the deadline given at construction.
#pragma once

#include <chrono>
#include <string>

#include <nlohmann/json.hpp>

#include "common/result.h"

namespace msb::vm {

class QmpSync {
 public:
  using Clock = std::chrono::steady_clock;

  QmpSync(int fd, Clock::time_point deadline) : fd_(fd), deadline_(deadline) {}

  // Reads the greeting and enters command mode (qmp_capabilities).
  Status Handshake();

  // Sends the command (with `pass_fd` as SCM_RIGHTS when >= 0) and returns
  // its "return" value, or its "error" as an error. Events are skipped.
  Result<nlohmann::json> Call(const std::string& command, nlohmann::json arguments, int pass_fd = -1);

  // Reads until the event `name` (QEMU sends events only after Handshake).
  Status WaitForEvent(const std::string& name);

 private:
  // The next reply, or with `events` the next message of any kind.
  Result<nlohmann::json> NextMessage(bool events = false);

  int fd_;
  Clock::time_point deadline_;
  std::string in_;
};

}  // namespace msb::vm
