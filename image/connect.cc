// c-ares lookups and the Happy Eyeballs connect race; see connect.h.
#include "image/connect.h"

#include <arpa/inet.h>
#include <ares.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>

#include <algorithm>
#include <cstring>
#include <iterator>

#include "common/log.h"

namespace msb::image::http {
namespace {

using Clock = std::chrono::steady_clock;

struct AresLib {
  AresLib() { ares_library_init(ARES_LIB_INIT_ALL); }
};

struct LookupState {
  int status = -1;
  std::vector<Address> addrs;
};

void OnAddrInfo(void* arg, int status, int /*timeouts*/, ares_addrinfo* res) {
  auto* st = static_cast<LookupState*>(arg);
  st->status = status;
  if (status == ARES_SUCCESS && res != nullptr) {
    for (ares_addrinfo_node* n = res->nodes; n != nullptr; n = n->ai_next) {
      if (n->ai_addrlen > sizeof(sockaddr_storage)) continue;
      Address a;
      std::memcpy(&a.ss, n->ai_addr, n->ai_addrlen);
      a.len = n->ai_addrlen;
      st->addrs.push_back(a);
    }
  }
  if (res != nullptr) ares_freeaddrinfo(res);
}

int MillisLeft(Clock::time_point until) {
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(ms, 0, 1 << 30));
}

}  // namespace

const char* ToString(ConnectEventKind kind) {
  static constexpr const char* kNames[] = {"attempt", "failed", "connected", "abandoned"};
  static_assert(std::size(kNames) == static_cast<size_t>(ConnectEventKind::kAbandoned) + 1);
  return kNames[static_cast<int>(kind)];
}

std::string Address::Text() const {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (ss.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr, buf, sizeof buf);
  } else if (ss.ss_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr, buf, sizeof buf);
  }
  return buf;
}

