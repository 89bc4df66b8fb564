// QmpClient: the supervisor's side of QEMU's QMP monitor on a connected unix
// socket, driven by the Dispatcher. Sends qmp_capabilities on the greeting,
// matches replies to commands by "id", passes events to a callback. Not a
// general QMP library: only what the supervisor uses (status, powerdown, quit).
#pragma once

#include <nlohmann/json.hpp>

#include <functional>
#include <map>
#include <string>

#include "common/dispatcher.h"
#include "common/fd.h"
#include "common/result.h"

namespace msb::vm {

class QmpClient {
 public:
  using Reply = std::function<void(Result<nlohmann::json>)>;
  // Takes ownership of fd. `dispatcher` must outlive this object.
  QmpClient(Dispatcher& dispatcher, UniqueFd fd, std::function<void(const nlohmann::json&)> on_event,
            std::function<void()> on_close);

  void Execute(const std::string& command, nlohmann::json arguments, Reply reply);
  bool connected() const { return fd_.valid(); }

  // Parses one QMP line; exposed for tests.
  static constexpr size_t kMaxLine = 1 << 20;

 private:
  void OnReadable();
  void HandleLine(const std::string& line);
  void Flush();
  void Close();

  Dispatcher& dispatcher_;
  UniqueFd fd_;
  EventHandle watch_;
  std::string in_;
  std::string out_;
  bool ready_ = false;  // qmp_capabilities answered
  uint64_t next_id_ = 1;
  std::map<uint64_t, Reply> pending_;
  std::vector<std::string> queued_;  // commands sent before the handshake finished
  std::function<void(const nlohmann::json&)> on_event_;
  std::function<void()> on_close_;
};

}  // namespace msb::vm
