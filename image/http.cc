// HTTP/1.1 over non-blocking sockets driven by poll() deadlines; OpenSSL for
// TLS, c-ares for names. See http.h for the theory of operation.
#include "image/http.h"

#include <arpa/inet.h>
#include <ares.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>

#include "common/c_ptr.h"
#include "common/fd.h"
#include "common/log.h"

namespace msb::image::http {
namespace {

using Clock = std::chrono::steady_clock;

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

bool IsIpLiteral(const std::string& host) {
  in6_addr a6;
  in_addr a4;
  return inet_pton(AF_INET, host.c_str(), &a4) == 1 || inet_pton(AF_INET6, host.c_str(), &a6) == 1;
}

std::string OpensslErrors() {
  std::string out;
  unsigned long e;
  while ((e = ERR_get_error()) != 0) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown TLS error" : out;
}

// --- DNS through c-ares ---------------------------------------------------

struct AresLib {
  AresLib() { ares_library_init(ARES_LIB_INIT_ALL); }
};

struct LookupState {
  int status = -1;
  std::vector<sockaddr_storage> addrs;
  std::vector<socklen_t> lens;
};

void OnAddrInfo(void* arg, int status, int /*timeouts*/, ares_addrinfo* res) {
  auto* st = static_cast<LookupState*>(arg);
  st->status = status;
  if (status == ARES_SUCCESS && res != nullptr) {
    for (ares_addrinfo_node* n = res->nodes; n != nullptr; n = n->ai_next) {
      if (n->ai_addrlen > sizeof(sockaddr_storage)) continue;
      sockaddr_storage ss{};
      std::memcpy(&ss, n->ai_addr, n->ai_addrlen);
      st->addrs.push_back(ss);
      st->lens.push_back(n->ai_addrlen);
    }
  }
  if (res != nullptr) ares_freeaddrinfo(res);
}

Result<LookupState> Resolve(const std::string& host, uint16_t port, Clock::time_point deadline) {
  static AresLib lib;
  ares_channel channel = nullptr;
  if (ares_init(&channel) != ARES_SUCCESS) {
    return Error(ErrorCode::kUnavailable, "cannot start the DNS resolver (c-ares) to look up " + host);
  }
  LookupState st;
  ares_addrinfo_hints hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
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
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) break;
    timeval tv{};
    timeval* tvp = ares_timeout(channel, nullptr, &tv);
    int wait = static_cast<int>(left);
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
  return st;
}

// --- Connections ------------------------------------------------------------

// One TCP (optionally TLS) connection with a read buffer. Owned by one
// request at a time; idle ones sit in the pool.
class Conn {
 public:
  std::string key;
  UniqueFd fd;
  SslPtr ssl;
  std::string host_port;
  std::string inbuf;
  size_t inpos = 0;
  bool reused = false;

  Status WriteAll(std::string_view data, std::chrono::milliseconds idle) {
    while (!data.empty()) {
      ssize_t n;
      if (ssl) {
        ERR_clear_error();
        int r = SSL_write(ssl.get(), data.data(), static_cast<int>(std::min<size_t>(data.size(), 1 << 20)));
        if (r <= 0) {
          int err = SSL_get_error(ssl.get(), r);
          if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
            MSB_TRY_STATUS(Wait(err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, idle));
            continue;
          }
          return Error(ErrorCode::kIo, "sending to " + host_port + " failed: " + OpensslErrors(), EPIPE);
        }
        n = r;
      } else {
        n = ::send(fd.get(), data.data(), data.size(), MSG_NOSIGNAL);
        if (n < 0) {
          if (errno == EINTR) continue;
          if (errno == EAGAIN || errno == EWOULDBLOCK) {
            MSB_TRY_STATUS(Wait(POLLOUT, idle));
            continue;
          }
          return Error::FromErrno("sending to " + host_port + " failed");
        }
      }
      data.remove_prefix(static_cast<size_t>(n));
    }
    return OkStatus();
  }

