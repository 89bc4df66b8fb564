// Names to connected TCP sockets for the registry client (image/http.h): the
// lookup through c-ares, then Happy Eyeballs (RFC 8305) over the addresses.
// Not TLS, not proxies (image/proxy.h), not the event loop: it blocks the
// calling thread with poll() deadlines, like the rest of image/http.cc.
//
// Theory of operation. Resolve() asks c-ares for every address of a name
// (AF_UNSPEC; /etc/hosts first, or the file $CARES_HOSTS names, then DNS) and waits for both families, so the
// RFC 8305 §3 resolution delay does not arise. OrderForRace() keeps the
// resolver's RFC 6724 order within each family and interleaves the families
// starting with IPv6 (RFC 8305 §4, "First Address Family Count" 1).
// RaceConnect() then starts one non-blocking connect, and the next one
// kAttemptDelay later or as soon as the running ones all failed, whichever
// comes first (§5). The first socket to finish its handshake wins; every other
// attempt still pending is closed. A name with one address is one plain
// connect. The whole race is bounded by the caller's deadline (kConnectTimeout
// in image/http.h); an address that never answers costs kAttemptDelay, not the
// deadline, as long as another one answers.
//
// Events (ConnectEvent) go to an observer, for tests, and to the debug log
// ("msb[http] debug: ...") without anything beyond the address.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/fd.h"
#include "common/result.h"

namespace msb::image::http {

inline constexpr std::chrono::milliseconds kAttemptDelay{250};

struct Address {
  sockaddr_storage ss{};
  socklen_t len = 0;
  int family() const { return ss.ss_family; }
  // "192.0.2.1" or "2001:db8::1" (no port).
  std::string Text() const;
};

// The addresses of host (a name or an IP literal) for port, in the resolver's
// order. Errors say the name could not be resolved or the lookup timed out.
Result<std::vector<Address>> Resolve(const std::string& host, uint16_t port,
                                     std::chrono::steady_clock::time_point deadline);

// RFC 8305 §4: IPv6 first, then alternating families, each family in its
// given order. Pure.
std::vector<Address> OrderForRace(std::vector<Address> addrs);

enum class ConnectEventKind : int {
  kAttempt = 0,    // a connect to address started
  kFailed = 1,     // that connect failed (detail: why)
  kConnected = 2,  // that connect won the race
  kAbandoned = 3,  // that connect was still pending when another won; closed
};
const char* ToString(ConnectEventKind kind);

struct ConnectEvent {
  ConnectEventKind kind;
  std::string address;
  std::string detail;
};
using ConnectObserver = std::function<void(const ConnectEvent&)>;

// Races connects to addrs (already ordered) as described above. host_port
// names the destination in errors ("reg.internal:443"). The returned socket
// is non-blocking with TCP_NODELAY.
Result<UniqueFd> RaceConnect(const std::vector<Address>& addrs, const std::string& host_port,
                             std::chrono::steady_clock::time_point deadline,
                             const ConnectObserver& observe = nullptr,
                             std::chrono::milliseconds attempt_delay = kAttemptDelay);

// Resolve, OrderForRace and RaceConnect within timeout.
Result<UniqueFd> ConnectTcp(const std::string& host, uint16_t port, const std::string& host_port,
                            std::chrono::milliseconds timeout);

}  // namespace msb::image::http
