// The strict HTTP/1.1 request parser, serializer and error responses. See
// http_request.h for the theory of operation.
#include "secrets/http_request.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <utility>

namespace msb::secrets {

namespace {

constexpr std::array<const char*, 6> kRefusalNames = {"malformed",       "too-large", "smuggling",
                                                      "expect-continue", "http2",     "unsupported"};
static_assert(kRefusalNames.size() == static_cast<size_t>(Refusal::kUnsupported) + 1);

char Lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// tchar (RFC 9110 §5.6.2).
bool IsTokenChar(unsigned char c) {
  if (c >= '0' && c <= '9') return true;
  if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return true;
  return c != 0 && std::string_view("!#$%&'*+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
}

bool IsToken(std::string_view s) {
  if (s.empty()) return false;
  for (unsigned char c : s) {
    if (!IsTokenChar(c)) return false;
  }
  return true;
}

// field-vchar, SP and HTAB (RFC 9110 §5.5); obs-text allowed.
bool IsFieldValueChar(unsigned char c) { return c == '\t' || c == ' ' || (c >= 0x21 && c != 0x7f); }

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string_view TrimOws(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// A short, printable quote of guest bytes for a refusal reason.
std::string Quote(std::string_view s) {
  std::string out = "\"";
  for (size_t i = 0; i < s.size() && i < 40; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    out += (c >= 0x20 && c < 0x7f && c != '"') ? static_cast<char>(c) : '?';
  }
  if (s.size() > 40) out += "...";
  return out + "\"";
}

bool StartsWithIgnoreCase(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && EqualsIgnoreCase(s.substr(0, prefix.size()), prefix);
}

const char* StatusText(int status) {
  switch (status) {
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 417: return "Expectation Failed";
    case 431: return "Request Header Fields Too Large";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
  }
}

}  // namespace

const char* ToString(Refusal refusal) {
  auto i = static_cast<size_t>(refusal);
  return i < kRefusalNames.size() ? kRefusalNames[i] : "?";
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (Lower(a[i]) != Lower(b[i])) return false;
  }
  return true;
}

std::vector<const HttpHeader*> FindHeaders(const std::vector<HttpHeader>& headers, std::string_view name) {
  std::vector<const HttpHeader*> out;
  for (const HttpHeader& h : headers) {
    if (EqualsIgnoreCase(h.name, name)) out.push_back(&h);
  }
  return out;
}

void HttpRequestParser::Refuse(Refusal kind, int status, std::string reason) {
  refusal_ = {kind, status, std::move(reason)};
  phase_ = Phase::kRefused;
}

void HttpRequestParser::Reset() {
  phase_ = Phase::kRequestLine;
  empty_lines_ = 0;
  field_bytes_ = 0;
  remaining_ = 0;
  request_ = HttpRequest{};
}

std::string HttpRequestParser::TakeBuffered() {
  std::string out = buffer_.substr(start_);
  buffer_.clear();
  start_ = cursor_ = scanned_ = 0;
  Reset();
  return out;
}

HttpRequestParser::LineStatus HttpRequestParser::TakeLine(size_t limit, int too_long_status, const char* what,
                                                          std::string_view* line) {
  // Bytes before scanned_ are known to hold no LF: a line trickled in one
  // byte at a time is searched once, not once per byte.
  size_t nl = buffer_.find('\n', std::max(cursor_, scanned_));
  scanned_ = nl == std::string::npos ? buffer_.size() : nl;
  size_t len = (nl == std::string::npos ? buffer_.size() : nl) - cursor_;
  // The CR that ends a complete line does not count towards the limit.
  size_t content = (nl != std::string::npos && len > 0 && buffer_[nl - 1] == '\r') ? len - 1 : len;
  if (content > limit) {
    Refuse(too_long_status == 400 ? Refusal::kMalformed : Refusal::kTooLarge, too_long_status,
           std::string(what) + " longer than " + std::to_string(limit) + " bytes");
    return LineStatus::kRefused;
  }
  if (nl == std::string::npos) return LineStatus::kNeedMore;
  if (len == 0 || buffer_[nl - 1] != '\r') {
    Refuse(Refusal::kSmuggling, 400, std::string(what) + " ends in a bare LF");
    return LineStatus::kRefused;
  }
  *line = std::string_view(buffer_).substr(cursor_, len - 1);
  if (line->find('\r') != std::string_view::npos) {
    Refuse(Refusal::kSmuggling, 400, std::string(what) + " holds a bare CR");
    return LineStatus::kRefused;
  }
  cursor_ = nl + 1;
  return LineStatus::kLine;
}

bool HttpRequestParser::OnRequestLine(std::string_view line) {
  size_t sp1 = line.find(' ');
  size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    Refuse(Refusal::kMalformed, 400, "request line " + Quote(line) + " is not METHOD SP TARGET SP VERSION");
    return false;
  }
  std::string_view method = line.substr(0, sp1);
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  if (method == "PRI" && target == "*" && version == "HTTP/2.0") {
    Refuse(Refusal::kHttp2, 505, "HTTP/2 with prior knowledge is not supported on an intercepted flow; use HTTP/1.1");
    return false;
  }
  if (!IsToken(method)) {
    Refuse(Refusal::kMalformed, 400, "method " + Quote(method) + " is not a token");
    return false;
  }
  if (version != "HTTP/1.1" && version != "HTTP/1.0") {
    Refuse(Refusal::kUnsupported, 505, "version " + Quote(version) + " is not HTTP/1.1 or HTTP/1.0");
    return false;
  }
  if (target.empty()) {
    Refuse(Refusal::kMalformed, 400, "empty request target");
    return false;
  }
  for (unsigned char c : target) {
    if (c < 0x21 || c > 0x7e) {
      Refuse(Refusal::kMalformed, 400, "request target " + Quote(target) + " holds a byte outside visible ASCII");
      return false;
    }
  }
  if (target.find('#') != std::string_view::npos) {
    Refuse(Refusal::kMalformed, 400, "request target " + Quote(target) + " holds a fragment");
    return false;
  }
  if (method == "CONNECT") {
    Refuse(Refusal::kUnsupported, 501, "CONNECT is not supported on an intercepted flow");
    return false;
  }
  bool origin = target.front() == '/';
  bool asterisk = target == "*" && method == "OPTIONS";
  bool absolute = StartsWithIgnoreCase(target, "http://") || StartsWithIgnoreCase(target, "https://");
  if (!origin && !asterisk && !absolute) {
    Refuse(Refusal::kUnsupported, 400, "request target " + Quote(target) + " is not origin-form or absolute-form");
    return false;
  }
  request_.method = std::string(method);
  request_.target = std::string(target);
  request_.version = std::string(version);
  return true;
}

bool HttpRequestParser::OnField(std::string_view line, std::vector<HttpHeader>* into) {
  if (line.front() == ' ' || line.front() == '\t') {
    Refuse(Refusal::kSmuggling, 400, "obs-fold (a field line starting with whitespace) is not accepted");
    return false;
  }
  size_t colon = line.find(':');
  if (colon == std::string_view::npos) {
    Refuse(Refusal::kMalformed, 400, "field line " + Quote(line) + " has no colon");
    return false;
  }
  std::string_view name = line.substr(0, colon);
  if (!IsToken(name)) {
    Refuse(name.find_first_of(" \t") != std::string_view::npos ? Refusal::kSmuggling : Refusal::kMalformed, 400,
           "field name " + Quote(name) + " is not a token");
    return false;
  }
  std::string_view value = TrimOws(line.substr(colon + 1));
  for (unsigned char c : value) {
    if (!IsFieldValueChar(c)) {
      Refuse(Refusal::kSmuggling, 400, "field " + std::string(name) + " holds a control character");
      return false;
    }
  }
  if (into->size() >= kMaxHeaderCount) {
    Refuse(Refusal::kTooLarge, 431, "more than " + std::to_string(kMaxHeaderCount) + " fields");
    return false;
  }
  into->push_back({std::string(name), std::string(value)});
  return true;
}

bool HttpRequestParser::OnFieldsEnd() {
  const auto& headers = request_.headers;
  if (!FindHeaders(headers, "Expect").empty()) {
    Refuse(Refusal::kExpectContinue, 417, "Expect (100-continue) is not supported on an intercepted flow");
    return false;
  }
  auto te = FindHeaders(headers, "Transfer-Encoding");
  auto cl = FindHeaders(headers, "Content-Length");
  if (!te.empty() && !cl.empty()) {
    Refuse(Refusal::kSmuggling, 400, "both Content-Length and Transfer-Encoding");
    return false;
  }
  if (te.size() > 1 || cl.size() > 1) {
    Refuse(Refusal::kSmuggling, 400,
           te.size() > 1 ? "more than one Transfer-Encoding" : "more than one Content-Length");
    return false;
  }
  if (!te.empty()) {
    if (request_.version == "HTTP/1.0") {
      Refuse(Refusal::kSmuggling, 400, "Transfer-Encoding in an HTTP/1.0 request");
      return false;
    }
    if (!EqualsIgnoreCase(te[0]->value, "chunked")) {
      Refuse(Refusal::kSmuggling, 501, "Transfer-Encoding " + Quote(te[0]->value) + " is not exactly chunked");
      return false;
    }
    request_.chunked = true;
    field_bytes_ = 0;
    phase_ = Phase::kChunkSize;
    return true;
  }
  if (!cl.empty()) {
    const std::string& v = cl[0]->value;
    if (v.empty() || v.size() > 19 || v.find_first_not_of("0123456789") != std::string::npos) {
      Refuse(Refusal::kSmuggling, 400, "Content-Length " + Quote(v) + " is not a decimal number");
      return false;
    }
    uint64_t n = std::stoull(v);
    if (n > kMaxBodyBytes) {
      Refuse(Refusal::kTooLarge, 413, "a body of " + v + " bytes (more than " + std::to_string(kMaxBodyBytes) + ")");
      return false;
    }
    remaining_ = n;
    if (n > 0) {
      request_.body.reserve(n);
      phase_ = Phase::kBodyLength;
      return true;
    }
  }
  remaining_ = 0;
  phase_ = Phase::kRequestLine;  // complete: Next() returns it
  return true;
}

bool HttpRequestParser::OnChunkSize(std::string_view line) {
  size_t digits = 0;
  uint64_t size = 0;
  while (digits < line.size() && HexDigit(line[digits]) >= 0) {
    if (digits == 15) {
      Refuse(Refusal::kTooLarge, 413, "a chunk size of more than 15 hex digits");
      return false;
    }
    size = size << 4 | static_cast<uint64_t>(HexDigit(line[digits]));
    ++digits;
  }
  if (digits == 0) {
    Refuse(Refusal::kSmuggling, 400, "chunk size line " + Quote(line) + " does not start with hex digits");
    return false;
  }
  // chunk-ext: *( ";" token [ "=" ( token / quoted-string ) ] ), no whitespace.
  std::string_view ext = line.substr(digits);
  while (!ext.empty()) {
    if (ext.front() != ';') {
      Refuse(Refusal::kSmuggling, 400, "chunk size line " + Quote(line) + " is not size[;ext]");
      return false;
    }
    ext.remove_prefix(1);
    size_t n = 0;
    while (n < ext.size() && IsTokenChar(static_cast<unsigned char>(ext[n]))) ++n;
    if (n == 0) {
      Refuse(Refusal::kSmuggling, 400, "chunk extension without a name");
      return false;
    }
    ext.remove_prefix(n);
    if (!ext.empty() && ext.front() == '=') {
      ext.remove_prefix(1);
      if (!ext.empty() && ext.front() == '"') {
        size_t i = 1;
        bool closed = false;
        while (i < ext.size()) {
          char c = ext[i];
          if (c == '\\' && i + 1 < ext.size()) {
            i += 2;
            continue;
          }
          if (c == '"') {
            closed = true;
            ++i;
            break;
          }
          ++i;
        }
        if (!closed) {
          Refuse(Refusal::kSmuggling, 400, "chunk extension with an unterminated quoted string");
          return false;
        }
        ext.remove_prefix(i);
      } else {
        size_t m = 0;
        while (m < ext.size() && IsTokenChar(static_cast<unsigned char>(ext[m]))) ++m;
        if (m == 0) {
          Refuse(Refusal::kSmuggling, 400, "chunk extension without a value after '='");
          return false;
        }
        ext.remove_prefix(m);
      }
    }
  }
  if (size > kMaxBodyBytes - request_.body.size()) {
    Refuse(Refusal::kTooLarge, 413, "a chunked body of more than " + std::to_string(kMaxBodyBytes) + " bytes");
    return false;
  }
  remaining_ = size;
  phase_ = size == 0 ? Phase::kTrailers : Phase::kChunkData;
  return true;
}

bool HttpRequestParser::OnTrailersEnd() {
  for (const char* framing : {"Content-Length", "Transfer-Encoding", "Host"}) {
    if (!FindHeaders(request_.trailers, framing).empty()) {
      Refuse(Refusal::kSmuggling, 400, std::string(framing) + " in the trailers of a chunked body");
      return false;
    }
  }
  phase_ = Phase::kRequestLine;
  return true;
}

ParseOutcome HttpRequestParser::Next() {
  ParseOutcome out;
  auto refused = [&] {
    out.status = ParseStatus::kRefused;
    out.refusal = refusal_;
    return out;
  };
  if (phase_ == Phase::kRefused) return refused();
  bool complete = false;
  while (!complete) {
    std::string_view line;
    LineStatus st = LineStatus::kLine;
    switch (phase_) {
      case Phase::kRequestLine: {
        st = TakeLine(kMaxRequestLineBytes, 414, "the request line", &line);
        if (st != LineStatus::kLine) break;
        if (line.empty()) {
          if (++empty_lines_ > kMaxLeadingEmptyLines) {
            Refuse(Refusal::kMalformed, 400,
                   "more than " + std::to_string(kMaxLeadingEmptyLines) + " empty lines before a request");
            return refused();
          }
          start_ = cursor_;
          continue;
        }
        if (!OnRequestLine(line)) return refused();
        field_bytes_ = line.size() + 2;
        phase_ = Phase::kFields;
        continue;
      }
      case Phase::kFields:
      case Phase::kTrailers: {
        bool head = phase_ == Phase::kFields;
        size_t room = field_bytes_ < kMaxHeaderBytes ? kMaxHeaderBytes - field_bytes_ : 0;
        st = TakeLine(room, 431, head ? "the request head" : "the trailer section", &line);
        if (st != LineStatus::kLine) break;
        field_bytes_ += line.size() + 2;
        if (!line.empty()) {
          if (!OnField(line, head ? &request_.headers : &request_.trailers)) return refused();
          continue;
        }
        if (head ? !OnFieldsEnd() : !OnTrailersEnd()) return refused();
        complete = phase_ == Phase::kRequestLine;
        continue;
      }
      case Phase::kBodyLength:
      case Phase::kChunkData: {
        size_t avail = buffer_.size() - cursor_;
        size_t take = static_cast<size_t>(std::min<uint64_t>(remaining_, avail));
        request_.body.append(buffer_, cursor_, take);
        cursor_ += take;
        remaining_ -= take;
        if (remaining_ > 0) {
          st = LineStatus::kNeedMore;
          break;
        }
        if (phase_ == Phase::kBodyLength) {
          phase_ = Phase::kRequestLine;
          complete = true;
        } else {
          phase_ = Phase::kChunkEnd;
        }
        continue;
      }
      case Phase::kChunkEnd: {
        if (buffer_.size() - cursor_ < 2) {
          if (buffer_.size() > cursor_ && buffer_[cursor_] != '\r') {
            Refuse(Refusal::kSmuggling, 400, "chunk data not followed by CRLF");
            return refused();
          }
          st = LineStatus::kNeedMore;
          break;
        }
        if (buffer_.compare(cursor_, 2, "\r\n") != 0) {
          Refuse(Refusal::kSmuggling, 400, "chunk data not followed by CRLF");
          return refused();
        }
        cursor_ += 2;
        phase_ = Phase::kChunkSize;
        continue;
      }
      case Phase::kChunkSize: {
        st = TakeLine(kMaxChunkLineBytes, 400, "a chunk size line", &line);
        if (st != LineStatus::kLine) break;
        if (!OnChunkSize(line)) return refused();
        if (phase_ == Phase::kTrailers) field_bytes_ = 0;
        continue;
      }
      case Phase::kRefused: return refused();
    }
    if (st == LineStatus::kRefused) return refused();
    if (st == LineStatus::kNeedMore) return out;
  }
  out.status = ParseStatus::kRequest;
  out.request = std::move(request_);
  out.raw = buffer_.substr(start_, cursor_ - start_);
  buffer_.erase(0, cursor_);
  start_ = cursor_ = scanned_ = 0;
  Reset();
  return out;
}

std::string SerializeRequest(const HttpRequest& request) {
  std::string out;
  out.reserve(256 + request.body.size());
  out.append(request.method).append(" ").append(request.target).append(" ").append(request.version).append("\r\n");
  for (const HttpHeader& h : request.headers) out.append(h.name).append(": ").append(h.value).append("\r\n");
  out.append("\r\n");
  if (!request.chunked) {
    out.append(request.body);
    return out;
  }
  if (!request.body.empty()) {
    char size[24];
    std::snprintf(size, sizeof size, "%zx\r\n", request.body.size());
    out.append(size).append(request.body).append("\r\n");
  }
  out.append("0\r\n");
  for (const HttpHeader& h : request.trailers) out.append(h.name).append(": ").append(h.value).append("\r\n");
  out.append("\r\n");
  return out;
}

std::string ErrorResponse(int status, std::string_view reason) {
  std::string body = "msb: ";
  for (char c : reason) {
    unsigned char u = static_cast<unsigned char>(c);
    body += (u < 0x20 || u == 0x7f) ? ' ' : c;
  }
  body += "\n";
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + StatusText(status) + "\r\n";
  out += "Content-Type: text/plain; charset=utf-8\r\n";
  out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
  out += "Connection: close\r\n\r\n";
  return out + body;
}

}  // namespace msb::secrets
