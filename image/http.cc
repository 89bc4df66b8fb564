// HTTP/1.1 over non-blocking sockets driven by poll() deadlines; OpenSSL for
// TLS; names and connects in image/connect.cc. See http.h for the theory of operation.
#include "image/http.h"

#include <arpa/inet.h>
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
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>

#include "common/c_ptr.h"
#include "common/fd.h"
#include "common/log.h"
#include "image/connect.h"

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
  bool absolute_form = false;       // plain HTTP through a proxy: the target is the whole URL
  std::string proxy_authorization;  // with absolute_form: the proxy's credentials, or ""

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

// A docker certs.d directory: every *.crt trusted, one NAME.cert + NAME.key
// pair as the client certificate (image/http.h HostPolicy::certs_dir).
Status LoadCertsDir(SSL_CTX* ctx, const std::string& dir) {
  std::error_code ec;
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) names.push_back(e.path().filename().string());
  if (ec) return Error(ErrorCode::kIo, "cannot read the certificate directory " + dir + ": " + ec.message());
  std::sort(names.begin(), names.end());
  auto ends_with = [](const std::string& s, std::string_view suffix) {
    return s.size() > suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  auto has = [&](const std::string& n) { return std::find(names.begin(), names.end(), n) != names.end(); };
  std::string client;
  for (const auto& n : names) {
    std::string path = dir + "/" + n;
    if (ends_with(n, ".crt")) {
      if (SSL_CTX_load_verify_locations(ctx, path.c_str(), nullptr) != 1) {
        return Error(ErrorCode::kInvalidArgument, "cannot load the CA file " + path + ": " + OpensslErrors() +
                                                      "; it must be a PEM file of certificates");
      }
    } else if (ends_with(n, ".cert")) {
      std::string base = n.substr(0, n.size() - 5);
      if (!has(base + ".key")) {
        return Error(ErrorCode::kInvalidArgument, "client certificate " + path + " has no " + base +
                                                      ".key beside it; add the key or remove the certificate");
      }
      if (!client.empty()) {
        return Error(ErrorCode::kInvalidArgument, dir + " holds more than one client certificate (" + client +
                                                      ".cert, " + base + ".cert); keep one");
      }
      client = base;
    } else if (ends_with(n, ".key") && !has(n.substr(0, n.size() - 4) + ".cert")) {
      return Error(ErrorCode::kInvalidArgument, "client key " + path + " has no " + n.substr(0, n.size() - 4) +
                                                    ".cert beside it; add the certificate or remove the key");
    }
  }
  if (!client.empty()) {
    std::string cert = dir + "/" + client + ".cert", key = dir + "/" + client + ".key";
    if (SSL_CTX_use_certificate_chain_file(ctx, cert.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
      return Error(ErrorCode::kInvalidArgument, "cannot use the client certificate " + cert + " with " + key + ": " +
                                                    OpensslErrors() + "; they must be a PEM certificate and its key");
    }
  }
  return OkStatus();
}

}  // namespace

std::string DockerCertsRoot() {
  const char* v = std::getenv("MSB_DOCKER_CERTS_D");
  return v != nullptr && *v != '\0' ? std::string(v) : std::string("/etc/docker/certs.d");
}

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
  // A host name or IPv4 address, or an IPv6 one in brackets: nothing else
  // (a space, a quote, a control byte) may reach the Host header or the
  // request line a proxy sees. A redirect or a token realm is the server's
  // choice.
  const bool bracketed = authority[0] == '[';
  for (char c : u.host) {
    bool ok = std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_' || c == '~' ||
              c == '%' || (bracketed && c == ':');
    if (!ok) return Error(ErrorCode::kInvalidArgument, "bad host in URL " + std::string(text.substr(0, 200)));
  }
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

std::string HeaderValue(const Headers& headers, std::string_view name) {
  for (const auto& [k, v] : headers) {
    if (k == name) return v;
  }
  return "";
}

// --- Response heads and body framing -------------------------------------------