  // Appends what is available (at least one byte) to inbuf; 0 at EOF.
  Result<size_t> Fill(std::chrono::milliseconds idle) {
    if (inpos > 0 && inpos == inbuf.size()) {
      inbuf.clear();
      inpos = 0;
    } else if (inpos > (1 << 20)) {
      inbuf.erase(0, inpos);
      inpos = 0;
    }
    char buf[64 << 10];
    for (;;) {
      ssize_t n;
      if (ssl) {
        ERR_clear_error();
        int r = SSL_read(ssl.get(), buf, sizeof buf);
        if (r <= 0) {
          int err = SSL_get_error(ssl.get(), r);
          if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
            MSB_TRY_STATUS(Wait(err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, idle));
            continue;
          }
          if (err == SSL_ERROR_ZERO_RETURN) return size_t{0};
          if (err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) return size_t{0};  // EOF without close_notify
          return Error(ErrorCode::kIo, "reading from " + host_port + " failed: " + OpensslErrors(), ECONNRESET);
        }
        n = r;
      } else {
        n = ::recv(fd.get(), buf, sizeof buf, 0);
        if (n < 0) {
          if (errno == EINTR) continue;
          if (errno == EAGAIN || errno == EWOULDBLOCK) {
            MSB_TRY_STATUS(Wait(POLLIN, idle));
            continue;
          }
          return Error::FromErrno("reading from " + host_port + " failed");
        }
      }
      inbuf.append(buf, static_cast<size_t>(n));
      return static_cast<size_t>(n);
    }
  }

  Status Wait(short events, std::chrono::milliseconds idle) {
    pollfd p{fd.get(), events, 0};
    for (;;) {
      int n = ::poll(&p, 1, static_cast<int>(idle.count()));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return Error::FromErrno("waiting for " + host_port);
      if (n == 0) {
        return Error(ErrorCode::kTimeout, host_port + " did not answer within " +
                                              std::to_string(idle.count() / 1000) + " s");
      }
      return OkStatus();
    }
  }

  // A pooled connection the server closed: readable at EOF.
  bool LooksClosed() {
    if (inpos < inbuf.size()) return true;  // stray bytes: unusable
    pollfd p{fd.get(), POLLIN, 0};
    return ::poll(&p, 1, 0) != 0;
  }
};

std::string AddrText(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = "?";
  if (ss.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr, buf, sizeof buf);
  } else if (ss.ss_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr, buf, sizeof buf);
  }
  return buf;
}

Result<UniqueFd> ConnectTcp(const Url& url, const std::string& host_port) {
  auto deadline = Clock::now() + kConnectTimeout;
  MSB_TRY(LookupState st, Resolve(url.host, url.port, deadline));
  Error last(ErrorCode::kIo, "cannot connect to " + host_port);
  for (size_t i = 0; i < st.addrs.size(); ++i) {
    UniqueFd fd(::socket(st.addrs[i].ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) return Error::FromErrno("socket");
    int r = ::connect(fd.get(), reinterpret_cast<const sockaddr*>(&st.addrs[i]), st.lens[i]);
    if (r < 0 && errno != EINPROGRESS) {
      last = Error::FromErrno("cannot connect to " + host_port + " (" + AddrText(st.addrs[i]) + ")");
      continue;
    }
    if (r < 0) {
      pollfd p{fd.get(), POLLOUT, 0};
      int left = static_cast<int>(
          std::max<int64_t>(0, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count()));
      int n;
      do {
        n = ::poll(&p, 1, left);
      } while (n < 0 && errno == EINTR);
      if (n == 0) {
        last = Error(ErrorCode::kTimeout, "connecting to " + host_port + " timed out after " +
                                              std::to_string(kConnectTimeout.count()) + " s");
        continue;
      }
      int soerr = 0;
      socklen_t len = sizeof soerr;
      getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &soerr, &len);
      if (soerr != 0) {
        last = Error(ErrorCode::kIo,
                     "cannot connect to " + host_port + ": " + std::strerror(soerr) +
                         (soerr == ECONNREFUSED ? "; is the registry running and is the port right?" : ""),
                     soerr);
        continue;
      }
    }
    int one = 1;
    setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
  }
  return last;
}

