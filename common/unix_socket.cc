#include "common/unix_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "common/io.h"
#include "common/log.h"

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

Status SendWithFd(int sock, std::string_view bytes, int fd) {
  if (bytes.empty()) return Error(ErrorCode::kInvalidArgument, "SendWithFd: a descriptor needs at least one byte");
  iovec iov{const_cast<char*>(bytes.data()), bytes.size()};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  ssize_t n;
  do {
    n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return Error::FromErrno("sending a descriptor");
  // The descriptor went with the first byte; the rest is plain data.
  return WriteAll(sock, bytes.substr(static_cast<size_t>(n)));
}

Result<UniqueFd> ConnectUnix(const std::string& path, bool nonblocking) {
  MSB_TRY(sockaddr_un addr, Address(path));
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0));
  if (!fd) return Error::FromErrno("socket for " + path);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    return Error(ErrorCode::kUnavailable, "cannot connect to " + path + ": " + std::strerror(errno));
  }
  return fd;
}

Result<PeerCredentials> PeerCredentialsOf(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 || len != sizeof cred) {
    return Error::FromErrno("SO_PEERCRED");
  }
  return PeerCredentials{cred.pid, cred.uid, cred.gid};
}

bool PeerAllowed(const PeerCredentials& peer, uid_t owner) { return peer.uid == owner || peer.uid == 0; }

bool AdmitPeer(int fd, std::string_view what) {
  auto peer = PeerCredentialsOf(fd);
  const uid_t owner = ::geteuid();
  if (peer.ok() && PeerAllowed(*peer, owner)) return true;
  // Any local user may knock: what they cause in the log is bounded.
  static LogRateLimiter refusals;
  if (uint64_t held; refusals.Allow(std::string(what), &held)) {
    if (peer.ok()) {
      std::string who = owner == 0 ? "root" : "uid " + std::to_string(owner) + " or root";
      MSB_LOG(kWarn, "security") << "refused a connection to " << what << " from pid " << peer->pid << " uid "
                                 << peer->uid << " (only " << who << " may connect)" << HeldBackNote(held);
    } else {
      MSB_LOG(kWarn, "security") << "refused a connection to " << what << ": " << peer.error().message()
                                 << HeldBackNote(held);
    }
  }
  return false;
}

}  // namespace msb