Result<ResponseHead> ParseResponseHead(std::string_view all) {
  ResponseHead head;
  size_t eol = all.find("\r\n");
  std::string_view status_line = all.substr(0, eol);
  if (status_line.substr(0, 7) != "HTTP/1." || status_line.size() < 12 || status_line[8] != ' ') {
    return Error(ErrorCode::kProtocol, "did not answer HTTP/1.x: \"" + std::string(status_line.substr(0, 60)) + "\"");
  }
  std::string_view code = status_line.substr(9, 3);
  if (!std::all_of(code.begin(), code.end(), [](char ch) { return ch >= '0' && ch <= '9'; }) ||
      (status_line.size() > 12 && status_line[12] != ' ')) {
    return Error(ErrorCode::kProtocol, "sent a bad status line");
  }
  head.status = (code[0] - '0') * 100 + (code[1] - '0') * 10 + (code[2] - '0');
  // RFC 9110 §15: the first digit is the class, 1 to 5.
  if (head.status < 100 || head.status > 599) {
    return Error(ErrorCode::kProtocol, "sent status " + std::string(code) + ", outside 100-599");
  }
  if (status_line.size() > 13) head.reason = std::string(status_line.substr(13));
  std::string_view rest = eol == std::string_view::npos ? std::string_view() : all.substr(eol + 2);
  while (!rest.empty()) {
    size_t e = rest.find("\r\n");
    std::string_view line = rest.substr(0, e);
    rest = e == std::string_view::npos ? std::string_view() : rest.substr(e + 2);
    size_t colon = line.find(':');
    std::string_view name = colon == std::string_view::npos ? std::string_view() : Trim(line.substr(0, colon));
    if (name.empty()) return Error(ErrorCode::kProtocol, "sent a malformed header line");
    head.headers.emplace_back(Lower(name), std::string(Trim(line.substr(colon + 1))));
  }
  return head;
}

Result<ContentRange> ParseContentRange(std::string_view value) {
  auto bad = [&]() { return Error(ErrorCode::kProtocol, "bad Content-Range \"" + std::string(value.substr(0, 80)) + "\""); };
  // Reads 1 to 18 digits from the front of v.
  auto number = [](std::string_view& v, uint64_t& out) {
    size_t n = 0;
    out = 0;
    while (n < v.size() && n < 19 && v[n] >= '0' && v[n] <= '9') out = out * 10 + static_cast<uint64_t>(v[n++] - '0');
    if (n == 0 || n > 18) return false;
    v.remove_prefix(n);
    return true;
  };
  std::string_view v = value;
  if (v.substr(0, 6) != "bytes ") return bad();
  v.remove_prefix(6);
  ContentRange r;
  if (!number(v, r.first) || v.empty() || v[0] != '-') return bad();
  v.remove_prefix(1);
  if (!number(v, r.last) || v.empty() || v[0] != '/' || r.last < r.first) return bad();
  v.remove_prefix(1);
  if (v == "*") return r;
  uint64_t total = 0;
  if (!number(v, total) || !v.empty() || total <= r.last) return bad();
  r.total = static_cast<int64_t>(total);
  return r;
}

