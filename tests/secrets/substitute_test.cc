// Tests for the substitution engine: each gate's positive and negative case,
// each inject place and form, framing recomputed, pass-through byte for
// byte, pipelined requests judged one by one, the counters, and properties
// (no placeholder: unchanged; blocked: never the value).
#include "secrets/substitute.h"

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <set>

#include "secrets/counters.h"
#include "tests/secrets/request_gen.h"

namespace msb::secrets {
namespace {

constexpr std::string_view kGithubValue = "ghp_REALtoken123";
constexpr std::string_view kStoreValue = "s3 cr/t&=+";
const std::string kGithubIp = "140.82.112.6";

struct Fixture {
  std::string p_github = *NewPlaceholder();
  std::string p_store = *NewPlaceholder();
  std::vector<SecretBinding> secrets;
  std::set<std::pair<std::string, std::string>> pins = {{"api.github.com", kGithubIp},
                                                        {"files.example.com", "93.184.215.14"}};

  Fixture() {
    SecretBinding gh;
    gh.name = "GITHUB_TOKEN";
    gh.placeholder = p_github;
    gh.value = kGithubValue;
    gh.allow = {"api.github.com"};
    SecretBinding store;
    store.name = "STORE_KEY";
    store.placeholder = p_store;
    store.value = kStoreValue;
    store.allow = {"*.example.com"};
    store.inject = {true, true, true, true};
    secrets = {gh, store};
  }

  FlowContext Flow(std::optional<std::string> sni = "api.github.com", std::string ip = kGithubIp) const {
    FlowContext f;
    f.sni = std::move(sni);
    f.dest_ip = std::move(ip);
    f.pinned = [this](std::string_view name, std::string_view dest) {
      return pins.count({std::string(name), std::string(dest)}) > 0;
    };
    return f;
  }

