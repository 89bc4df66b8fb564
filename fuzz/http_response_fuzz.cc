// libFuzzer target for what a registry (or a proxy) answers the registry
// client (image/http.h): the input's first byte picks the request method
// (bit 0: HEAD, else GET) and how the body is split between reads; the rest
// is the bytes on the connection. The head goes through ParseResponseHead and
// ResponseBodyFraming, the functions HttpClient reads every response with;
// the body through the ChunkedDecoder or its Content-Length; the headers the
// client acts on through ResolveUrl (Location, on redirects) and
// ParseChallenge and ParseUrl (WWW-Authenticate's realm, where a token is
// fetched). Oracles: a parsed head prints back to a head that parses the
// same, with lowercase trimmed names; the framing follows the headers;
// chunked decoding does not depend on the split; every URL the client would
// then request has a clean host and path and prints back to itself. No
// sockets: HttpClient::Do's I/O around these is http_client_fuzz.cc's.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "image/http.h"

namespace {

using namespace msb::image::http;

[[noreturn]] void Die(const char* what, std::string_view detail = {}) {
  std::fprintf(stderr, "http_response_fuzz: %s\n%.*s\n", what, static_cast<int>(detail.size()), detail.data());
  std::abort();
}

void Check(bool cond, const char* what, std::string_view detail = {}) {
  if (!cond) Die(what, detail);
}

bool IsSpace(char c) { return c == ' ' || c == '\t'; }

std::string Print(const ResponseHead& h) {
  char status[4];
  std::snprintf(status, sizeof status, "%03d", h.status);
  std::string out = std::string("HTTP/1.1 ") + status;
  if (!h.reason.empty()) out += " " + h.reason;
  for (const auto& [k, v] : h.headers) out += "\r\n" + k + ": " + v;
  return out;
}

// A URL the client would send a request for: its parts are clean, and it
// prints to a string that parses back to it.
void CheckUrl(const Url& u, std::string_view from) {
  Check(u.scheme == "http" || u.scheme == "https", "a URL with another scheme", from);
  Check(!u.host.empty() && u.port != 0, "a URL without host or port", from);
  for (char c : u.host) {
    auto b = static_cast<unsigned char>(c);
    Check(b > 0x20 && b != 0x7f && c != '/' && c != '?' && c != '#' && c != '@',
          "a URL host with a control byte, space or delimiter", from);
  }
  Check(!u.target.empty() && u.target[0] == '/', "a URL target not starting with /", from);
  for (char c : u.target) {
    auto b = static_cast<unsigned char>(c);
    Check(b > 0x20 && b != 0x7f, "a URL target with a control byte or space", from);
  }
  auto again = ParseUrl(u.ToString());
  Check(again.ok() && again->scheme == u.scheme && again->host == u.host && again->port == u.port &&
            again->target == u.target,
        "a URL does not print back to itself", u.ToString());
}

std::string Decode(std::string_view body, size_t split, bool* ok, bool* done) {
  ChunkedDecoder dec;
  std::string out;
  auto sink = [&](std::string_view b) {
    out.append(b);
    return msb::OkStatus();
  };
  *ok = true;
  size_t pos = 0;
  while (pos < body.size() && !dec.Done()) {
    size_t n = std::min(split, body.size() - pos);
    // As HttpClient feeds it: what is buffered and not yet used, then more.
    auto used = dec.Feed(body.substr(pos, n), sink);
    if (!used.ok()) {
      *ok = false;
      break;
    }
    Check(*used <= n, "the decoder used more than it was given");
    if (*used < n && !dec.Done()) {
      Check(false, "the decoder left bytes unused before it was done");
    }
    pos += *used;
    if (*used == 0 && !dec.Done()) break;
  }
  *done = dec.Done();
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool head_request = (data[0] & 1) != 0;
  const size_t split = 1 + (data[0] >> 1);
  std::string_view wire(reinterpret_cast<const char*>(data + 1), size - 1);

  size_t end = wire.find("\r\n\r\n");
  if (end == std::string_view::npos || end > kMaxHeaderBytes) return 0;
  std::string_view head_bytes = wire.substr(0, end);
  std::string_view body = wire.substr(end + 4);

  auto head = ParseResponseHead(head_bytes);
  if (!head.ok()) {
    Check(!head.error().message().empty(), "an error without a message");
    return 0;
  }
  Check(head->status >= 0 && head->status <= 999, "a status out of range");
  Check(head->reason.find("\r\n") == std::string::npos, "a reason holding CRLF");
  for (const auto& [k, v] : head->headers) {
    Check(!k.empty() && !IsSpace(k.front()) && !IsSpace(k.back()), "an empty or untrimmed header name", k);
    Check(k.find(':') == std::string::npos && k.find("\r\n") == std::string::npos, "a header name with : or CRLF", k);
    for (char c : k) Check(!(c >= 'A' && c <= 'Z'), "a header name not in lowercase", k);
    Check(v.empty() || (!IsSpace(v.front()) && !IsSpace(v.back()) && v.back() != '\r'), "an untrimmed value", v);
    Check(v.find("\r\n") == std::string::npos, "a header value holding CRLF", v);
  }
  std::string printed = Print(*head);
  auto again = ParseResponseHead(printed);
  Check(again.ok() && again->status == head->status && again->reason == head->reason &&
            again->headers == head->headers,
        "a parsed head does not print back to itself", printed);

  auto framing = ResponseBodyFraming(head_request ? "HEAD" : "GET", head->status, head->headers);
  if (framing.ok()) {
    using Kind = BodyFraming::Kind;
    if (head_request) Check(framing->kind == Kind::kNone, "a body expected after HEAD");
    if (framing->kind == Kind::kLength) {
      Check(std::to_string(framing->length) == HeaderValue(head->headers, "content-length") ||
                HeaderValue(head->headers, "content-length").find_first_not_of('0') != 0,
            "the length is not the Content-Length");
    }
    if (framing->kind == Kind::kUntilClose) Check(!framing->keep_alive, "keep-alive with a body until close");
    if (framing->kind == Kind::kChunked) {
      bool ok_whole, done_whole, ok_split, done_split;
      std::string whole = Decode(body, body.size() + 1, &ok_whole, &done_whole);
      std::string parts = Decode(body, split, &ok_split, &done_split);
      Check(ok_whole == ok_split && done_whole == done_split, "chunked decoding depends on the reads");
      if (ok_whole) Check(whole == parts, "chunked decoding depends on the reads");
    }
  }

  static const Url base = *ParseUrl("https://registry.example:5000/v2/library/alpine/manifests/latest?x=1");
  std::string location = HeaderValue(head->headers, "location");
  if (!location.empty()) {
    if (auto next = ResolveUrl(base, location); next.ok()) CheckUrl(*next, location);
  }
  std::string auth = HeaderValue(head->headers, "www-authenticate");
  if (!auth.empty()) {
    if (auto ch = ParseChallenge(auth); ch.ok()) {
      Check(!ch->scheme.empty(), "a challenge without a scheme");
      for (const auto& [k, v] : ch->params) Check(!k.empty(), "a challenge parameter without a name");
      if (auto realm = ParseUrl(ch->Param("realm")); realm.ok()) CheckUrl(*realm, ch->Param("realm"));
      (void)QueryEscape(ch->Param("scope"));
    }
  }
  return 0;
}