Result<BodyFraming> ResponseBodyFraming(std::string_view method, int status, const Headers& headers) {
  BodyFraming f;
  f.keep_alive = Lower(HeaderValue(headers, "connection")).find("close") == std::string::npos;
  if (method == "HEAD" || status == 204 || status == 304 || (status >= 100 && status < 200)) return f;
  std::string te = Lower(HeaderValue(headers, "transfer-encoding"));
  std::string cl = HeaderValue(headers, "content-length");
  if (!te.empty()) {
    if (te.find("chunked") == std::string::npos) {
      return Error(ErrorCode::kProtocol, "used unsupported transfer-encoding " + te);
    }
    f.kind = BodyFraming::Kind::kChunked;
    return f;
  }
  if (!cl.empty()) {
    if (cl.size() > 19 || !std::all_of(cl.begin(), cl.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) {
      return Error(ErrorCode::kProtocol, "sent a bad Content-Length");
    }
    f.kind = BodyFraming::Kind::kLength;
    f.length = std::stoull(cl);
    return f;
  }
  f.kind = BodyFraming::Kind::kUntilClose;
  f.keep_alive = false;
  return f;
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
    std::string key = (policy.insecure ? "1:" : "0:") + policy.ca_file + "\n" + policy.certs_dir;
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
    if (!policy.certs_dir.empty()) MSB_TRY_STATUS(LoadCertsDir(ctx.get(), policy.certs_dir));
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
    MSB_TRY(const Proxy* proxy, options.proxy.For(url.scheme, url.host));
    std::string key = url.scheme + "://" + url.host + ":" + std::to_string(url.port);
    if (proxy != nullptr) key += " via " + proxy->HostPort();
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
    if (proxy == nullptr) {
      bool proxy_set = url.scheme == "https" ? options.proxy.https.has_value() : options.proxy.http.has_value();
      if (proxy_set) {
        MSB_LOG(kDebug, "http") << url.scheme << "://" << host_port << " directly, not through the proxy: "
                                << (IsLoopbackHost(url.host) ? "a loopback host" : "NO_PROXY lists it");
      }
      MSB_TRY(conn->fd, ConnectTcp(url.host, url.port, host_port, kConnectTimeout));
    } else {
      MSB_LOG(kDebug, "http") << url.scheme << "://" << host_port << " through the proxy " << proxy->Display();
      auto fd = ConnectTcp(proxy->host, proxy->port, proxy->HostPort(), kConnectTimeout);
      if (!fd.ok()) return fd.error().Wrap("cannot reach the proxy " + proxy->Display() + " for " + host_port);
      conn->fd = std::move(*fd);
      if (url.scheme == "http") {
        conn->absolute_form = true;
        conn->proxy_authorization = proxy->Authorization();
      } else {
        MSB_TRY_STATUS(Tunnel(*conn, *proxy, url.host, url.port));
      }
    }
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
                           "=CA.pem, set ca_file for it in registries.yaml, or put the CA in " +
                           DockerCertsRoot() + "/" + url.Authority() + "/ca.crt");
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

  // CONNECT host:port through the proxy conn is connected to; on success the
  // connection is a byte stream to the destination.
  Status Tunnel(Conn& conn, const Proxy& proxy, const std::string& host, uint16_t port) {
    std::string authority = (host.find(':') != std::string::npos ? "[" + host + "]" : host) + ":" +
                            std::to_string(port);
    std::string msg = "CONNECT " + authority + " HTTP/1.1\r\nHost: " + authority + "\r\nUser-Agent: " +
                      options.user_agent + "\r\n";
    if (proxy.has_credentials) msg += "Proxy-Authorization: " + proxy.Authorization() + "\r\n";
    msg += "\r\n";
    std::string target = conn.host_port;
    conn.host_port = "the proxy " + proxy.Display();
    MSB_TRY_STATUS(conn.WriteAll(msg, options.idle_timeout));
    MSB_TRY(ResponseHead head, ReadHead(conn));
    conn.host_port = target;
    if (head.status == 407) {
      return Error(ErrorCode::kInvalidArgument,
                   "the proxy " + proxy.Display() +
                       (proxy.has_credentials ? " refused the credentials in " + proxy.source + " (HTTP 407)"
                                              : " requires credentials (HTTP 407); set " + proxy.source +
                                                    " to http://USER:PASSWORD@" + proxy.HostPort()));
    }
    if (head.status < 200 || head.status >= 300) {
      return Error(ErrorCode::kUnavailable, "the proxy " + proxy.Display() + " refused to connect to " + authority +
                                                " (HTTP " + std::to_string(head.status) + " " +
                                                head.reason.substr(0, 80) + "); check the proxy or add " + host +
                                                " to NO_PROXY");
    }
    if (conn.inpos != conn.inbuf.size()) {
      return Error(ErrorCode::kProtocol, "the proxy " + proxy.Display() + " sent bytes after its CONNECT answer");
    }
    conn.inbuf.clear();
    conn.inpos = 0;
    return OkStatus();
  }

  void Release(std::unique_ptr<Conn> conn) {
    std::lock_guard<std::mutex> lock(mu);
    auto& list = idle[conn->key];
    if (list.size() < 8) list.push_back(std::move(conn));
  }

  // Reads the status line and headers.
  Result<ResponseHead> ReadHead(Conn& c) {
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
    auto head = ParseResponseHead(all);
    if (!head.ok()) return Error(ErrorCode::kProtocol, c.host_port + " " + head.error().message());
    return head;
  }

  // Reads the body per the response framing; returns whether the connection
  // may be reused.
  Result<bool> ReadBody(Conn& c, const Request& req, Response& resp, const BodyCallback& sink) {
    auto framing = ResponseBodyFraming(req.method, resp.status, resp.headers);
    if (!framing.ok()) return Error(ErrorCode::kProtocol, c.host_port + " " + framing.error().message());
    bool keep = framing->keep_alive;
    if (framing->kind == BodyFraming::Kind::kNone) return keep;
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
    if (framing->kind == BodyFraming::Kind::kChunked) {
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
    if (framing->kind == BodyFraming::Kind::kLength) {
      uint64_t len = framing->length;
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
      std::string msg = req.method + " " + (conn->absolute_form ? req.url.ToString() : req.url.target) +
                        " HTTP/1.1\r\nHost: " + req.url.Authority() + "\r\n";
      if (!conn->proxy_authorization.empty()) msg += "Proxy-Authorization: " + conn->proxy_authorization + "\r\n";
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
      Result<ResponseHead> head = sent.ok() ? ReadHead(*conn) : Result<ResponseHead>(sent.error());
      // Interim answers (100 Continue, 103 Early Hints; RFC 9110 §15.2) come
      // before the final one and have no body: skipped, a few at most. msb
      // never asks to switch protocols, so a 101 is an error.
      for (int interim = 0; head.ok() && head->status >= 100 && head->status < 200; ++interim) {
        if (head->status == 101 || interim == kMaxInterimResponses) {
          return Error(ErrorCode::kProtocol, conn->host_port + " answered " + std::to_string(head->status) +
                                                 (head->status == 101 ? ", a protocol switch msb did not ask for"
                                                                      : " more than " +
                                                                            std::to_string(kMaxInterimResponses) +
                                                                            " times before a final answer"));
        }
        head = ReadHead(*conn);
      }
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