struct ReadHeadResult {
  int status = 0;
  std::string reason;
  Headers headers;
};

}  // namespace

// --- URL ---------------------------------------------------------------------

std::string Url::Authority() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  if ((scheme == "https" && port == 443) || (scheme == "http" && port == 80)) return h;
  return h + ":" + std::to_string(port);
}

std::string Url::ToString() const { return scheme + "://" + Authority() + target; }

Result<Url> ParseUrl(std::string_view text) {
  Url u;
  size_t sep = text.find("://");
  if (sep == std::string_view::npos) return Error(ErrorCode::kInvalidArgument, "not an absolute URL: " + std::string(text));
  u.scheme = Lower(text.substr(0, sep));
  if (u.scheme != "http" && u.scheme != "https") {
    return Error(ErrorCode::kInvalidArgument, "unsupported URL scheme in " + std::string(text.substr(0, 200)));
  }
  std::string_view rest = text.substr(sep + 3);
  size_t slash = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, slash);
  std::string_view target = slash == std::string_view::npos ? std::string_view("/") : rest.substr(slash);
  if (size_t hash = target.find('#'); hash != std::string_view::npos) target = target.substr(0, hash);
  u.target = target.empty() || target[0] != '/' ? "/" + std::string(target) : std::string(target);
  if (authority.find('@') != std::string_view::npos) {
    return Error(ErrorCode::kInvalidArgument, "URLs with user info are not supported: " + std::string(text.substr(0, 200)));
  }
  std::string_view port_s;
  if (!authority.empty() && authority[0] == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return Error(ErrorCode::kInvalidArgument, "bad IPv6 host in URL");
    u.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return Error(ErrorCode::kInvalidArgument, "bad URL authority " + std::string(authority));
      port_s = after.substr(1);
    }
  } else {
    size_t colon = authority.rfind(':');
    u.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port_s = authority.substr(colon + 1);
  }
  if (u.host.empty()) return Error(ErrorCode::kInvalidArgument, "URL has no host: " + std::string(text.substr(0, 200)));
  u.host = Lower(u.host);
  if (port_s.empty()) {
    u.port = u.scheme == "https" ? 443 : 80;
  } else {
    unsigned p = 0;
    for (char c : port_s) {
      if (c < '0' || c > '9' || p > 65535) return Error(ErrorCode::kInvalidArgument, "bad port in URL");
      p = p * 10 + static_cast<unsigned>(c - '0');
    }
    if (p == 0 || p > 65535) return Error(ErrorCode::kInvalidArgument, "bad port in URL");
    u.port = static_cast<uint16_t>(p);
  }
  for (char c : u.target) {
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) return Error(ErrorCode::kInvalidArgument, "URL path has control characters or spaces");
  }
  return u;
}

Result<Url> ResolveUrl(const Url& base, std::string_view location) {
  location = Trim(location);
  if (location.find("://") != std::string_view::npos) return ParseUrl(location);
  if (location.substr(0, 2) == "//") return ParseUrl(base.scheme + ":" + std::string(location));
  Url u = base;
  if (!location.empty() && location[0] == '/') {
    u.target = std::string(location);
  } else {
    std::string dir = base.target.substr(0, base.target.find('?'));
    dir = dir.substr(0, dir.rfind('/') + 1);
    u.target = dir + std::string(location);
  }
  return ParseUrl(u.ToString());
}

std::string Response::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (k == name) return v;
  }
  return "";
}

// --- Chunked decoding ----------------------------------------------------------

