// A small HTTP/1.1 client for OCI registries: TLS through OpenSSL (system CAs
// plus an optional per-host CA file, hostname verification, SNI), plain HTTP
// only for hosts marked insecure, DNS through c-ares and Happy Eyeballs
// connects (image/connect.h), HTTP proxies from the environment
// (image/proxy.h), keep-alive, chunked and content-length bodies streamed to a
// callback, redirects. Not a general browser client: no cookies, no HTTP/2, no
// request bodies beyond a small buffer.
//
// Theory of operation. Each Do() runs on the calling thread with blocking
// sockets bounded by poll() deadlines (kConnectTimeout, options.idle_timeout
// between any two reads or writes). Registry downloads write into BlobSinks
// whose Write/Commit block on the disk and whose OpenBlob may wait for another
// writer of the same blob, so downloads run on a few worker threads (see
// image/pull.h) rather than on a libevent loop, which such blocking calls would
// stall. An HttpClient is thread-safe: idle keep-alive connections sit in a
// pool keyed by scheme://host:port (and the proxy), taken by one request at a
// time.
//
// Proxies: a plain HTTP request through a proxy goes to the proxy with the
// absolute URL as its target (RFC 9112 §3.2.2) and the proxy's
// Proxy-Authorization; an HTTPS request opens a CONNECT tunnel to host:port
// through the proxy (RFC 9110 §9.3.6) and runs TLS to the registry inside it,
// so the proxy sees neither the requests nor the registry credentials. A
// proxy's answer other than 2xx to CONNECT is an error naming the proxy, 407
// saying how to give it credentials.
//
// Response bodies: with a BodyCallback every byte of the (de-chunked) body
// goes to it as it arrives and nothing is buffered; without one, up to
// options.max_buffered_body bytes are kept in HttpResponse::body. Redirects
// (301, 302, 303, 307, 308) are followed up to kMaxRedirects; on a change of
// host the Authorization header is dropped. A connection is returned to the
// pool only when its response was read completely and the server did not ask
// to close it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"
#include "image/proxy.h"