  // Parses text as exactly one request and judges it.
  Substitution Judge(const std::string& text, const FlowContext& flow) const {
    HttpRequestParser parser;
    parser.Feed(text);
    ParseOutcome o = parser.Next();
    EXPECT_EQ(o.status, ParseStatus::kRequest) << o.refusal.reason;
    return Substitute(secrets, flow, o.request, o.raw);
  }
  Substitution Judge(const std::string& text) const { return Judge(text, Flow()); }
};

// The one request in bytes.
HttpRequest Reparse(const std::string& bytes) {
  HttpRequestParser parser;
  parser.Feed(bytes);
  ParseOutcome o = parser.Next();
  EXPECT_EQ(o.status, ParseStatus::kRequest) << o.refusal.reason;
  EXPECT_EQ(parser.buffered(), 0u);
  return o.request;
}

void ExpectBlocked(const Substitution& s, const std::string& secret, const std::string& reason_part) {
  EXPECT_EQ(s.verdict, Verdict::kBlocked) << s.upstream;
  EXPECT_EQ(s.blocked_secret, secret);
  EXPECT_NE(s.reason.find(reason_part), std::string::npos) << s.reason;
  EXPECT_NE(s.reason.find(secret), std::string::npos) << s.reason;
  EXPECT_EQ(s.reason.find('\n'), std::string::npos);
  EXPECT_TRUE(s.upstream.empty());
  EXPECT_EQ(s.response.rfind("HTTP/1.1 403 Forbidden\r\n", 0), 0u);
  EXPECT_NE(s.response.find("Connection: close"), std::string::npos);
  for (std::string_view v : {kGithubValue, kStoreValue}) {
    EXPECT_EQ(s.response.find(v), std::string::npos);
    EXPECT_EQ(s.reason.find(v), std::string::npos);
  }
}

TEST(SubstituteTest, NoPlaceholderPassesThroughByteForByte) {
  Fixture f;
  std::string raw = "GET /x?a=b HTTP/1.1\r\nHost:   evil.com  \r\nX-Odd:\tv\r\n\r\n";
  Substitution s = f.Judge(raw, f.Flow("evil.com", "6.6.6.6"));
  EXPECT_EQ(s.verdict, Verdict::kPassThrough);
  EXPECT_EQ(s.upstream, raw);
}

TEST(SubstituteTest, BearerHeaderIsSubstituted) {
  Fixture f;
  Substitution s = f.Judge("GET /user HTTP/1.1\r\nHost: api.github.com\r\nAuthorization: Bearer " + f.p_github +
                           "\r\nX-Other: a " + f.p_github + " b\r\n\r\n");
  ASSERT_EQ(s.verdict, Verdict::kSubstituted) << s.reason;
  EXPECT_EQ(s.substituted, (std::vector<std::string>{"GITHUB_TOKEN"}));
  HttpRequest r = Reparse(s.upstream);
  EXPECT_EQ(r.headers[1].value, "Bearer " + std::string(kGithubValue));
  EXPECT_EQ(r.headers[2].value, "a " + std::string(kGithubValue) + " b");
  EXPECT_EQ(s.upstream.find(f.p_github), std::string::npos);
}

TEST(SubstituteTest, BasicAuthIsDecodedSubstitutedAndReencoded) {
  Fixture f;
  Substitution s = f.Judge("GET / HTTP/1.1\r\nHost: api.github.com\r\nAuthorization: basic " +
                           Base64Encode("x-access-token:" + f.p_github) + "\r\n\r\n");
  ASSERT_EQ(s.verdict, Verdict::kSubstituted) << s.reason;
  HttpRequest r = Reparse(s.upstream);
  EXPECT_EQ(r.headers[1].value, "basic " + Base64Encode("x-access-token:" + std::string(kGithubValue)));
}

TEST(SubstituteTest, PlaceholderAsTheWholeBasicTokenIsAHeaderSubstitution) {
  Fixture f;
  Substitution s = f.Judge("GET / HTTP/1.1\r\nHost: api.github.com\r\nAuthorization: Basic " + f.p_github + "\r\n\r\n");
  ASSERT_EQ(s.verdict, Verdict::kSubstituted) << s.reason;
  EXPECT_EQ(Reparse(s.upstream).headers[1].value, "Basic " + std::string(kGithubValue));
}

TEST(SubstituteTest, Gate0PlainHttpIsBlocked) {
  Fixture f;
  ExpectBlocked(f.Judge("GET / HTTP/1.1\r\nHost: api.github.com\r\nAuthorization: Bearer " + f.p_github + "\r\n\r\n",
                        f.Flow(std::nullopt)),
                "GITHUB_TOKEN", "plain-HTTP");
}

TEST(SubstituteTest, Gate1SniOutsideTheAllowListIsBlocked) {
  Fixture f;
  std::string req = "GET / HTTP/1.1\r\nHost: files.example.com\r\nAuthorization: Bearer " + f.p_github + "\r\n\r\n";
  ExpectBlocked(f.Judge(req, f.Flow("files.example.com", "93.184.215.14")), "GITHUB_TOKEN", "not in its allow list");
}

TEST(SubstituteTest, Gate1WildcardMatchesSubdomainsOnly) {
  Fixture f;
  f.pins.insert({"example.com", "1.2.3.4"});
  f.pins.insert({"a.b.example.com", "1.2.3.4"});
  auto req = [&](const std::string& host) {
    return "GET / HTTP/1.1\r\nHost: " + host + "\r\nX-Key: " + f.p_store + "\r\n\r\n";
  };
  EXPECT_EQ(f.Judge(req("a.b.example.com"), f.Flow("a.b.example.com", "1.2.3.4")).verdict, Verdict::kSubstituted);
  ExpectBlocked(f.Judge(req("example.com"), f.Flow("example.com", "1.2.3.4")), "STORE_KEY", "not in its allow list");
  EXPECT_TRUE(AllowMatches("*.example.com", "x.example.com"));
  EXPECT_FALSE(AllowMatches("*.example.com", "example.com"));
  EXPECT_FALSE(AllowMatches("*.example.com", "xexample.com"));
  EXPECT_FALSE(AllowMatches("*.example.com", "x.example.com.evil"));
  EXPECT_TRUE(AllowMatches("api.github.com", "api.github.com"));
  EXPECT_FALSE(AllowMatches("api.github.com", "x.api.github.com"));
  EXPECT_TRUE(SniMatchesAnySecret(f.secrets, "files.example.com"));
  EXPECT_TRUE(SniMatchesAnySecret(f.secrets, "api.github.com"));
  EXPECT_FALSE(SniMatchesAnySecret(f.secrets, "github.com"));
}

TEST(SubstituteTest, Gate2UnpinnedDestinationIsBlocked) {
  Fixture f;
  std::string req = "GET / HTTP/1.1\r\nHost: api.github.com\r\nAuthorization: Bearer " + f.p_github + "\r\n\r\n";
  ExpectBlocked(f.Judge(req, f.Flow("api.github.com", "6.6.6.6")), "GITHUB_TOKEN", "was not resolved to 6.6.6.6");
  FlowContext no_pins = f.Flow();
  no_pins.pinned = nullptr;
  ExpectBlocked(f.Judge(req, no_pins), "GITHUB_TOKEN", "was not resolved");
}

TEST(SubstituteTest, Gate3HostMustBeExactlyOneAndEqualTheSni) {
  Fixture f;
  std::string auth = "Authorization: Bearer " + f.p_github + "\r\n";
  ExpectBlocked(f.Judge("GET / HTTP/1.1\r\nHost: evil.com\r\n" + auth + "\r\n"), "GITHUB_TOKEN",
                "is not api.github.com");
  ExpectBlocked(f.Judge("GET / HTTP/1.1\r\n" + auth + "\r\n"), "GITHUB_TOKEN", "0 Host fields");
  ExpectBlocked(f.Judge("GET / HTTP/1.1\r\nHost: api.github.com\r\nhost: api.github.com\r\n" + auth + "\r\n"),
                "GITHUB_TOKEN", "2 Host fields");
  ExpectBlocked(f.Judge("GET / HTTP/1.1\r\nHost: api.github.com:8443\r\n" + auth + "\r\n"), "GITHUB_TOKEN",
                "is not api.github.com");
  ExpectBlocked(f.Judge("GET https://evil.com/ HTTP/1.1\r\nHost: api.github.com\r\n" + auth + "\r\n"), "GITHUB_TOKEN",
                "authority");
  for (std::string host : {"API.GitHub.COM", "api.github.com.", "api.github.com:443", "Api.Github.Com.:443"}) {
    EXPECT_EQ(f.Judge("GET / HTTP/1.1\r\nHost: " + host + "\r\n" + auth + "\r\n").verdict, Verdict::kSubstituted)
        << host;
  }
  EXPECT_EQ(f.Judge("GET https://api.github.com:443/x HTTP/1.1\r\nHost: api.github.com\r\n" + auth + "\r\n").verdict,
            Verdict::kSubstituted);
}

TEST(SubstituteTest, GuestBytesQuotedInReasonsAreRedacted) {
  Fixture f;
  Substitution s = f.Judge("GET / HTTP/1.1\r\nHost: x" + std::string(kGithubValue) + ".com\r\nAuthorization: Bearer " +
                           f.p_github + "\r\n\r\n");
  ExpectBlocked(s, "GITHUB_TOKEN", "Host \"x[secret GITHUB_TOKEN].com\"");
  SubstitutionEngine engine(f.secrets);
  EXPECT_EQ(engine.Redact("a" + std::string(kStoreValue) + std::string(kStoreValue) + "b"),
            "a[secret STORE_KEY][secret STORE_KEY]b");
  EXPECT_EQ(engine.Redact("nothing here"), "nothing here");
}

TEST(SubstituteTest, NormalizeHost) {
  EXPECT_EQ(NormalizeHost("Example.COM"), "example.com");
  EXPECT_EQ(NormalizeHost("example.com.:443"), "example.com");
  EXPECT_FALSE(NormalizeHost("example.com:80"));
  EXPECT_FALSE(NormalizeHost("example.com:"));
  EXPECT_FALSE(NormalizeHost("example.com.."));
  EXPECT_FALSE(NormalizeHost("user@example.com"));
  EXPECT_FALSE(NormalizeHost("[::1]:443"));
  EXPECT_FALSE(NormalizeHost("10.0.0.1"));
  EXPECT_FALSE(NormalizeHost(""));
}

TEST(SubstituteTest, Gate4QueryNeedsInjectQuery) {
  Fixture f;
  ExpectBlocked(f.Judge("GET /?token=" + f.p_github + " HTTP/1.1\r\nHost: api.github.com\r\n\r\n"), "GITHUB_TOKEN",
                "where inject.query is off");
  auto store = f.Flow("files.example.com", "93.184.215.14");
  Substitution s = f.Judge(
      "GET /get?key=" + f.p_store + "&k2=%6dsb" + f.p_store.substr(3) + " HTTP/1.1\r\nHost: files.example.com\r\n\r\n",
      store);
  ASSERT_EQ(s.verdict, Verdict::kSubstituted) << s.reason;
  EXPECT_EQ(Reparse(s.upstream).target, "/get?key=s3%20cr%2Ft%26%3D%2B&k2=s3%20cr%2Ft%26%3D%2B");
}

TEST(SubstituteTest, Gate4PlacesThatAreNeverSubstituted) {
  Fixture f;
  auto store = f.Flow("files.example.com", "93.184.215.14");
  const std::string host = "Host: files.example.com\r\n";
  ExpectBlocked(f.Judge("GET /" + f.p_store + " HTTP/1.1\r\n" + host + "\r\n", store), "STORE_KEY", "the request path");
  ExpectBlocked(f.Judge("GET / HTTP/1.1\r\n" + host + "X-" + f.p_store + ": 1\r\n\r\n", store), "STORE_KEY",
                "a field name");
  ExpectBlocked(f.Judge(f.p_store + " / HTTP/1.1\r\n" + host + "\r\n", store), "STORE_KEY", "the request line");
  ExpectBlocked(
      f.Judge("POST / HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n0\r\nX-T: " + f.p_store + "\r\n\r\n",
              store),
      "STORE_KEY", "the trailers");
}

TEST(SubstituteTest, Gate4FormsThatAreNeverSubstituted) {
  Fixture f;
  auto store = f.Flow("files.example.com", "93.184.215.14");
  const std::string host = "Host: files.example.com\r\n";
  ExpectBlocked(f.Judge("GET / HTTP/1.1\r\n" + host + "X-Key: %6Dsb" + f.p_store.substr(3) + "\r\n\r\n", store),
                "STORE_KEY", "percent-encoded in the X-Key field");
  ExpectBlocked(f.Judge("GET / HTTP/1.1\r\n" + host + "X-Key: " + Base64Encode("k:" + f.p_store) + "\r\n\r\n", store),
                "STORE_KEY", "base64 in the X-Key field");
  ExpectBlocked(
      f.Judge("GET /?q=%25" + PercentEncode("6D") + "sb" + f.p_store.substr(3) + " HTTP/1.1\r\n" + host + "\r\n",
              store),
      "STORE_KEY", "percent-encoded twice");
  std::string b64_body = Base64Encode("{\"k\":\"" + f.p_store + "\"}");
  ExpectBlocked(f.Judge("POST / HTTP/1.1\r\n" + host + "Content-Length: " + std::to_string(b64_body.size()) +
                            "\r\n\r\n" + b64_body,
                        store),
                "STORE_KEY", "base64 in the body");
  ExpectBlocked(f.Judge("GET / HTTP/1.1\r\n" + host + "Authorization: Basic " +
                            Base64Encode("u:%6Dsb" + f.p_store.substr(3)) + "\r\n\r\n",
                        store),
                "STORE_KEY", "percent-encoded in the Authorization: Basic credentials");
}

TEST(SubstituteTest, Gate4BodyAndBasicAuthFollowTheFlags) {
  Fixture f;
  std::string body = "{\"token\":\"" + f.p_github + "\"}";
  ExpectBlocked(f.Judge("POST / HTTP/1.1\r\nHost: api.github.com\r\nContent-Length: " + std::to_string(body.size()) +
                        "\r\n\r\n" + body),
                "GITHUB_TOKEN", "where inject.body is off");
  f.secrets[0].inject.basic_auth = false;
  ExpectBlocked(f.Judge("GET / HTTP/1.1\r\nHost: api.github.com\r\nAuthorization: Basic " +
                        Base64Encode("u:" + f.p_github) + "\r\n\r\n"),
                "GITHUB_TOKEN", "where inject.basic_auth is off");
  f.secrets[0].inject.headers = false;
  ExpectBlocked(f.Judge("GET / HTTP/1.1\r\nHost: api.github.com\r\nX-Token: " + f.p_github + "\r\n\r\n"),
                "GITHUB_TOKEN", "where inject.headers is off");
}

TEST(SubstituteTest, BodyWithContentLengthIsRecomputed) {
  Fixture f;
  std::string body = "a=" + f.p_store + "&b=" + std::string("%6D") + f.p_store.substr(1);
  Substitution s =
      f.Judge("POST /form HTTP/1.1\r\nHost: files.example.com\r\nContent-Length: " + std::to_string(body.size()) +
                  "\r\nX-After: 1\r\n\r\n" + body,
              f.Flow("files.example.com", "93.184.215.14"));
  ASSERT_EQ(s.verdict, Verdict::kSubstituted) << s.reason;
  HttpRequest r = Reparse(s.upstream);
  EXPECT_EQ(r.body, "a=" + std::string(kStoreValue) + "&b=" + PercentEncode(kStoreValue));
  EXPECT_EQ(r.headers[1].value, std::to_string(r.body.size()));
  EXPECT_EQ(r.headers[2], (HttpHeader{"X-After", "1"}));
}

TEST(SubstituteTest, ChunkedBodyIsRechunked) {
  Fixture f;
  std::string p = f.p_store;
  // The placeholder spans two chunks: 10 bytes, then the other 33 (0x21).
  ASSERT_EQ(p.size(), 43u);
  std::string chunks =
      "5\r\n{\"k\":\r\n1\r\n\"\r\na\r\n" + p.substr(0, 10) + "\r\n21\r\n" + p.substr(10) + "\r\n2\r\n\"}\r\n0\r\n\r\n";
  Substitution s = f.Judge("POST / HTTP/1.1\r\nHost: files.example.com\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks,
                           f.Flow("files.example.com", "93.184.215.14"));
  ASSERT_EQ(s.verdict, Verdict::kSubstituted) << s.reason;
  HttpRequest r = Reparse(s.upstream);
  EXPECT_TRUE(r.chunked);
  EXPECT_EQ(r.body, "{\"k\":\"" + std::string(kStoreValue) + "\"}");
  EXPECT_TRUE(FindHeaders(r.headers, "Content-Length").empty());
}

TEST(SubstituteTest, ValueThatCannotGoInAFieldIsBlocked) {
  Fixture f;
  f.secrets[0].value = "tok\r\nX-Injected: 1";
  ExpectBlocked(f.Judge("GET / HTTP/1.1\r\nHost: api.github.com\r\nAuthorization: Bearer " + f.p_github + "\r\n\r\n"),
                "GITHUB_TOKEN", "control characters");
}

TEST(SubstituteTest, TwoSecretsInOneRequest) {
  Fixture f;
  f.secrets[1].allow.push_back("api.github.com");
  Substitution s = f.Judge("GET / HTTP/1.1\r\nHost: api.github.com\r\nAuthorization: Bearer " + f.p_github +
                           "\r\nX-Store: " + f.p_store + "\r\n\r\n");
  ASSERT_EQ(s.verdict, Verdict::kSubstituted) << s.reason;
  EXPECT_EQ(s.substituted, (std::vector<std::string>{"GITHUB_TOKEN", "STORE_KEY"}));
  // One secret failing a gate blocks the whole request.
  f.secrets[1].allow = {"*.example.com"};
  ExpectBlocked(f.Judge("GET / HTTP/1.1\r\nHost: api.github.com\r\nAuthorization: Bearer " + f.p_github +
                        "\r\nX-Store: " + f.p_store + "\r\n\r\n"),
                "STORE_KEY", "not in its allow list");
}

TEST(SubstituteTest, PipelinedRequestsAreJudgedOneByOne) {
  Fixture f;
  SubstitutionEngine engine(f.secrets);
  std::string stream = "GET /a HTTP/1.1\r\nHost: api.github.com\r\n\r\n" +
                       ("GET /b HTTP/1.1\r\nHost: api.github.com\r\nAuthorization: token " + f.p_github + "\r\n\r\n") +
                       ("GET /c?t=" + f.p_github + " HTTP/1.1\r\nHost: api.github.com\r\n\r\n");
  HttpRequestParser parser;
  parser.Feed(stream);
  std::vector<Verdict> verdicts;
  for (ParseOutcome o = parser.Next(); o.status == ParseStatus::kRequest; o = parser.Next()) {
    verdicts.push_back(engine.Judge(f.Flow(), o.request, o.raw).verdict);
  }
  EXPECT_EQ(verdicts, (std::vector<Verdict>{Verdict::kPassThrough, Verdict::kSubstituted, Verdict::kBlocked}));
}

TEST(SubstituteTest, BindSecretTakesTheSandboxfileFields) {
  schema::Secret spec;
  spec.allow = {"api.github.com", "*.githubusercontent.com"};
  spec.inject_query = true;
  spec.inject_basic_auth = false;
  SecretValue value = *SecretValue::Create("v");
  SecretBinding b = BindSecret("GH", spec, "msb-secret-x", value);
  EXPECT_EQ(b.name, "GH");
  EXPECT_EQ(b.value, "v");
  EXPECT_EQ(b.allow, spec.allow);
  EXPECT_EQ(b.inject, (InjectFlags{true, false, true, false}));
}

TEST(SubstituteTest, CountersAndRateLimitedLogLines) {
  Fixture f;
  InjectionCounters counters;
  auto t0 = InjectionCounters::Clock::time_point{} + std::chrono::hours(1);
  Substitution blocked = f.Judge("GET /?t=" + f.p_github + " HTTP/1.1\r\nHost: api.github.com\r\n\r\n");
  Substitution ok =
      f.Judge("GET / HTTP/1.1\r\nHost: api.github.com\r\nAuthorization: Bearer " + f.p_github + "\r\n\r\n");
  EXPECT_FALSE(counters.Record(ok, t0));
  auto first = counters.Record(blocked, t0);
  ASSERT_TRUE(first);
  EXPECT_EQ(first->rfind("blocked: secret GITHUB_TOKEN", 0), 0u) << *first;
  EXPECT_FALSE(counters.Record(blocked, t0 + std::chrono::seconds(1)));
  EXPECT_FALSE(counters.Record(blocked, t0 + std::chrono::seconds(9)));
  auto later = counters.Record(blocked, t0 + kBlockLogInterval);
  ASSERT_TRUE(later);
  EXPECT_NE(later->find("(2 more blocks of secret GITHUB_TOKEN not logged)"), std::string::npos) << *later;
  EXPECT_EQ(counters.CountsFor("GITHUB_TOKEN"), (SecretCounts{1, 4}));
  EXPECT_EQ(counters.CountsFor("STORE_KEY"), SecretCounts{});
}

// --- Properties ----------------------------------------------------------------

RC_GTEST_PROP(SubstituteProperty, NoPlaceholderMeansByteIdentical, ()) {
  Fixture f;
  HttpRequest r = *RequestGen();
  std::string raw = SerializeRequest(r);
  auto sni = *rc::gen::element<std::optional<std::string>>(std::nullopt, "api.github.com", "files.example.com");
  Substitution s = Substitute(f.secrets, f.Flow(sni), r, raw);
  RC_ASSERT(s.verdict == Verdict::kPassThrough);
  RC_ASSERT(s.upstream == raw);
}

// A placeholder put anywhere, in any form, under any flow facts: a block
// never carries the value; a substitution leaves no placeholder behind and
// is a valid request.
RC_GTEST_PROP(SubstituteProperty, BlockedNeverHoldsTheValue, ()) {
  Fixture f;
  HttpRequest r = *RequestGen();
  size_t which = *rc::gen::inRange<size_t>(0, 2);
  const std::string& p = which == 0 ? f.p_github : f.p_store;
  std::string form = *rc::gen::element(p, "%6D" + p.substr(1), "%6d%73" + p.substr(2), Base64Encode("u:" + p));
  switch (*rc::gen::inRange(0, 5)) {
    case 0: r.headers.push_back({"X-Token", form}); break;
    case 1: r.headers.push_back({"Authorization", "Basic " + Base64Encode("u:" + p)}); break;
    case 2: r.target += (r.target.find('?') == std::string::npos ? "?k=" : "&k=") + form; break;
    case 3: r.target = "/" + form + r.target; break;
    default:
      r.body += form;
      for (HttpHeader& h : r.headers) {
        if (EqualsIgnoreCase(h.name, "Content-Length")) h.value = std::to_string(r.body.size());
      }
      if (!r.chunked && FindHeaders(r.headers, "Content-Length").empty()) {
        r.headers.push_back({"Content-Length", std::to_string(r.body.size())});
      }
      break;
  }
  r.headers.erase(std::remove_if(r.headers.begin(), r.headers.end(),
                                 [](const HttpHeader& h) { return EqualsIgnoreCase(h.name, "Host"); }),
                  r.headers.end());
  // Half the time the flow's facts fit the secret; else each is drawn alone.
  std::string host = which == 0 ? "api.github.com" : "files.example.com";
  std::optional<std::string> sni = host;
  std::string ip = which == 0 ? kGithubIp : "93.184.215.14";
  if (*rc::gen::arbitrary<bool>()) {
    host = *rc::gen::element<std::string>("api.github.com", "files.example.com", "evil.com");
    sni =
        *rc::gen::element<std::optional<std::string>>(std::nullopt, "api.github.com", "files.example.com", "evil.com");
    ip = *rc::gen::element(kGithubIp, std::string("93.184.215.14"), std::string("6.6.6.6"));
  }
  r.headers.push_back({"Host", host});
  std::string raw = SerializeRequest(r);
  Substitution s = Substitute(f.secrets, f.Flow(sni, ip), r, raw);
  RC_ASSERT(s.verdict != Verdict::kPassThrough);
  if (s.verdict == Verdict::kBlocked) {
    RC_ASSERT(s.upstream.empty());
    for (std::string_view v : {kGithubValue, kStoreValue}) {
      RC_ASSERT(s.response.find(v) == std::string::npos);
      RC_ASSERT(s.reason.find(v) == std::string::npos);
    }
    RC_ASSERT(s.response.find(p) == std::string::npos);
  } else {
    RC_ASSERT(sni.has_value());
    RC_ASSERT(host == *sni);
    RC_ASSERT(s.upstream.find(p) == std::string::npos);
    HttpRequestParser parser;
    parser.Feed(s.upstream);
    ParseOutcome o = parser.Next();
    RC_ASSERT(o.status == ParseStatus::kRequest);
    RC_ASSERT(parser.buffered() == 0u);
  }
}

}  // namespace
}  // namespace msb::secrets