Result<size_t> ChunkedDecoder::Feed(std::string_view in, const BodyCallback& out) {
  size_t used = 0;
  auto take_line = [&](std::string* line) -> bool {
    while (used < in.size()) {
      char c = in[used++];
      if (c == '\n') {
        if (!line->empty() && line->back() == '\r') line->pop_back();
        return true;
      }
      if (line->size() >= 4096) return false;
      line->push_back(c);
    }
    return false;
  };
  while (used < in.size() && state_ != State::kDone) {
    switch (state_) {
      case State::kSize: {
        if (!take_line(&line_)) {
          if (line_.size() >= 4096) return Error(ErrorCode::kProtocol, "chunk size line too long");
          return used;
        }
        std::string_view l = line_;
        if (size_t semi = l.find(';'); semi != std::string_view::npos) l = l.substr(0, semi);
        l = Trim(l);
        if (l.empty() || l.size() > 15) {
          return Error(ErrorCode::kProtocol, "bad chunk size \"" + line_.substr(0, 40) + "\"");
        }
        uint64_t v = 0;
        for (char c : l) {
          int d;
          if (c >= '0' && c <= '9') d = c - '0';
          else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
          else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
          else return Error(ErrorCode::kProtocol, "bad chunk size \"" + line_.substr(0, 40) + "\"");
          v = v * 16 + static_cast<uint64_t>(d);
        }
        line_.clear();
        remaining_ = v;
        state_ = v == 0 ? State::kTrailer : State::kData;
        break;
      }
      case State::kData: {
        size_t n = static_cast<size_t>(std::min<uint64_t>(remaining_, in.size() - used));
        if (out) MSB_TRY_STATUS(out(in.substr(used, n)));
        used += n;
        remaining_ -= n;
        if (remaining_ == 0) state_ = State::kDataCrlf;
        break;
      }
      case State::kDataCrlf: {
        if (!take_line(&line_)) {
          if (line_.size() > 1 || (line_.size() == 1 && line_[0] != '\r')) {
            return Error(ErrorCode::kProtocol, "chunk not followed by CRLF");
          }
          return used;
        }
        if (!line_.empty()) return Error(ErrorCode::kProtocol, "chunk not followed by CRLF");
        state_ = State::kSize;
        break;
      }
      case State::kTrailer: {
        if (!take_line(&line_)) {
          if (line_.size() >= 4096) return Error(ErrorCode::kProtocol, "chunk trailer line too long");
          return used;
        }
        bool empty = line_.empty();
        line_.clear();
        if (empty) state_ = State::kDone;
        break;
      }
      case State::kDone:
        break;
    }
  }
  return used;
}

// --- WWW-Authenticate ------------------------------------------------------------

std::string Challenge::Param(std::string_view name) const {
  for (const auto& [k, v] : params) {
    if (k == name) return v;
  }
  return "";
}

Result<Challenge> ParseChallenge(std::string_view header) {
  Challenge c;
  std::string_view s = Trim(header);
  size_t i = 0;
  while (i < s.size() && s[i] != ' ' && s[i] != '\t') ++i;
  c.scheme = Lower(s.substr(0, i));
  if (c.scheme.empty()) return Error(ErrorCode::kProtocol, "empty WWW-Authenticate header");
  for (char ch : c.scheme) {
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_') {
      return Error(ErrorCode::kProtocol, "bad WWW-Authenticate scheme \"" + c.scheme.substr(0, 40) + "\"");
    }
  }
  auto skip_ws = [&]() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
  };
  while (i < s.size()) {
    skip_ws();
    while (i < s.size() && s[i] == ',') {
      ++i;
      skip_ws();
    }
    if (i >= s.size()) break;
    size_t start = i;
    while (i < s.size() && s[i] != '=' && s[i] != ',' && s[i] != ' ' && s[i] != '\t') ++i;
    std::string name = Lower(s.substr(start, i - start));
    skip_ws();
    if (i >= s.size() || s[i] != '=') {
      // A token68 or a second challenge's scheme: stop at the first challenge.
      if (!c.params.empty()) break;
      continue;
    }
    ++i;
    skip_ws();
    std::string value;
    if (i < s.size() && s[i] == '"') {
      ++i;
      bool closed = false;
      while (i < s.size()) {
        char ch = s[i++];
        if (ch == '\\' && i < s.size()) {
          value.push_back(s[i++]);
        } else if (ch == '"') {
          closed = true;
          break;
        } else {
          value.push_back(ch);
        }
      }
      if (!closed) return Error(ErrorCode::kProtocol, "unterminated quoted string in WWW-Authenticate");
    } else {
      size_t vs = i;
      while (i < s.size() && s[i] != ',' && s[i] != ' ' && s[i] != '\t') ++i;
      value = std::string(s.substr(vs, i - vs));
    }
    if (name.empty()) return Error(ErrorCode::kProtocol, "WWW-Authenticate parameter without a name");
    c.params.emplace_back(std::move(name), std::move(value));
  }
  return c;
}