namespace msb::image::http {

inline constexpr int kMaxRedirects = 5;
inline constexpr size_t kMaxHeaderBytes = 64 << 10;
// Interim 1xx answers skipped before a final one.
inline constexpr int kMaxInterimResponses = 8;
inline constexpr std::chrono::seconds kConnectTimeout{15};

struct Url {
  std::string scheme;  // "http" or "https"
  std::string host;    // without brackets for IPv6
  uint16_t port = 0;
  std::string target;  // path and query, starts with '/'
  // "host" or "host:port" when the port is not the scheme's default.
  std::string Authority() const;
  std::string ToString() const;
};
// Absolute http(s) URLs only.
Result<Url> ParseUrl(std::string_view text);
// Resolves a Location header (absolute, or a path) against base.
Result<Url> ResolveUrl(const Url& base, std::string_view location);

using Headers = std::vector<std::pair<std::string, std::string>>;

struct Request {
  std::string method = "GET";
  Url url;
  Headers headers;   // Host, Content-Length and Connection are added by Do()
  std::string body;  // small bodies only (token requests, PUTs in tests)
};

// The first value of a header (name in lowercase) in headers, or "".
std::string HeaderValue(const Headers& headers, std::string_view name);

struct Response {
  int status = 0;
  std::string reason;
  Headers headers;  // names lowercased, in order received
  std::string body;  // only when no BodyCallback was given
  Url url;           // after redirects
  // The first value of a header (name in lowercase), or "".
  std::string Header(std::string_view name) const { return HeaderValue(headers, name); }
};

// What the server sends: the status line and header fields of a response,
// and how its body is delimited. HttpClient reads them with these two pure
// functions (fuzz/http_response_fuzz.cc drives them with any bytes).
struct ResponseHead {
  int status = 0;      // the three digits of the status line
  std::string reason;  // the rest of it, after the status code's space
  Headers headers;     // names lowercased, names and values trimmed, in order
};
// A response head: the bytes before the empty line that ends it (its
// "\r\n\r\n" not included). The status line is "HTTP/1.x NNN[ reason]";
// every header line has a name before its colon. Errors do not name the
// server: the caller does.
Result<ResponseHead> ParseResponseHead(std::string_view head);

// How a response's body is delimited (RFC 9112 §6.3): none for HEAD, 1xx,
// 204 and 304; chunked when Transfer-Encoding names chunked (any other
// transfer coding is an error); else Content-Length (digits only, at most
// 19); else until the server closes. keep_alive: Connection does not say
// "close" (and the body is not delimited by the close).
struct BodyFraming {
  enum class Kind : int { kNone = 0, kChunked = 1, kLength = 2, kUntilClose = 3 };
  Kind kind = Kind::kNone;
  uint64_t length = 0;  // kLength
  bool keep_alive = true;
};
Result<BodyFraming> ResponseBodyFraming(std::string_view method, int status, const Headers& headers);

// A 206 response's Content-Range, "bytes FIRST-LAST/TOTAL" or
// "bytes FIRST-LAST/*" (RFC 9110 §14.4): digits only (no sign, no blanks
// inside), at most 18 each, FIRST <= LAST, and LAST < TOTAL when TOTAL is
// given. total is -1 when the server did not say.
struct ContentRange {
  uint64_t first = 0, last = 0;
  int64_t total = -1;
};
Result<ContentRange> ParseContentRange(std::string_view value);

// Receives body bytes in order. Returning an error stops the request; Do()
// then returns that error.
using BodyCallback = std::function<Status(std::string_view bytes)>;
// Sees a 2xx response's status and headers before its body is streamed.
using HeadCallback = std::function<Status(const struct Response& head)>;

// How to reach one host:port: TLS settings come from the registry config.
struct HostPolicy {
  bool insecure = false;  // plain http allowed (and TLS not verified when https is used)
  std::string ca_file;    // extra CA bundle trusted for this host, besides the system's
  // A docker certs.d directory for this host (image/registry_config.h): its
  // *.crt are trusted besides the system's CAs, a NAME.cert with NAME.key
  // beside it is the client certificate. Empty: none.
  std::string certs_dir;
};
// Docker's per-registry certificate directories: $MSB_DOCKER_CERTS_D, else
// /etc/docker/certs.d.
std::string DockerCertsRoot();

// Maps "host:port" (port always present) to the host's policy.
using PolicyFn = std::function<HostPolicy(const std::string& host_port)>;

struct ClientOptions {
  PolicyFn policy;  // null: every host is secure with system CAs
  std::chrono::milliseconds idle_timeout{30000};
  size_t max_buffered_body = 8 << 20;
  std::string user_agent = "msb";
  ProxyEnv proxy;  // default: no proxy (RegistryClient passes the environment's)
};

class HttpClient {
 public:
  explicit HttpClient(ClientOptions options = {});
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Sends req and reads the response head, following redirects. For 2xx
  // answers with on_body set, streams the body to on_body; for any other
  // status (and with no callback) the body is buffered (bounded). Errors are
  // transport failures only: an HTTP 404 is a Response, not an error.
  Result<Response> Do(const Request& req, const BodyCallback& on_body = nullptr,
                      const HeadCallback& on_head = nullptr);

  // Connections currently idle in the pool (for tests of keep-alive).
  size_t IdleConnections() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Incremental decoder of a chunked body (RFC 9112 §7.1): Feed() any split of
// the encoded stream; decoded bytes go to out. Chunk extensions are ignored,
// trailers skipped. Done() once the last chunk and trailers were consumed;
// bytes after that are left unconsumed (Feed returns how many it used).
class ChunkedDecoder {
 public:
  Result<size_t> Feed(std::string_view in, const BodyCallback& out);
  bool Done() const { return state_ == State::kDone; }

 private:
  enum class State : int { kSize = 0, kData = 1, kDataCrlf = 2, kTrailer = 3, kDone = 4 };
  State state_ = State::kSize;
  std::string line_;
  uint64_t remaining_ = 0;
};

// WWW-Authenticate: the scheme ("bearer", "basic"; lowercased) and its
// parameters (names lowercased, quoted-string values unescaped). Several
// challenges in one header: the first.
struct Challenge {
  std::string scheme;
  std::vector<std::pair<std::string, std::string>> params;
  std::string Param(std::string_view name) const;
};
Result<Challenge> ParseChallenge(std::string_view header);

// Percent-encodes everything but unreserved characters (for query values).
std::string QueryEscape(std::string_view s);

}  // namespace msb::image::http
