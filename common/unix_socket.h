// Unix stream sockets by path: the listening end of the supervisor's, the
// network attachment's and the virtiofs sockets, and the connecting end of
// their clients. Not the protocols spoken over them.
#pragma once

#include <string>

#include "common/fd.h"
#include "common/result.h"

namespace msb {

// Listens at path (a stale socket file there is replaced), mode 0600. The fd
// is close-on-exec, and non-blocking when asked (then accept4 it with
// SOCK_NONBLOCK too). kInvalidArgument when the path does not fit sun_path.
Result<UniqueFd> ListenUnix(const std::string& path, bool nonblocking, int backlog);

// Connects to path (blocking); the fd is close-on-exec. The error is
// kUnavailable with the system's reason.
Result<UniqueFd> ConnectUnix(const std::string& path);

}  // namespace msb