// --- Query escaping ---------------------------------------------------

std::string QueryEscape(std::string_view s) {
  static const char* kHex = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

// --- The client ------------------------------------------------------------------

struct HttpClient::Impl {
  ClientOptions options;
  mutable std::mutex mu;
  std::map<std::string, std::vector<std::unique_ptr<Conn>>> idle;  // guarded by mu
  std::map<std::string, SslCtxPtr> contexts;                        // guarded by mu; key: ca_file + insecure

  Result<SSL_CTX*> Context(const HostPolicy& policy) {
    std::lock_guard<std::mutex> lock(mu);
    std::string key = (policy.insecure ? "1:" : "0:") + policy.ca_file;
    auto it = contexts.find(key);
    if (it != contexts.end()) return it->second.get();
    SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
    if (!ctx) return Error(ErrorCode::kInternal, "SSL_CTX_new: " + OpensslErrors());
    SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
    SSL_CTX_set_default_verify_paths(ctx.get());
    if (!policy.ca_file.empty()) {
      if (SSL_CTX_load_verify_locations(ctx.get(), policy.ca_file.c_str(), nullptr) != 1) {
        return Error(ErrorCode::kInvalidArgument,
                     "cannot load the CA file " + policy.ca_file + ": " + OpensslErrors() +
                         "; it must be a PEM file of certificates");
      }
    }
    SSL_CTX_set_verify(ctx.get(), policy.insecure ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, nullptr);
    SSL_CTX* raw = ctx.get();
    contexts.emplace(key, std::move(ctx));
    return raw;
  }

  HostPolicy PolicyFor(const Url& url) const {
    std::string hp = (url.host.find(':') != std::string::npos ? "[" + url.host + "]" : url.host) + ":" +
                     std::to_string(url.port);
    return options.policy ? options.policy(hp) : HostPolicy{};
  }

  Result<std::unique_ptr<Conn>> Connect(const Url& url) {
    HostPolicy policy = PolicyFor(url);
    std::string key = url.scheme + "://" + url.host + ":" + std::to_string(url.port);
    {
      std::lock_guard<std::mutex> lock(mu);
      auto& list = idle[key];
      while (!list.empty()) {
        std::unique_ptr<Conn> c = std::move(list.back());
        list.pop_back();
        if (!c->LooksClosed()) {
          c->reused = true;
          return c;
        }
      }
    }
    std::string host_port = url.Authority();
    if (url.port == 443 || url.port == 80) host_port = url.host + ":" + std::to_string(url.port);
    if (url.scheme == "http" && !policy.insecure) {
      return Error(ErrorCode::kInvalidArgument,
                   "refusing plain HTTP to " + host_port +
                       ": the registry is not marked insecure (use --insecure-registry " + url.Authority() +
                       " or set insecure: true for it in registries.yaml)");
    }
    auto conn = std::make_unique<Conn>();
    conn->key = key;
    conn->host_port = host_port;
    MSB_TRY(conn->fd, ConnectTcp(url, host_port));
    if (url.scheme == "https") {
      MSB_TRY(SSL_CTX * ctx, Context(policy));
      conn->ssl.reset(SSL_new(ctx));
      if (!conn->ssl) return Error(ErrorCode::kInternal, "SSL_new: " + OpensslErrors());
      SSL_set_fd(conn->ssl.get(), conn->fd.get());
      if (!policy.insecure) {
        if (IsIpLiteral(url.host)) {
          X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(conn->ssl.get()), url.host.c_str());
        } else {
          SSL_set1_host(conn->ssl.get(), url.host.c_str());
        }
      }
      if (!IsIpLiteral(url.host)) SSL_set_tlsext_host_name(conn->ssl.get(), url.host.c_str());
      for (;;) {
        ERR_clear_error();
        int r = SSL_connect(conn->ssl.get());
        if (r == 1) break;
        int err = SSL_get_error(conn->ssl.get(), r);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
          MSB_TRY_STATUS(conn->Wait(err == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, options.idle_timeout));
          continue;
        }
        long vr = SSL_get_verify_result(conn->ssl.get());
        if (vr != X509_V_OK) {
          return Error(ErrorCode::kIo,
                       "TLS verification of " + host_port + " failed: " + X509_verify_cert_error_string(vr) +
                           "; if the registry uses a private CA, pass --registry-ca " + url.Authority() +
                           "=CA.pem or set ca_file for it in registries.yaml");
        }
        int reason = ERR_GET_REASON(ERR_peek_error());
        if (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_PACKET_LENGTH_TOO_LONG) {
          ERR_clear_error();
          return Error(ErrorCode::kIo, host_port + " does not speak TLS (it may serve plain HTTP)" +
                                           (policy.insecure ? std::string()
                                                            : "; if that is intended, pass --insecure-registry " +
                                                                  url.Authority() +
                                                                  " or set insecure: true for it in registries.yaml"));
        }
        return Error(ErrorCode::kIo, "TLS handshake with " + host_port + " failed: " + OpensslErrors());
      }
    }
    return conn;
  }

  void Release(std::unique_ptr<Conn> conn) {
    std::lock_guard<std::mutex> lock(mu);
    auto& list = idle[conn->key];
    if (list.size() < 8) list.push_back(std::move(conn));
  }

  // Reads the status line and headers.
  Result<ReadHeadResult> ReadHead(Conn& c) {
    ReadHeadResult head;
    size_t end;
    for (;;) {
      end = c.inbuf.find("\r\n\r\n", c.inpos);
      if (end != std::string::npos) break;
      if (c.inbuf.size() - c.inpos > kMaxHeaderBytes) {
        return Error(ErrorCode::kProtocol, c.host_port + " sent a response head over " +
                                               std::to_string(kMaxHeaderBytes) + " bytes");
      }
      MSB_TRY(size_t n, c.Fill(options.idle_timeout));
      if (n == 0) {
        return Error(ErrorCode::kIo, c.host_port + " closed the connection before answering", ECONNRESET);
      }
    }
    std::string_view all(c.inbuf.data() + c.inpos, end - c.inpos);
    c.inpos = end + 4;
    size_t eol = all.find("\r\n");
    std::string_view status_line = all.substr(0, eol);
    if (status_line.substr(0, 7) != "HTTP/1." || status_line.size() < 12 || status_line[8] != ' ') {
      return Error(ErrorCode::kProtocol, c.host_port + " did not answer HTTP/1.x: \"" +
                                             std::string(status_line.substr(0, 60)) + "\"");
    }
    std::string_view code = status_line.substr(9, 3);
    if (!std::all_of(code.begin(), code.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) {
      return Error(ErrorCode::kProtocol, c.host_port + " sent a bad status line");
    }
    head.status = (code[0] - '0') * 100 + (code[1] - '0') * 10 + (code[2] - '0');
    if (status_line.size() > 13) head.reason = std::string(status_line.substr(13));
    std::string_view rest = eol == std::string_view::npos ? std::string_view() : all.substr(eol + 2);
    while (!rest.empty()) {
      size_t e = rest.find("\r\n");
      std::string_view line = rest.substr(0, e);
      rest = e == std::string_view::npos ? std::string_view() : rest.substr(e + 2);
      size_t colon = line.find(':');
      if (colon == std::string_view::npos || colon == 0) {
        return Error(ErrorCode::kProtocol, c.host_port + " sent a malformed header line");
      }
      head.headers.emplace_back(Lower(Trim(line.substr(0, colon))), std::string(Trim(line.substr(colon + 1))));
    }
    return head;
  }

  // Reads the body per the response framing; returns whether the connection
  // may be reused.
  Result<bool> ReadBody(Conn& c, const Request& req, Response& resp, const BodyCallback& sink) {
    bool no_body = req.method == "HEAD" || resp.status == 204 || resp.status == 304 ||
                   (resp.status >= 100 && resp.status < 200);
    bool keep = Lower(resp.Header("connection")).find("close") == std::string::npos;
    if (no_body) return keep;
    size_t buffered_limit = options.max_buffered_body;
    BodyCallback out = sink;
    if (!out) {
      out = [&resp, buffered_limit, &c](std::string_view b) -> Status {
        if (resp.body.size() + b.size() > buffered_limit) {
          return Error(ErrorCode::kProtocol, c.host_port + " sent a response body over " +
                                                 std::to_string(buffered_limit) + " bytes");
        }
        resp.body.append(b);
        return OkStatus();
      };
    }
    std::string te = Lower(resp.Header("transfer-encoding"));
    std::string cl = resp.Header("content-length");
    if (!te.empty()) {
      if (te.find("chunked") == std::string::npos) {
        return Error(ErrorCode::kProtocol, c.host_port + " used unsupported transfer-encoding " + te);
      }
      ChunkedDecoder dec;
      for (;;) {
        std::string_view avail(c.inbuf.data() + c.inpos, c.inbuf.size() - c.inpos);
        MSB_TRY(size_t used, dec.Feed(avail, out));
        c.inpos += used;
        if (dec.Done()) return keep;
        MSB_TRY(size_t n, c.Fill(options.idle_timeout));
        if (n == 0) return Error(ErrorCode::kIo, c.host_port + " closed the connection mid-body", ECONNRESET);
      }
    }
    if (!cl.empty()) {
      uint64_t len = 0;
      if (cl.size() > 19 || !std::all_of(cl.begin(), cl.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) {
        return Error(ErrorCode::kProtocol, c.host_port + " sent a bad Content-Length");
      }
      len = std::stoull(cl);
      while (len > 0) {
        if (c.inpos == c.inbuf.size()) {
          MSB_TRY(size_t n, c.Fill(options.idle_timeout));
          if (n == 0) {
            return Error(ErrorCode::kIo,
                         c.host_port + " closed the connection with " + std::to_string(len) + " body bytes missing",
                         ECONNRESET);
          }
        }
        size_t n = static_cast<size_t>(std::min<uint64_t>(len, c.inbuf.size() - c.inpos));
        MSB_TRY_STATUS(out(std::string_view(c.inbuf.data() + c.inpos, n)));
        c.inpos += n;
        len -= n;
      }
      return keep;
    }
    // No framing: the body runs to EOF.
    for (;;) {
      if (c.inpos < c.inbuf.size()) {
        MSB_TRY_STATUS(out(std::string_view(c.inbuf.data() + c.inpos, c.inbuf.size() - c.inpos)));
        c.inpos = c.inbuf.size();
      }
      MSB_TRY(size_t n, c.Fill(options.idle_timeout));
      if (n == 0) return false;
    }
  }

  Result<Response> Once(const Request& req, const BodyCallback& sink, const HeadCallback& on_head) {
    for (int attempt = 0;; ++attempt) {
      MSB_TRY(std::unique_ptr<Conn> conn, Connect(req.url));
      std::string msg = req.method + " " + req.url.target + " HTTP/1.1\r\nHost: " + req.url.Authority() + "\r\n";
      bool has_ua = false;
      for (const auto& [k, v] : req.headers) {
        if (Lower(k) == "user-agent") has_ua = true;
        msg += k + ": " + v + "\r\n";
      }
      if (!has_ua) msg += "User-Agent: " + options.user_agent + "\r\n";
      if (!req.body.empty() || req.method == "PUT" || req.method == "POST" || req.method == "PATCH") {
        msg += "Content-Length: " + std::to_string(req.body.size()) + "\r\n";
      }
      msg += "\r\n";
      msg += req.body;
      bool reused = conn->reused;
      Status sent = conn->WriteAll(msg, options.idle_timeout);
      Result<ReadHeadResult> head = sent.ok() ? ReadHead(*conn) : Result<ReadHeadResult>(sent.error());
      if (!head.ok()) {
        // A kept-alive connection the server closed meanwhile: once more, fresh.
        if (reused && attempt == 0 && head.error().code() == ErrorCode::kIo) continue;
        return head.error();
      }
      Response resp;
      resp.status = head->status;
      resp.reason = std::move(head->reason);
      resp.headers = std::move(head->headers);
      resp.url = req.url;
      bool streaming = sink && resp.status >= 200 && resp.status < 300;
      bool redirect = resp.status == 301 || resp.status == 302 || resp.status == 303 || resp.status == 307 ||
                      resp.status == 308;
      if (streaming && on_head) MSB_TRY_STATUS(on_head(resp));
      Result<bool> keep = ReadBody(*conn, req, resp, streaming ? sink : (redirect ? BodyCallback(
                                                                             [](std::string_view) { return OkStatus(); })
                                                                                 : nullptr));
      if (!keep.ok()) return keep.error();
      if (*keep && conn->inpos == conn->inbuf.size()) Release(std::move(conn));
      return resp;
    }
  }
};

HttpClient::HttpClient(ClientOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
}
HttpClient::~HttpClient() = default;

size_t HttpClient::IdleConnections() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  size_t n = 0;
  for (const auto& [k, v] : impl_->idle) n += v.size();
  return n;
}

