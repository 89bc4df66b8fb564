// ConsoleCapture: see console_log.h.
#include "vm/console_log.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "common/log.h"
#include "common/unix_socket.h"

namespace msb::vm {
namespace {

constexpr size_t kReadChunk = 64 << 10;

}  // namespace

Result<std::unique_ptr<ConsoleCapture>> ConsoleCapture::Start(Dispatcher& dispatcher, const std::string& socket_path,
                                                              const std::string& log_path, uint64_t max_bytes) {
  MSB_TRY(RotatingLog log, RotatingLog::Open(log_path, max_bytes));
  std::unique_ptr<ConsoleCapture> c(new ConsoleCapture(dispatcher, socket_path, std::move(log)));
  MSB_TRY(c->listen_, ListenUnix(socket_path, true, 1));
  c->accept_ = dispatcher.WatchFd(c->listen_.get(), Dispatcher::kRead, [p = c.get()](short) { p->OnAccept(); });
  return c;
}

ConsoleCapture::~ConsoleCapture() {
  if (listen_) ::unlink(socket_path_.c_str());
}

void ConsoleCapture::OnAccept() {
  UniqueFd fd(::accept4(listen_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
  if (!fd || conn_) return;  // only QEMU connects here, once
  conn_ = std::move(fd);
  accept_.Reset();
  read_ = dispatcher_.WatchFd(conn_.get(), Dispatcher::kRead, [this](short) { OnReadable(); });
}

void ConsoleCapture::OnReadable() {
  char buf[kReadChunk];
  ssize_t n = ::read(conn_.get(), buf, sizeof buf);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  if (n <= 0) {
    read_.Reset();
    conn_.Reset();
    return;
  }
  Status st = log_.Append(std::string_view(buf, static_cast<size_t>(n)));
  if (!st.ok() && !write_failed_) {
    write_failed_ = true;  // said once; the console keeps being drained
    MSB_LOG(kWarn, "vm") << "the console is not logged: " << st.error().message();
  }
}

}  // namespace msb::vm
