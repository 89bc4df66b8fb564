// QMP over a stream socket: JSON objects separated by newlines.
#include "vm/qmp.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "common/log.h"

namespace msb::vm {

QmpClient::QmpClient(Dispatcher& dispatcher, UniqueFd fd,
                     std::function<void(const nlohmann::json&)> on_event,
                     std::function<void()> on_close)
    : dispatcher_(dispatcher),
      fd_(std::move(fd)),
      on_event_(std::move(on_event)),
      on_close_(std::move(on_close)) {
  watch_ = dispatcher_.WatchFd(fd_.get(), Dispatcher::kRead, [this](short) { OnReadable(); });
}

void QmpClient::Execute(const std::string& command, nlohmann::json arguments, Reply reply) {
  if (!fd_.valid()) {
    reply(Error(ErrorCode::kState, "QMP connection is closed"));
    return;
  }
  uint64_t id = next_id_++;
  nlohmann::json msg{{"execute", command}, {"id", id}};
  if (!arguments.is_null()) msg["arguments"] = std::move(arguments);
  pending_[id] = std::move(reply);
  if (!ready_) {
    queued_.push_back(msg.dump() + "\n");
    return;
  }
  out_ += msg.dump() + "\n";
  Flush();
}

void QmpClient::Flush() {
  // QMP messages are small; a blocking-ish write of the rest is acceptable, but
  // keep to non-blocking semantics and drop the connection on a full buffer.
  while (!out_.empty() && fd_.valid()) {
    ssize_t n = ::send(fd_.get(), out_.data(), out_.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return;  // retried on the next command; QEMU reads promptly
      Close();
      return;
    }
    out_.erase(0, static_cast<size_t>(n));
  }
}

void QmpClient::OnReadable() {
  char buf[8192];
  ssize_t n = ::recv(fd_.get(), buf, sizeof buf, MSG_DONTWAIT);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) {
    Close();
    return;
  }
  in_.append(buf, static_cast<size_t>(n));
  size_t pos;
  while ((pos = in_.find('\n')) != std::string::npos) {
    std::string line = in_.substr(0, pos);
    in_.erase(0, pos + 1);
    HandleLine(line);
    if (!fd_.valid()) return;
  }
  if (in_.size() > kMaxLine) {
    MSB_LOG(kWarn, "qmp") << "QMP line over " << kMaxLine << " bytes; closing";
    Close();
  }
}

void QmpClient::HandleLine(const std::string& line) {
  auto j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return;
  if (j.contains("QMP")) {
    out_ += nlohmann::json{{"execute", "qmp_capabilities"}, {"id", 0}}.dump() + "\n";
    Flush();
    return;
  }
  if (j.contains("event")) {
    if (on_event_) on_event_(j);
    return;
  }
  if (!j.contains("id") || !j["id"].is_number_unsigned()) return;
  uint64_t id = j["id"].get<uint64_t>();
  if (id == 0) {  // capabilities negotiated
    ready_ = true;
    for (auto& q : queued_) out_ += q;
    queued_.clear();
    Flush();
    return;
  }
  auto it = pending_.find(id);
  if (it == pending_.end()) return;
  Reply reply = std::move(it->second);
  pending_.erase(it);
  if (j.contains("error")) {
    std::string desc = j["error"].value("desc", std::string("unknown QMP error"));
    reply(Error(ErrorCode::kProtocol, "QEMU refused the command: " + desc));
  } else {
    reply(j.value("return", nlohmann::json::object()));
  }
}

void QmpClient::Close() {
  if (!fd_.valid()) return;
  watch_.Reset();
  fd_.Reset();
  auto pending = std::move(pending_);
  pending_.clear();
  for (auto& [id, reply] : pending) reply(Error(ErrorCode::kState, "QMP connection closed"));
  if (on_close_) on_close_();
}

}  // namespace msb::vm
