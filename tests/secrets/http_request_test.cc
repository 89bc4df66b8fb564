// Tests for HttpRequestParser and SerializeRequest: requests one at a time
// over keep-alive and pipelining, any split of the stream, chunked bodies,
// each refused smuggling form, the limits, and the round trip as a property.
#include "secrets/http_request.h"

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <string>
#include <vector>

#include "tests/secrets/request_gen.h"

namespace msb::secrets {
namespace {

// All outcomes of feeding stream in pieces of `step` bytes, until a refusal.
std::vector<ParseOutcome> ParseAll(std::string_view stream, size_t step = 0) {
  HttpRequestParser p;
  std::vector<ParseOutcome> out;
  if (step == 0) step = stream.size() + 1;
  for (size_t i = 0; i < stream.size(); i += step) {
    p.Feed(stream.substr(i, step));
    while (true) {
      ParseOutcome o = p.Next();
      if (o.status == ParseStatus::kNeedMore) break;
      out.push_back(std::move(o));
      if (out.back().status == ParseStatus::kRefused) return out;
    }
  }
  return out;
}

HttpRefusal RefusalOf(std::string_view stream) {
  auto all = ParseAll(stream);
  if (all.empty() || all.back().status != ParseStatus::kRefused) {
    ADD_FAILURE() << "not refused: " << stream;
    return {};
  }
  return all.back().refusal;
}

TEST(HttpRequestTest, SimpleGet) {
  std::string s = "GET /repos?page=2 HTTP/1.1\r\nHost: api.github.com\r\nAccept:  */* \r\n\r\n";
  auto all = ParseAll(s);
  ASSERT_EQ(all.size(), 1u);
  const ParseOutcome& o = all[0];
  ASSERT_EQ(o.status, ParseStatus::kRequest);
  EXPECT_EQ(o.request.method, "GET");
  EXPECT_EQ(o.request.target, "/repos?page=2");
  EXPECT_EQ(o.request.version, "HTTP/1.1");
  ASSERT_EQ(o.request.headers.size(), 2u);
  EXPECT_EQ(o.request.headers[1], (HttpHeader{"Accept", "*/*"}));
  EXPECT_TRUE(o.request.body.empty());
  EXPECT_EQ(o.raw, s);
}

TEST(HttpRequestTest, PipelinedRequestsOneAtATimeInAnySplit) {
  std::string a = "POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
  std::string b =
      "PUT /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3;x=\"y z\"\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: "
      "1\r\n\r\n";
  std::string c = "GET /c HTTP/1.0\r\n\r\n";
  std::string stream = a + b + c;
  for (size_t step : {1, 2, 3, 7, 16, 1000}) {
    auto all = ParseAll(stream, step);
    ASSERT_EQ(all.size(), 3u) << step;
    EXPECT_EQ(all[0].raw, a);
    EXPECT_EQ(all[0].request.body, "hello");
    EXPECT_EQ(all[1].raw, b);
    EXPECT_TRUE(all[1].request.chunked);
    EXPECT_EQ(all[1].request.body, "abcde");
    EXPECT_EQ(all[1].request.trailers, (std::vector<HttpHeader>{{"X-Sum", "1"}}));
    EXPECT_EQ(all[2].raw, c);
    EXPECT_EQ(all[2].request.version, "HTTP/1.0");
  }
}

TEST(HttpRequestTest, LeadingEmptyLinesAreSkippedUpToALimit) {
  auto all = ParseAll("\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n");
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].raw, "GET / HTTP/1.1\r\nHost: h\r\n\r\n");
  EXPECT_EQ(RefusalOf("\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n").kind, Refusal::kMalformed);
}

TEST(HttpRequestTest, NeedsMoreUntilTheBodyIsComplete) {
  HttpRequestParser p;
  p.Feed("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n12345");
  EXPECT_EQ(p.Next().status, ParseStatus::kNeedMore);
  EXPECT_EQ(p.phase(), HttpRequestParser::Phase::kBodyLength);
  p.Feed("67890GET");
  ParseOutcome o = p.Next();
  ASSERT_EQ(o.status, ParseStatus::kRequest);
  EXPECT_EQ(o.request.body, "1234567890");
  EXPECT_EQ(p.Next().status, ParseStatus::kNeedMore);
  EXPECT_EQ(p.buffered(), 3u);
  EXPECT_EQ(p.TakeBuffered(), "GET");
  EXPECT_EQ(p.buffered(), 0u);
}

