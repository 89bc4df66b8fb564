// HttpRequestParser: an incremental, strict HTTP/1.1 request parser over the
// byte stream a guest sends on one connection, yielding one request at a time
// (keep-alive and pipelining), and SerializeRequest, which writes a (possibly
// rewritten) request back as bytes. No sockets and no responses: the owner
// feeds bytes and sends what it decides. Not a general HTTP server parser: it
// refuses, rather than repairs, anything two parsers could read differently.
//
// Theory of operation
//
// Scope: requests (RFC 9112) on an intercepted flow, whose bytes secrets/
// substitute.h judges before any of them goes upstream. Each request is
// complete (head and whole body) when Next() returns it, together with the
// exact bytes it spanned (raw) so a request that needs no change is relayed
// byte for byte.
//
// Goals: one reading of the framing. The parser refuses (Refusal, with the
// status the owner answers) every form that lets a front end and a back end
// disagree on where a request ends: Content-Length together with
// Transfer-Encoding, more than one Content-Length or Transfer-Encoding field,
// a Content-Length that is not 1*DIGIT, a transfer coding other than exactly
// "chunked", Transfer-Encoding in HTTP/1.0, obs-fold, whitespace between a
// field name and its colon, a bare LF or CR, control characters in a field
// value, a chunk size that is not 1*HEXDIG (no sign, no "0x", no spaces) or
// whose line or data is not ended by CRLF, framing fields in trailers. It
// also refuses what it will not carry: `Expect` (100-continue would let the
// guest send a body after a response it did not see us judge), the HTTP/2
// connection preface (PRI * HTTP/2.0: prior knowledge), versions other than
// HTTP/1.0 and HTTP/1.1, CONNECT, and request targets that are not
// origin-form, absolute-form (http/https) or `*` with OPTIONS.
// Non-goals: responses, field value semantics (the owner reads Host),
// content codings (a gzip body is opaque bytes).
//
// Limits (all refusals, never truncation): kMaxRequestLineBytes (414),
// kMaxHeaderBytes for the request line and fields together, and again for the
// trailers, and kMaxHeaderCount fields (431), kMaxChunkLineBytes per chunk
// size line, kMaxBodyBytes per decoded body (413). Up to kMaxLeadingEmptyLines
// CRLFs before a request line are skipped (RFC 9112 §2.2) and not part of raw.
//
// States (Phase): kRequestLine → kFields → one of kBodyLength (by
// Content-Length), kChunkSize → kChunkData → kChunkEnd → ... → kTrailers (a
// chunked body), or straight to a complete request; then kRequestLine again
// for the next request. kRefused is final: every later Next() repeats the
// refusal and the owner closes the connection after sending
// ErrorResponse(refusal). A chunked body is decoded into HttpRequest::body
// with chunked set; SerializeRequest writes it back as one chunk.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace msb::secrets {

inline constexpr size_t kMaxRequestLineBytes = 8 * 1024;
inline constexpr size_t kMaxHeaderBytes = 64 * 1024;
inline constexpr size_t kMaxHeaderCount = 128;
inline constexpr size_t kMaxChunkLineBytes = 256;
inline constexpr size_t kMaxBodyBytes = 16 * 1024 * 1024;
inline constexpr size_t kMaxLeadingEmptyLines = 4;

struct HttpHeader {
  std::string name;   // as sent (a token)
  std::string value;  // without leading and trailing whitespace
  bool operator==(const HttpHeader&) const = default;
};

struct HttpRequest {
  std::string method;
  std::string target;   // as sent
  std::string version;  // "HTTP/1.1" or "HTTP/1.0"
  std::vector<HttpHeader> headers;
  bool chunked = false;  // the body came with Transfer-Encoding: chunked
  std::string body;      // decoded
  std::vector<HttpHeader> trailers;
  bool operator==(const HttpRequest&) const = default;
};