Result<std::vector<Address>> Resolve(const std::string& host, uint16_t port, Clock::time_point deadline) {
  static AresLib lib;
  ares_channel channel = nullptr;
  if (ares_init(&channel) != ARES_SUCCESS) {
    return Error(ErrorCode::kUnavailable, "cannot start the DNS resolver (c-ares) to look up " + host);
  }
  LookupState st;
  ares_addrinfo_hints hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = ARES_AI_ENVHOSTS;  // $CARES_HOSTS, when set, replaces /etc/hosts
  std::string port_s = std::to_string(port);
  ares_getaddrinfo(channel, host.c_str(), port_s.c_str(), &hints, &OnAddrInfo, &st);
  while (st.status < 0) {
    ares_socket_t socks[ARES_GETSOCK_MAXNUM];
    int mask = ares_getsock(channel, socks, ARES_GETSOCK_MAXNUM);
    std::vector<pollfd> pfds;
    for (int i = 0; i < ARES_GETSOCK_MAXNUM; ++i) {
      short ev = 0;
      if (ARES_GETSOCK_READABLE(mask, i)) ev |= POLLIN;
      if (ARES_GETSOCK_WRITABLE(mask, i)) ev |= POLLOUT;
      if (ev != 0) pfds.push_back({socks[i], ev, 0});
    }
    int left = MillisLeft(deadline);
    if (left <= 0) break;
    timeval tv{};
    timeval* tvp = ares_timeout(channel, nullptr, &tv);
    int wait = left;
    if (tvp != nullptr) wait = std::min<int>(wait, static_cast<int>(tvp->tv_sec * 1000 + tvp->tv_usec / 1000) + 1);
    int n = ::poll(pfds.data(), pfds.size(), wait);
    if (n < 0 && errno != EINTR) break;
    if (n <= 0) {
      ares_process_fd(channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
      continue;
    }
    for (auto& p : pfds) {
      ares_process_fd(channel, (p.revents & (POLLIN | POLLERR | POLLHUP)) ? p.fd : ARES_SOCKET_BAD,
                      (p.revents & POLLOUT) ? p.fd : ARES_SOCKET_BAD);
    }
  }
  bool timed_out = st.status < 0;
  ares_destroy(channel);  // completes a pending query with ARES_EDESTRUCTION
  if (timed_out) return Error(ErrorCode::kTimeout, "looking up " + host + " timed out");
  if (st.status != ARES_SUCCESS || st.addrs.empty()) {
    return Error(ErrorCode::kNotFound, "cannot resolve host " + host + ": " + ares_strerror(st.status) +
                                           "; check the registry name");
  }
  return std::move(st.addrs);
}

std::vector<Address> OrderForRace(std::vector<Address> addrs) {
  std::vector<Address> v6, v4, out;
  for (auto& a : addrs) (a.family() == AF_INET6 ? v6 : v4).push_back(a);
  out.reserve(addrs.size());
  for (size_t i = 0; i < std::max(v6.size(), v4.size()); ++i) {
    if (i < v6.size()) out.push_back(v6[i]);
    if (i < v4.size()) out.push_back(v4[i]);
  }
  return out;
}

Result<UniqueFd> RaceConnect(const std::vector<Address>& addrs, const std::string& host_port,
                             Clock::time_point deadline, const ConnectObserver& observe,
                             std::chrono::milliseconds attempt_delay) {
  struct Attempt {
    UniqueFd fd;
    std::string address;
  };
  auto emit = [&](ConnectEventKind kind, const std::string& address, const std::string& detail) {
    MSB_LOG(kDebug, "http") << "connect " << host_port << " via " << address << ": " << ToString(kind)
                            << (detail.empty() ? "" : " (" + detail + ")");
    if (observe) observe(ConnectEvent{kind, address, detail});
  };
  Error last(ErrorCode::kIo, "cannot connect to " + host_port);
  std::vector<Attempt> pending;
  size_t next = 0;
  Clock::time_point next_start = Clock::now();
  auto fail = [&](const std::string& address, int err) {
    emit(ConnectEventKind::kFailed, address, std::strerror(err));
    last = Error(ErrorCode::kIo,
                 "cannot connect to " + host_port + " (" + address + "): " + std::strerror(err) +
                     (err == ECONNREFUSED ? "; is the registry running and is the port right?" : ""),
                 err);
    next_start = Clock::now();  // RFC 8305 §5: a failure starts the next attempt at once
  };
  auto win = [&](size_t i) -> UniqueFd {
    UniqueFd fd = std::move(pending[i].fd);
    emit(ConnectEventKind::kConnected, pending[i].address, "");
    for (size_t j = 0; j < pending.size(); ++j) {
      if (j != i) emit(ConnectEventKind::kAbandoned, pending[j].address, "");
    }
    pending.clear();  // closes the others
    int one = 1;
    setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
  };
  for (;;) {
    if (next < addrs.size() && (pending.empty() || Clock::now() >= next_start)) {
      const Address& a = addrs[next++];
      std::string text = a.Text();
      UniqueFd fd(::socket(a.family(), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
      if (!fd) return Error::FromErrno("socket");
      emit(ConnectEventKind::kAttempt, text, "");
      int r = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&a.ss), a.len);
      if (r < 0 && errno != EINPROGRESS) {
        fail(text, errno);
        continue;
      }
      pending.push_back(Attempt{std::move(fd), text});
      if (r == 0) return win(pending.size() - 1);
      next_start = Clock::now() + attempt_delay;
      continue;
    }
    if (pending.empty()) return last;  // every address failed
    if (Clock::now() >= deadline) {
      for (const auto& p : pending) emit(ConnectEventKind::kAbandoned, p.address, "timed out");
      return Error(ErrorCode::kTimeout, "connecting to " + host_port + " timed out: no address of it answered");
    }
    std::vector<pollfd> pfds;
    for (const auto& p : pending) pfds.push_back({p.fd.get(), POLLOUT, 0});
    int wait = MillisLeft(deadline);
    if (next < addrs.size()) wait = std::min(wait, MillisLeft(next_start));
    int n = ::poll(pfds.data(), pfds.size(), wait);
    if (n < 0 && errno != EINTR) return Error::FromErrno("poll while connecting to " + host_port);
    if (n <= 0) continue;
    // Settle every finished attempt; the first in order that succeeded wins.
    std::vector<int> errs(pfds.size(), -1);
    for (size_t i = 0; i < pfds.size(); ++i) {
      if (pfds[i].revents == 0) continue;
      int soerr = 0;
      socklen_t len = sizeof soerr;
      getsockopt(pending[i].fd.get(), SOL_SOCKET, SO_ERROR, &soerr, &len);  // reading clears it
      if (soerr == 0) return win(i);
      errs[i] = soerr;
    }
    for (size_t i = pfds.size(); i-- > 0;) {
      if (errs[i] < 0) continue;
      fail(pending[i].address, errs[i]);
      pending.erase(pending.begin() + static_cast<std::ptrdiff_t>(i));
    }
  }
}

Result<UniqueFd> ConnectTcp(const std::string& host, uint16_t port, const std::string& host_port,
                            std::chrono::milliseconds timeout) {
  auto deadline = Clock::now() + timeout;
  MSB_TRY(std::vector<Address> addrs, Resolve(host, port, deadline));
  return RaceConnect(OrderForRace(std::move(addrs)), host_port, deadline);
}

}  // namespace msb::image::http
