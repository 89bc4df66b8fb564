// libFuzzer target for HttpClient::Do (image/http.h) reading from a real
// socket: the part http_response_fuzz.cc does not reach (its reads, the
// buffering between head and body, keep-alive, redirects, the body bound).
//
// Input: [flags u8] then up to kMaxSegments responses separated by kSplit.
// A server thread of the harness listens on 127.0.0.1 and answers the n-th
// connection that sends a request with the n-th segment, then shuts its write
// side and closes; connections beyond the segments are closed at once. Flags:
// bit 0 HEAD instead of GET, bit 1 stream the body to a callback instead of
// buffering it, bit 2 that callback fails after 100 bytes. Redirects to the
// same port reach the next segment. The whole process is in a network
// namespace of its own (fuzz/private_network.h), so a redirect to any other
// address fails there and never leaves the machine.
//
// Oracles: Do returns (an error or a response) and never crashes; a response
// has a three-digit status; a buffered body is at most max_buffered_body; a
// streamed body is no longer than the bytes the server sent; a callback's
// error is what Do returns; the response's URL is the listener's or, after a
// redirect, a clean URL.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/fd.h"
#include "fuzz/private_network.h"
#include "image/http.h"

namespace {

using namespace msb::image::http;
using msb::UniqueFd;

constexpr std::string_view kSplit = "\xff\xfeNEXT";
constexpr size_t kMaxSegments = kMaxRedirects + 2;
constexpr size_t kMaxBuffered = 4096;

[[noreturn]] void Die(const char* what, std::string_view detail = {}) {
  std::fprintf(stderr, "http_client_fuzz: %s\n%.*s\n", what, static_cast<int>(detail.size()), detail.data());
  std::abort();
}

void Check(bool cond, const char* what, std::string_view detail = {}) {
  if (!cond) Die(what, detail);
}

class Server {
 public:
  Server() {
    listener_ = UniqueFd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    Check(listener_.valid(), "socket");
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    Check(::bind(listener_.get(), reinterpret_cast<sockaddr*>(&a), sizeof a) == 0, "bind 127.0.0.1");
    Check(::listen(listener_.get(), 64) == 0, "listen");
    socklen_t len = sizeof a;
    Check(::getsockname(listener_.get(), reinterpret_cast<sockaddr*>(&a), &len) == 0, "getsockname");
    port_ = ntohs(a.sin_port);
    std::thread([this] { Serve(); }).detach();
  }

  uint16_t port() const { return port_; }

  // The responses of the next input; returns how many bytes they hold.
  size_t Load(std::string_view body) {
    std::lock_guard<std::mutex> lock(mu_);
    segments_.clear();
    next_ = 0;
    size_t total = 0;
    while (segments_.size() < kMaxSegments) {
      size_t at = body.find(kSplit);
      segments_.emplace_back(body.substr(0, at));
      total += segments_.back().size();
      if (at == std::string_view::npos) break;
      body.remove_prefix(at + kSplit.size());
    }
    return total;
  }

 private:
  void Serve() {
    for (;;) {
      UniqueFd c(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC));
      if (!c) continue;
      // The request first (GET and HEAD have no body): a connection the
      // client dropped before sending one takes no segment.
      if (!ReadRequestHead(c.get())) continue;
      std::string reply;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (next_ >= segments_.size()) continue;
        reply = segments_[next_++];
      }
      size_t off = 0;
      while (off < reply.size()) {
        ssize_t n = ::send(c.get(), reply.data() + off, reply.size() - off, MSG_NOSIGNAL);
        if (n <= 0) break;
        off += static_cast<size_t>(n);
      }
      ::shutdown(c.get(), SHUT_WR);
    }
  }

  static bool ReadRequestHead(int fd) {
    std::string head;
    char buf[4096];
    while (head.find("\r\n\r\n") == std::string::npos && head.size() < kMaxHeaderBytes) {
      // A TLS ClientHello (a redirect to https) gets the segment at once and
      // fails its handshake on it, instead of waiting for a blank line.
      if (!head.empty() && head[0] == '\x16') return true;
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 5000) <= 0) return false;
      ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) return false;
      head.append(buf, static_cast<size_t>(n));
    }
    return true;
  }

  UniqueFd listener_;
  uint16_t port_ = 0;
  std::mutex mu_;
  std::vector<std::string> segments_;
  size_t next_ = 0;
};

Server* g_server = nullptr;

void CheckCleanUrl(const Url& u) {
  Check(u.scheme == "http" || u.scheme == "https", "a response URL with another scheme", u.ToString());
  Check(!u.host.empty() && u.port != 0, "a response URL without host or port", u.ToString());
  Check(!u.target.empty() && u.target[0] == '/', "a response URL target not starting with /", u.ToString());
  for (char c : u.host + u.target) {
    auto b = static_cast<unsigned char>(c);
    Check(b > 0x20 && b != 0x7f, "a response URL with a control byte or space", u.ToString());
  }
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (!msb::fuzz::EnterPrivateNetwork()) {
    // Without a namespace of its own a redirect could reach other hosts.
    std::fprintf(stderr, "http_client_fuzz: cannot make a private network namespace\n");
    std::exit(1);
  }
  g_server = new Server();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  uint8_t flags = data[0];
  std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  size_t sent = g_server->Load(rest);

  ClientOptions options;
  options.policy = [](const std::string&) { return HostPolicy{.insecure = true}; };
  options.idle_timeout = std::chrono::milliseconds(2000);
  options.max_buffered_body = kMaxBuffered;
  HttpClient client(options);
  Request req;
  req.method = (flags & 1) != 0 ? "HEAD" : "GET";
  req.url = *ParseUrl("http://127.0.0.1:" + std::to_string(g_server->port()) + "/v2/x/blobs/sha256:0");

  size_t streamed = 0;
  bool fail_callback = (flags & 4) != 0;
  bool failed_on_purpose = false;
  BodyCallback on_body = [&](std::string_view bytes) -> msb::Status {
    streamed += bytes.size();
    if (fail_callback && streamed > 100) {
      failed_on_purpose = true;
      return msb::Error(msb::ErrorCode::kIo, "harness: body callback refuses");
    }
    return msb::OkStatus();
  };
  auto r = (flags & 2) != 0 ? client.Do(req, on_body) : client.Do(req);
  Check(streamed <= sent, "a streamed body longer than what the server sent");
  if (failed_on_purpose) {
    Check(!r.ok() && r.error().message().find("harness: body callback refuses") != std::string::npos,
          "Do did not return the body callback's error");
  }
  if (r.ok()) {
    Check(r->status >= 100 && r->status <= 999, "a status outside three digits", std::to_string(r->status));
    Check(r->body.size() <= kMaxBuffered, "a buffered body beyond max_buffered_body");
    Check(r->body.size() <= sent, "a buffered body longer than what the server sent");
    CheckCleanUrl(r->url);
  }
  return 0;
}
