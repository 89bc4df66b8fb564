// A network namespace of the fuzz target's own, with only lo, up: loopback
// flows reach the harness's sockets and nothing leaves the machine (any other
// address is unreachable there). Made at start-up by the targets that open
// real sockets (net_flow_fuzz, http_client_fuzz). As root a plain
// CLONE_NEWNET; otherwise inside a user namespace mapping the caller to root.
#pragma once

#include <net/if.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

#include "common/fd.h"

namespace msb::fuzz {

inline bool EnterPrivateNetwork() {
  if (::unshare(CLONE_NEWNET) != 0) {
    uid_t uid = ::getuid();
    gid_t gid = ::getgid();
    if (::unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0) return false;
    auto write = [](const char* path, const std::string& text) {
      FILE* f = std::fopen(path, "w");
      if (f == nullptr) return;
      std::fputs(text.c_str(), f);
      std::fclose(f);
    };
    write("/proc/self/setgroups", "deny");
    write("/proc/self/uid_map", "0 " + std::to_string(uid) + " 1");
    write("/proc/self/gid_map", "0 " + std::to_string(gid) + " 1");
  }
  UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  if (!s || ::ioctl(s.get(), SIOCGIFFLAGS, &ifr) != 0) return false;
  ifr.ifr_flags |= IFF_UP;
  return ::ioctl(s.get(), SIOCSIFFLAGS, &ifr) == 0;
}

}  // namespace msb::fuzz
