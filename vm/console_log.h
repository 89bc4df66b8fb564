// ConsoleCapture: the guest's serial console, taken from QEMU's socket
// chardev (the supervisor listens, QEMU connects once at start) and written
// to console.log through a RotatingLog, so a guest printing without end costs
// the host at most two generations of the bound. Not a terminal: nothing here
// is printed; vm/guest_text.h escapes what an error message quotes.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "common/dispatcher.h"
#include "common/fd.h"
#include "common/result.h"
#include "vm/log_file.h"

namespace msb::vm {

// Owns the listening socket, the one accepted connection and the log; must
// outlive nothing (it unregisters its events when destroyed) and lives on the
// dispatcher's thread. A read that fills the log past the bound rotates it.
class ConsoleCapture {
 public:
  // Listens on socket_path (replacing a stale one); the log is appended to.
  static Result<std::unique_ptr<ConsoleCapture>> Start(Dispatcher& dispatcher, const std::string& socket_path,
                                                       const std::string& log_path, uint64_t max_bytes);
  ~ConsoleCapture();
  ConsoleCapture(const ConsoleCapture&) = delete;
  ConsoleCapture& operator=(const ConsoleCapture&) = delete;

 private:
  ConsoleCapture(Dispatcher& dispatcher, std::string socket_path, RotatingLog log)
      : dispatcher_(dispatcher), socket_path_(std::move(socket_path)), log_(std::move(log)) {}
  void OnAccept();
  void OnReadable();

  Dispatcher& dispatcher_;
  std::string socket_path_;
  RotatingLog log_;
  UniqueFd listen_, conn_;
  EventHandle accept_, read_;
  bool write_failed_ = false;
};

}  // namespace msb::vm