Result<Response> HttpClient::Do(const Request& original, const BodyCallback& on_body,
                                const HeadCallback& on_head) {
  Request req = original;
  for (int hops = 0;; ++hops) {
    MSB_TRY(Response resp, impl_->Once(req, on_body, on_head));
    bool redirect = resp.status == 301 || resp.status == 302 || resp.status == 303 || resp.status == 307 ||
                    resp.status == 308;
    if (!redirect) return resp;
    std::string location = resp.Header("location");
    if (location.empty()) {
      return Error(ErrorCode::kProtocol, req.url.Authority() + " answered " + std::to_string(resp.status) +
                                             " without a Location header");
    }
    if (hops >= kMaxRedirects) {
      return Error(ErrorCode::kProtocol, "more than " + std::to_string(kMaxRedirects) + " redirects from " +
                                             original.url.ToString());
    }
    MSB_TRY(Url next, ResolveUrl(req.url, location));
    if (next.host != req.url.host || next.port != req.url.port || next.scheme != req.url.scheme) {
      req.headers.erase(std::remove_if(req.headers.begin(), req.headers.end(),
                                       [](const auto& h) { return Lower(h.first) == "authorization"; }),
                        req.headers.end());
    }
    if (resp.status == 303 && req.method != "HEAD") {
      req.method = "GET";
      req.body.clear();
    }
    MSB_LOG(kDebug, "http") << "redirect " << req.url.ToString() << " -> " << next.ToString();
    req.url = std::move(next);
  }
}

}  // namespace msb::image::http