struct RefusalCase {
  const char* what;
  std::string stream;
  Refusal kind;
  int status;
};

TEST(HttpRequestTest, RefusesSmugglingAndUnsupportedForms) {
  const std::string get = "GET / HTTP/1.1\r\nHost: h\r\n";
  std::vector<RefusalCase> cases = {
      {"CL and TE", "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", Refusal::kSmuggling,
       400},
      {"TE and CL", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", Refusal::kSmuggling,
       400},
      {"duplicate CL", "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", Refusal::kSmuggling,
       400},
      {"conflicting CL", "POST / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 4\r\n\r\nabcd", Refusal::kSmuggling,
       400},
      {"CL list", "POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc", Refusal::kSmuggling, 400},
      {"CL sign", "POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc", Refusal::kSmuggling, 400},
      {"CL hex", "POST / HTTP/1.1\r\nContent-Length: 0x3\r\n\r\nabc", Refusal::kSmuggling, 400},
      {"TE gzip", "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", Refusal::kSmuggling, 501},
      {"TE chunked twice", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", Refusal::kSmuggling, 501},
      {"TE twice", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
       Refusal::kSmuggling, 400},
      {"TE identity", "POST / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n", Refusal::kSmuggling, 501},
      {"TE in 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", Refusal::kSmuggling, 400},
      {"obs-fold", get + "X-A: 1\r\n  continued\r\n\r\n", Refusal::kSmuggling, 400},
      {"space before colon", get + "Transfer-Encoding : chunked\r\n\r\n", Refusal::kSmuggling, 400},
      {"bare LF in head", "GET / HTTP/1.1\nHost: h\n\n", Refusal::kSmuggling, 400},
      {"bare LF ending head", get + "\n", Refusal::kSmuggling, 400},
      {"bare CR in field", get + "X-A: 1\r2\r\n\r\n", Refusal::kSmuggling, 400},
      {"NUL in field", get + std::string("X-A: 1\0 2\r\n\r\n", 13), Refusal::kSmuggling, 400},
      {"chunk size with space", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3 \r\nabc\r\n0\r\n\r\n",
       Refusal::kSmuggling, 400},
      {"chunk size 0x", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
       Refusal::kSmuggling, 400},
      {"chunk size negative", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
       Refusal::kSmuggling, 400},
      {"chunk size empty", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\r\nabc\r\n0\r\n\r\n",
       Refusal::kSmuggling, 400},
      {"chunk size overflow", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000001\r\n",
       Refusal::kTooLarge, 413},
      {"chunk data too long", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n",
       Refusal::kSmuggling, 400},
      {"chunk LF only", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", Refusal::kSmuggling,
       400},
      {"chunk ext unterminated", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;a=\"b\r\nabc\r\n0\r\n\r\n",
       Refusal::kSmuggling, 400},
      {"CL in trailers", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nContent-Length: 4\r\n\r\n",
       Refusal::kSmuggling, 400},
      {"expect 100-continue", "POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
       Refusal::kExpectContinue, 417},
      {"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", Refusal::kHttp2, 505},
      {"HTTP/2.0 version", "GET / HTTP/2.0\r\n\r\n", Refusal::kUnsupported, 505},
      {"HTTP/0.9", "GET /\r\n\r\n", Refusal::kMalformed, 400},
      {"lower-case version", "GET / http/1.1\r\n\r\n", Refusal::kUnsupported, 505},
      {"CONNECT", "CONNECT api.github.com:443 HTTP/1.1\r\nHost: api.github.com\r\n\r\n", Refusal::kUnsupported, 501},
      {"authority-form GET", "GET api.github.com:443 HTTP/1.1\r\n\r\n", Refusal::kUnsupported, 400},
      {"asterisk GET", "GET * HTTP/1.1\r\n\r\n", Refusal::kUnsupported, 400},
      {"double space", "GET  / HTTP/1.1\r\n\r\n", Refusal::kMalformed, 400},
      {"tab separator", "GET\t/ HTTP/1.1\r\n\r\n", Refusal::kMalformed, 400},
      {"fragment", "GET /a#b HTTP/1.1\r\n\r\n", Refusal::kMalformed, 400},
      {"high byte in target", "GET /\xc3\xa9 HTTP/1.1\r\n\r\n", Refusal::kMalformed, 400},
      {"no colon", get + "Oops\r\n\r\n", Refusal::kMalformed, 400},
      {"empty name", get + ": v\r\n\r\n", Refusal::kMalformed, 400},
      {"CL too large", "POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n", Refusal::kTooLarge, 413},
  };
  for (const RefusalCase& c : cases) {
    HttpRefusal r = RefusalOf(c.stream);
    EXPECT_EQ(r.kind, c.kind) << c.what << ": " << r.reason;
    EXPECT_EQ(r.status, c.status) << c.what << ": " << r.reason;
    EXPECT_FALSE(r.reason.empty()) << c.what;
    EXPECT_EQ(r.reason.find('\n'), std::string::npos) << c.what;
  }
}

TEST(HttpRequestTest, RefusalIsStickyAndStopsPipelining) {
  HttpRequestParser p;
  p.Feed(
      "GET / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nxGET / "
      "HTTP/1.1\r\n\r\n");
  EXPECT_EQ(p.Next().status, ParseStatus::kRequest);
  EXPECT_EQ(p.Next().status, ParseStatus::kRefused);
  EXPECT_EQ(p.Next().status, ParseStatus::kRefused);
  p.Feed("GET / HTTP/1.1\r\n\r\n");
  EXPECT_EQ(p.Next().status, ParseStatus::kRefused);
  EXPECT_EQ(p.phase(), HttpRequestParser::Phase::kRefused);
}

TEST(HttpRequestTest, AbsoluteAndAsteriskForms) {
  auto all = ParseAll(
      "GET https://api.github.com/x HTTP/1.1\r\nHost: api.github.com\r\n\r\nOPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].request.target, "https://api.github.com/x");
  EXPECT_EQ(all[1].request.target, "*");
}

TEST(HttpRequestTest, Limits) {
  std::string long_target = "GET /" + std::string(kMaxRequestLineBytes, 'a') + " HTTP/1.1\r\n\r\n";
  EXPECT_EQ(RefusalOf(long_target).status, 414);
  // Refused before the line ends.
  EXPECT_EQ(RefusalOf("GET /" + std::string(kMaxRequestLineBytes, 'a')).status, 414);

  std::string many = "GET / HTTP/1.1\r\n";
  for (size_t i = 0; i <= kMaxHeaderCount; ++i) many += "X-" + std::to_string(i) + ": v\r\n";
  EXPECT_EQ(RefusalOf(many + "\r\n").status, 431);

  std::string big = "GET / HTTP/1.1\r\n";
  while (big.size() < kMaxHeaderBytes) big += "X-Big: " + std::string(4000, 'v') + "\r\n";
  EXPECT_EQ(RefusalOf(big + "\r\n").status, 431);

  std::string chunk_line =
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;" + std::string(kMaxChunkLineBytes, 'e') + "\r\n";
  EXPECT_EQ(RefusalOf(chunk_line).status, 400);

  std::string huge_chunks = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + std::string("800000\r\n") +
                            std::string(0x800000, 'x') + "\r\n" + "800001\r\n";
  EXPECT_EQ(RefusalOf(huge_chunks).status, 413);

  std::string at_limit = "POST / HTTP/1.1\r\nContent-Length: " + std::to_string(kMaxBodyBytes) + "\r\n\r\n";
  HttpRequestParser p;
  p.Feed(at_limit);
  EXPECT_EQ(p.Next().status, ParseStatus::kNeedMore);
}

TEST(HttpRequestTest, SerializeWritesChunkedBodyAsOneChunk) {
  HttpRequest r;
  r.method = "POST";
  r.target = "/x";
  r.version = "HTTP/1.1";
  r.headers = {{"Host", "h"}, {"Transfer-Encoding", "chunked"}};
  r.chunked = true;
  r.body = std::string(300, 'z');
  r.trailers = {{"X-T", "1"}};
  std::string s = SerializeRequest(r);
  EXPECT_NE(s.find("\r\n\r\n12c\r\n"), std::string::npos);
  EXPECT_EQ(s.substr(s.size() - 15), "\r\n0\r\nX-T: 1\r\n\r\n");
  auto all = ParseAll(s);
  ASSERT_EQ(all.size(), 1u);
  EXPECT_EQ(all[0].request, r);
  r.body.clear();
  EXPECT_EQ(SerializeRequest(r).substr(SerializeRequest(r).find("\r\n\r\n") + 4), "0\r\nX-T: 1\r\n\r\n");
}

TEST(HttpRequestTest, ErrorResponseIsOneLineAndCloses) {
  std::string r = ErrorResponse(403, "blocked: secret X\r\nInjected: yes");
  EXPECT_EQ(r.rfind("HTTP/1.1 403 Forbidden\r\n", 0), 0u);
  EXPECT_NE(r.find("Connection: close\r\n"), std::string::npos);
  std::string body = r.substr(r.find("\r\n\r\n") + 4);
  EXPECT_EQ(body, "msb: blocked: secret X  Injected: yes\n");
  EXPECT_NE(r.find("Content-Length: " + std::to_string(body.size()) + "\r\n"), std::string::npos);
}

TEST(HttpRequestTest, RefusalNames) {
  EXPECT_STREQ(ToString(Refusal::kSmuggling), "smuggling");
  EXPECT_STREQ(ToString(Refusal::kUnsupported), "unsupported");
}

// --- Properties ----------------------------------------------------------------

RC_GTEST_PROP(HttpRequestProperty, ParseOfSerializeIsIdentity, ()) {
  HttpRequest r = *RequestGen();
  std::string bytes = SerializeRequest(r);
  size_t step = *rc::gen::inRange<size_t>(1, bytes.size() + 2);
  auto all = ParseAll(bytes, step);
  RC_ASSERT(all.size() == 1u);
  RC_ASSERT(all[0].status == ParseStatus::kRequest);
  RC_ASSERT(all[0].request == r);
  RC_ASSERT(all[0].raw == bytes);
}

RC_GTEST_PROP(HttpRequestProperty, PipelinedStreamSplitsAnywhere, ()) {
  auto requests = *rc::gen::resize(5, rc::gen::nonEmpty(rc::gen::container<std::vector<HttpRequest>>(RequestGen())));
  std::string stream;
  for (const HttpRequest& r : requests) stream += SerializeRequest(r);
  size_t step = *rc::gen::inRange<size_t>(1, 64);
  auto all = ParseAll(stream, step);
  RC_ASSERT(all.size() == requests.size());
  std::string joined;
  for (size_t i = 0; i < all.size(); ++i) {
    RC_ASSERT(all[i].request == requests[i]);
    joined += all[i].raw;
  }
  RC_ASSERT(joined == stream);
}

// Any bytes: the parser answers, and whatever it accepts serializes to bytes
// it reads back the same.
// A complete request before the junk makes sure the round trip is checked
// at least once whatever the junk is; random bytes alone rarely parse.
RC_GTEST_PROP(HttpRequestProperty, ArbitraryBytesNeverBreakTheRoundTrip, (std::string junk)) {
  const std::string complete = "GET /x?y=1 HTTP/1.1\r\nHost: a.test\r\nX-N: 1\r\n\r\n";
  const std::string prefix = *rc::gen::element<std::string>(
      "", "GET / HTTP/1.1\r\n", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", complete);
  std::string stream = prefix + junk;
  size_t round_trips = 0;
  for (const ParseOutcome& o : ParseAll(stream, 1 + junk.size() % 7)) {
    if (o.status != ParseStatus::kRequest) continue;
    auto again = ParseAll(SerializeRequest(o.request));
    RC_ASSERT(again.size() == 1u);
    RC_ASSERT(again[0].request == o.request);
    ++round_trips;
  }
  RC_TAG(round_trips > 0 ? "round trip checked" : "no request parsed");
  if (prefix == complete) RC_ASSERT(round_trips >= 1u);
}

}  // namespace
}  // namespace msb::secrets