// Why a stream was refused. Every kind is final for the connection.
enum class Refusal : int {
  kMalformed = 0,       // not HTTP/1.x syntax
  kTooLarge = 1,        // a limit above was exceeded
  kSmuggling = 2,       // an ambiguous framing form
  kExpectContinue = 3,  // an Expect field
  kHttp2 = 4,           // the HTTP/2 preface (prior knowledge)
  kUnsupported = 5,     // a version, method or target form not carried
};
const char* ToString(Refusal refusal);

struct HttpRefusal {
  Refusal kind = Refusal::kMalformed;
  int status = 400;    // the HTTP status to answer
  std::string reason;  // one line, no request bytes beyond a short quote
};

enum class ParseStatus : int { kNeedMore = 0, kRequest = 1, kRefused = 2 };

struct ParseOutcome {
  ParseStatus status = ParseStatus::kNeedMore;
  HttpRequest request;  // kRequest
  std::string raw;      // kRequest: the bytes the request spanned, unchanged
  HttpRefusal refusal;  // kRefused
};

// Not thread-safe; one per connection direction guest → upstream.
class HttpRequestParser {
 public:
  enum class Phase : int {
    kRequestLine = 0,
    kFields = 1,
    kBodyLength = 2,
    kChunkSize = 3,
    kChunkData = 4,
    kChunkEnd = 5,
    kTrailers = 6,
    kRefused = 7,
  };

  // Appends bytes from the guest. The owner bounds what it feeds by
  // buffered() (stop reading while it is large) and calls Next() after.
  void Feed(std::string_view bytes) { buffer_.append(bytes); }
  // The next complete request, kNeedMore, or the refusal.
  ParseOutcome Next();
  // Bytes fed and not yet returned as part of a request; the parser starts
  // over afresh. For an owner that stops parsing (after an upgrade).
  std::string TakeBuffered();
  size_t buffered() const { return buffer_.size() - start_; }
  Phase phase() const { return phase_; }

 private:
  // Parses a complete line [line_start, line_end) (CRLF excluded) of the
  // current phase; false after setting refusal_.
  bool OnRequestLine(std::string_view line);
  bool OnField(std::string_view line, std::vector<HttpHeader>* into);
  bool OnFieldsEnd();
  bool OnChunkSize(std::string_view line);
  bool OnTrailersEnd();
  // The next CRLF-terminated line at cursor_; NeedMore when absent. limit
  // bounds the line; what_ names it in refusals.
  enum class LineStatus { kLine, kNeedMore, kRefused };
  LineStatus TakeLine(size_t limit, int too_long_status, const char* what, std::string_view* line);
  void Refuse(Refusal kind, int status, std::string reason);
  void Reset();

  std::string buffer_;
  size_t start_ = 0;    // where the current request begins in buffer_
  size_t cursor_ = 0;   // the next byte to parse
  size_t scanned_ = 0;  // TakeLine searched [cursor_, scanned_) for LF in vain
  Phase phase_ = Phase::kRequestLine;
  size_t empty_lines_ = 0;
  size_t field_bytes_ = 0;  // of the head, or of the trailers
  uint64_t remaining_ = 0;  // body or chunk bytes still to come
  HttpRequest request_;
  HttpRefusal refusal_;
};

// The request as bytes: request line, fields in order, an empty line, then the
// body as it is (Content-Length framing: the owner keeps that field true) or,
// when chunked, as one chunk, the last chunk and the trailers.
std::string SerializeRequest(const HttpRequest& request);

// A complete response the owner sends before closing: the status, a plain
// text body of one line ("msb: " + reason), Connection: close.
std::string ErrorResponse(int status, std::string_view reason);

// ASCII case-insensitive equality (field names, tokens).
bool EqualsIgnoreCase(std::string_view a, std::string_view b);
// The fields named name (case-insensitive), in order.
std::vector<const HttpHeader*> FindHeaders(const std::vector<HttpHeader>& headers, std::string_view name);

}  // namespace msb::secrets
