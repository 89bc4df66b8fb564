// Unix stream sockets by path: the listening end of the supervisor's, the
// network attachment's and the virtiofs sockets, the connecting end of their
// clients, and the peer check of the sockets other msb processes connect to.
// Not the protocols spoken over them.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>

#include "common/fd.h"
#include "common/result.h"

namespace msb {

// Listens at path (a stale socket file there is replaced), mode 0600. The fd
// is close-on-exec, and non-blocking when asked (then accept4 it with
// SOCK_NONBLOCK too). kInvalidArgument when the path does not fit sun_path.
Result<UniqueFd> ListenUnix(const std::string& path, bool nonblocking, int backlog);

// Connects to path; the fd is close-on-exec. Blocking unless nonblocking
// (then a full backlog is an error, EAGAIN, rather than a wait). The error
// is kUnavailable with the system's reason.
Result<UniqueFd> ConnectUnix(const std::string& path, bool nonblocking = false);

// Sends bytes on a connected blocking unix socket with a copy of fd attached
// (SCM_RIGHTS) to its first byte; bytes must not be empty. The receiver owns
// the copy; fd stays open here.
Status SendWithFd(int sock, std::string_view bytes, int fd);

// Who is at the other end of a connected unix socket (SO_PEERCRED: the
// credentials the peer had when it connected, or made the pair).
struct PeerCredentials {
  pid_t pid = 0;
  uid_t uid = 0;
  gid_t gid = 0;
};
Result<PeerCredentials> PeerCredentialsOf(int fd);

// The rule for sockets that CLIs and other msb processes connect to (a
// sandbox's control socket, a project's group-network sockets): only the
// uid that owns them (this process's effective uid) or root may talk to
// them. The sockets QEMU and virtiofsd use are not checked this way: their
// peer is the VM's own, unprivileged, uid.
bool PeerAllowed(const PeerCredentials& peer, uid_t owner);

// Applies PeerAllowed with owner = geteuid() to an accepted connection. A
// refusal (or a peer whose credentials cannot be read) returns false and is
// logged as "refused a connection to <what> from pid P uid U", at most a few
// lines per 10 s per `what`; the caller then closes fd. Called from one
// thread (the supervisor's event loop): the rate limit is process-wide.
bool AdmitPeer(int fd, std::string_view what);

}  // namespace msb
