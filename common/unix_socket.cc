#include "common/unix_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace msb {
namespace {

Result<sockaddr_un> Address(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) {
    return Error(ErrorCode::kInvalidArgument, "socket path too long (" + std::to_string(path.size()) +
                                                  " bytes, at most " +
                                                  std::to_string(sizeof addr.sun_path - 1) + "): " + path +
                                                  "; choose a shorter MSB_HOME (or TMPDIR)");
  }
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

}  // namespace

Result<UniqueFd> ListenUnix(const std::string& path, bool nonblocking, int backlog) {
  MSB_TRY(sockaddr_un addr, Address(path));
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0));
  if (!fd) return Error::FromErrno("socket for " + path);
  ::unlink(path.c_str());
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return Error::FromErrno("bind " + path);
  }
  ::chmod(path.c_str(), 0600);
  if (::listen(fd.get(), backlog) != 0) return Error::FromErrno("listen " + path);
  return fd;
}

Result<UniqueFd> ConnectUnix(const std::string& path) {
  MSB_TRY(sockaddr_un addr, Address(path));
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return Error::FromErrno("socket for " + path);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return Error(ErrorCode::kUnavailable, "cannot connect to " + path + ": " + std::strerror(errno));
  }
  return fd;
}

}  // namespace msb
