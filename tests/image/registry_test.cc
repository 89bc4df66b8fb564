// Unit tests of the registry client's parts: WWW-Authenticate parsing,
// chunked decoding, URLs, base64, registries.yaml and credential files, and
// the HTTP client against scripted local servers (keep-alive, redirects,
// plain-HTTP refusal, connection refused).
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include <filesystem>

#include "common/base64.h"
#include "common/io.h"
#include "image/http.h"
#include "image/registry.h"
#include "image/pull.h"
#include "image/registry_config.h"
#include "image/oci.h"
#include "tests/support/dir_target.h"
#include "tests/support/registry_server.h"

namespace msb::image {
namespace {

using msb::testing::ScriptedHttpServer;

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/msb-registry-test-XXXXXX";
    path_ = ::mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

TEST(WwwAuthenticate, Bearer) {
  auto c = http::ParseChallenge(
      R"(Bearer realm="https://auth.example/token",service="registry.example",scope="repository:team/api:pull")");
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->scheme, "bearer");
  EXPECT_EQ(c->Param("realm"), "https://auth.example/token");
  EXPECT_EQ(c->Param("service"), "registry.example");
  EXPECT_EQ(c->Param("scope"), "repository:team/api:pull");
  EXPECT_EQ(c->Param("error"), "");
}

TEST(WwwAuthenticate, BasicSpacingEscapesAndTokens) {
  auto c = http::ParseChallenge(R"(  basic   Realm = "a \"quoted\" realm" , charset=UTF-8)");
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->scheme, "basic");
  EXPECT_EQ(c->Param("realm"), "a \"quoted\" realm");
  EXPECT_EQ(c->Param("charset"), "UTF-8");
  auto scope_with_commas = http::ParseChallenge(
      R"(Bearer realm="r",scope="repository:a:pull,push",error="insufficient_scope")");
  ASSERT_TRUE(scope_with_commas.ok());
  EXPECT_EQ(scope_with_commas->Param("scope"), "repository:a:pull,push");
  EXPECT_EQ(scope_with_commas->Param("error"), "insufficient_scope");
}

TEST(WwwAuthenticate, Errors) {
  EXPECT_FALSE(http::ParseChallenge("").ok());
  EXPECT_FALSE(http::ParseChallenge(R"(Bearer realm="unterminated)").ok());
  EXPECT_FALSE(http::ParseChallenge("Be@rer realm=x").ok());
}

RC_GTEST_PROP(WwwAuthenticateProps, NeverThrows, (const std::string& s)) { (void)http::ParseChallenge(s); }

std::string Decode(const std::vector<std::string>& pieces, bool* done, std::string* err = nullptr) {
  http::ChunkedDecoder dec;
  std::string out;
  for (const auto& p : pieces) {
    auto used = dec.Feed(p, [&](std::string_view b) {
      out.append(b);
      return OkStatus();
    });
    if (!used.ok()) {
      if (err) *err = used.error().message();
      *done = false;
      return out;
    }
  }
  *done = dec.Done();
  return out;
}

TEST(Chunked, DecodesWithExtensionsAndTrailers) {
  bool done = false;
  std::string enc = "5;ext=1\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: y\r\n\r\n";
  EXPECT_EQ(Decode({enc}, &done), "helloabcdefghijklmnopqrstuvwxyz");
  EXPECT_TRUE(done);
}

TEST(Chunked, StopsAtTheEndAndLeavesTheRest) {
  http::ChunkedDecoder dec;
  std::string out;
  std::string enc = "3\r\nabc\r\n0\r\n\r\nNEXT";
  auto used = dec.Feed(enc, [&](std::string_view b) {
    out.append(b);
    return OkStatus();
  });
  ASSERT_TRUE(used.ok());
  EXPECT_EQ(*used, enc.size() - 4);
  EXPECT_TRUE(dec.Done());
  EXPECT_EQ(out, "abc");
}

TEST(Chunked, Malformed) {
  bool done = true;
  std::string err;
  Decode({"zz\r\nabc\r\n"}, &done, &err);
  EXPECT_NE(err.find("bad chunk size"), std::string::npos);
  Decode({"3\r\nabcX\r\n"}, &done, &err);
  EXPECT_NE(err.find("CRLF"), std::string::npos);
  Decode({"1000000000000000\r\n"}, &done, &err);
  EXPECT_NE(err.find("bad chunk size"), std::string::npos);
  Decode({"3\r\nab"}, &done);
  EXPECT_FALSE(done);
}

RC_GTEST_PROP(ChunkedProps, AnySplitDecodesTheSame, (const std::vector<std::string>& chunks, unsigned seed)) {
  std::string enc, plain;
  for (const auto& c : chunks) {
    if (c.empty()) continue;
    char size[32];
    std::snprintf(size, sizeof size, "%zx", c.size());
    enc += std::string(size) + "\r\n" + c + "\r\n";
    plain += c;
  }
  enc += "0\r\n\r\n";
  // Split enc at pseudo-random points.
  std::vector<std::string> pieces;
  size_t pos = 0;
  unsigned s = seed;
  while (pos < enc.size()) {
    s = s * 1103515245 + 12345;
    size_t n = 1 + (s >> 8) % 7;
    pieces.push_back(enc.substr(pos, n));
    pos += n;
  }
  bool done = false;
  RC_ASSERT(Decode(pieces, &done) == plain);
  RC_ASSERT(done);
}

TEST(Url, ParseAndResolve) {
  auto u = http::ParseUrl("https://Reg.Internal:5000/v2/x?y=1#frag");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->host, "reg.internal");
  EXPECT_EQ(u->port, 5000);
  EXPECT_EQ(u->target, "/v2/x?y=1");
  EXPECT_EQ(u->Authority(), "reg.internal:5000");
  auto d = http::ParseUrl("http://[::1]/");
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->host, "::1");
  EXPECT_EQ(d->port, 80);
  EXPECT_FALSE(http::ParseUrl("ftp://x/").ok());
  EXPECT_FALSE(http::ParseUrl("https://u:p@x/").ok());
  EXPECT_FALSE(http::ParseUrl("https://x:99999/").ok());
  // Found by fuzz/http_response_fuzz.cc: a Location or realm whose host holds
  // a space, a quote or a line feed went into the next request's Host header.
  EXPECT_FALSE(http::ParseUrl("https://blobs.ex realm=\"p\"/x").ok());
  EXPECT_FALSE(http::ParseUrl("http://evil\nX-Injected: 1/").ok());
  EXPECT_FALSE(http::ParseUrl("https://[::1\r]/").ok());
  EXPECT_FALSE(http::ResolveUrl(*http::ParseUrl("https://r.example/v2/"), "//a\tb/c").ok());
  EXPECT_TRUE(http::ParseUrl("https://[fe80::1%25eth0]:5000/").ok());
  EXPECT_TRUE(http::ParseUrl("https://my_registry-1.example.com/").ok());
  auto r = http::ResolveUrl(*u, "/blobs/abc");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->ToString(), "https://reg.internal:5000/blobs/abc");
  auto other = http::ResolveUrl(*u, "https://cdn.example/data?sig=1");
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->host, "cdn.example");
  EXPECT_EQ(other->port, 443);
}

TEST(ResponseHead, ParsesStatusReasonAndHeaders) {
  auto h = http::ParseResponseHead("HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate:  Bearer realm=x \r\nX-A:\r\nx-a: 2");
  ASSERT_TRUE(h.ok()) << h.error().message();
  EXPECT_EQ(h->status, 401);
  EXPECT_EQ(h->reason, "Unauthorized");
  EXPECT_EQ(h->headers, (http::Headers{{"www-authenticate", "Bearer realm=x"}, {"x-a", ""}, {"x-a", "2"}}));
  EXPECT_EQ(http::HeaderValue(h->headers, "x-a"), "");
  auto bare = http::ParseResponseHead("HTTP/1.0 204");
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(bare->status, 204);
  EXPECT_EQ(bare->reason, "");
  EXPECT_FALSE(http::ParseResponseHead("HTTP/2 200 OK").ok());
  EXPECT_FALSE(http::ParseResponseHead("HTTP/1.1 2x0 OK").ok());
  EXPECT_FALSE(http::ParseResponseHead("HTTP/1.1 2000 OK").ok());
  // Found by fuzz/http_client_fuzz.cc: three digits that are no status class.
  EXPECT_FALSE(http::ParseResponseHead("HTTP/1.1 037 Temporary Redirect").ok());
  EXPECT_FALSE(http::ParseResponseHead("HTTP/1.1 600 x").ok());
  EXPECT_TRUE(http::ParseResponseHead("HTTP/1.1 100 Continue").ok());
  EXPECT_TRUE(http::ParseResponseHead("HTTP/1.1 599 x").ok());
  EXPECT_FALSE(http::ParseResponseHead("HTTP/1.1 200 OK\r\nno colon").ok());
  EXPECT_FALSE(http::ParseResponseHead("HTTP/1.1 200 OK\r\n: empty name").ok());
  // Found by fuzz/http_response_fuzz.cc: a name that trims to nothing.
  EXPECT_FALSE(http::ParseResponseHead("HTTP/1.1 200 OK\r\n\r: 0").ok());
  EXPECT_FALSE(http::ParseResponseHead("HTTP/1.1 200 OK\r\n \t: 0").ok());
}

TEST(ResponseHead, BodyFraming) {
  using Kind = http::BodyFraming::Kind;
  auto framing = [](std::string_view method, int status, http::Headers h) {
    auto f = http::ResponseBodyFraming(method, status, h);
    EXPECT_TRUE(f.ok()) << f.error().message();
    return f.ok() ? *f : http::BodyFraming{};
  };
  EXPECT_EQ(framing("HEAD", 200, {{"content-length", "5"}}).kind, Kind::kNone);
  EXPECT_EQ(framing("GET", 204, {}).kind, Kind::kNone);
  EXPECT_EQ(framing("GET", 304, {}).kind, Kind::kNone);
  EXPECT_EQ(framing("GET", 100, {}).kind, Kind::kNone);
  auto chunked = framing("GET", 200, {{"transfer-encoding", "Chunked"}, {"content-length", "3"}});
  EXPECT_EQ(chunked.kind, Kind::kChunked);
  auto length = framing("GET", 200, {{"content-length", "42"}, {"connection", "Close"}});
  EXPECT_EQ(length.kind, Kind::kLength);
  EXPECT_EQ(length.length, 42u);
  EXPECT_FALSE(length.keep_alive);
  auto eof = framing("GET", 200, {});
  EXPECT_EQ(eof.kind, Kind::kUntilClose);
  EXPECT_FALSE(eof.keep_alive);
  EXPECT_FALSE(http::ResponseBodyFraming("GET", 200, {{"transfer-encoding", "gzip"}}).ok());
  EXPECT_FALSE(http::ResponseBodyFraming("GET", 200, {{"content-length", "-1"}}).ok());
  EXPECT_FALSE(http::ResponseBodyFraming("GET", 200, {{"content-length", "99999999999999999999"}}).ok());
}

TEST(QueryEscape, EscapesAllButUnreserved) {
  EXPECT_EQ(http::QueryEscape("repository:a/b:pull,push"), "repository%3Aa%2Fb%3Apull%2Cpush");
}

TEST(RegistriesYaml, LoadsHostsAndOverrides) {
  TempDir t;
  std::string ca = t.path() + "/ca.pem";
  ASSERT_TRUE(WriteFileAtomic(ca, "x").ok());
  std::string path = t.path() + "/registries.yaml";
  ASSERT_TRUE(WriteFileAtomic(path, "registries:\n  \"127.0.0.1:5000\": {insecure: true}\n  reg.internal: {ca_file: " +
                                        ca + "}\n  docker.io: {}\n")
                  .ok());
  auto cfg = RegistryConfig::Load(path);
  ASSERT_TRUE(cfg.ok()) << cfg.error().message();
  EXPECT_TRUE(cfg->For("127.0.0.1:5000").insecure);
  EXPECT_FALSE(cfg->For("127.0.0.1:5001").insecure);
  EXPECT_EQ(cfg->For("reg.internal").ca_file, ca);
  EXPECT_EQ(cfg->For("reg.internal:443").ca_file, ca);
  EXPECT_FALSE(cfg->For("reg.internal").insecure);
  ASSERT_TRUE(cfg->ApplyOverrides({"other:8080"}, {"127.0.0.1:5000=" + ca}).ok());
  EXPECT_TRUE(cfg->For("other:8080").insecure);
  EXPECT_EQ(cfg->For("127.0.0.1:5000").ca_file, ca);
  EXPECT_TRUE(cfg->For("127.0.0.1:5000").insecure);
  auto bad = cfg->ApplyOverrides({}, {"nofile"});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("HOST=CA_FILE"), std::string::npos);
  EXPECT_FALSE(cfg->ApplyOverrides({}, {"h=/nonexistent/ca.pem"}).ok());
}

TEST(RegistriesYaml, MissingFileIsEmpty) {
  auto cfg = RegistryConfig::Load("/nonexistent/registries.yaml");
  ASSERT_TRUE(cfg.ok());
  EXPECT_TRUE(cfg->registries.empty());
}

TEST(RegistriesYaml, BadFilesNamePathAndProblem) {
  TempDir t;
  std::string path = t.path() + "/registries.yaml";
  struct Case {
    std::string text;
    std::string expect;
  };
  std::vector<Case> cases = {
      {"registries: [a, b]\n", "registries: expected a mapping"},
      {"registries:\n  r.example: {insecure: maybe}\n", "registries.r.example.insecure: expected true or false"},
      {"registries:\n  r.example: {ca_file: relative.pem}\n", "must be an absolute path"},
      {"registries:\n  r.example: {ca_file: /nonexistent/ca.pem}\n", "cannot read /nonexistent/ca.pem"},
      {"registries:\n  r.example: {colour: blue}\n", "unknown key \"registries.r.example.colour\""},
      {"mirrors: {}\n", "unknown key \"mirrors\""},
      {"registries: {a: [\n", "not valid YAML"},
  };
  for (const auto& c : cases) {
    ASSERT_TRUE(WriteFileAtomic(path, c.text).ok());
    auto cfg = RegistryConfig::Load(path);
    ASSERT_FALSE(cfg.ok()) << c.text;
    EXPECT_EQ(cfg.error().message().rfind(path, 0), 0u) << cfg.error().message();
    EXPECT_NE(cfg.error().message().find(c.expect), std::string::npos) << cfg.error().message();
  }
}

RC_GTEST_PROP(RegistriesYamlProps, AnyTextLoadsOrFailsNamingTheFile, (const std::string& text)) {
  static TempDir t;
  std::string path = t.path() + "/registries.yaml";
  RC_ASSERT(WriteFileAtomic(path, text).ok());
  auto cfg = RegistryConfig::Load(path);
  if (!cfg.ok()) RC_ASSERT(cfg.error().message().rfind(path, 0) == 0u);
}

TEST(Credentials, StoreLookupAndDockerFallback) {
  TempDir t;
  CredentialStore store{t.path() + "/msb/auth.json", t.path() + "/docker/config.json"};
  auto none = store.Lookup("reg.internal");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  ASSERT_TRUE(MakeDirs(t.path() + "/docker").ok());
  ASSERT_TRUE(WriteFileAtomic(store.docker_config,
                              R"({"auths":{"https://index.docker.io/v1/":{"auth":")" +
                                  Base64Encode("hub:pw") + R"("},"reg.internal":{"auth":")" +
                                  Base64Encode("dock:er:pw") + R"("},"helper.example":{}}})")
                  .ok());
  auto d = store.Lookup("reg.internal");
  ASSERT_TRUE(d.ok()) << d.error().message();
  ASSERT_TRUE(d->has_value());
  EXPECT_EQ((*d)->username, "dock");
  EXPECT_EQ((*d)->password, "er:pw");
  auto hub = store.Lookup("docker.io");
  ASSERT_TRUE(hub.ok());
  ASSERT_TRUE(hub->has_value());
  EXPECT_EQ((*hub)->username, "hub");
  EXPECT_FALSE(store.Lookup("helper.example")->has_value());

  ASSERT_TRUE(store.Store("reg.internal", {"mine", "pw2"}).ok());
  struct stat st;
  ASSERT_EQ(::stat(store.auth_file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto m = store.Lookup("reg.internal");
  ASSERT_TRUE(m.ok());
  EXPECT_EQ((*m)->username, "mine");  // msb's own file wins
  ASSERT_TRUE(store.Store("127.0.0.1:5000", {"a", "b"}).ok());
  EXPECT_EQ((*store.Lookup("reg.internal"))->password, "pw2");
  ASSERT_TRUE(store.Remove("reg.internal").ok());
  EXPECT_EQ((*store.Lookup("reg.internal"))->username, "dock");
  EXPECT_EQ((*store.Lookup("127.0.0.1:5000"))->username, "a");
  auto docker_text = ReadFile(store.docker_config);
  ASSERT_TRUE(docker_text.ok());
  EXPECT_NE(docker_text->find("helper.example"), std::string::npos);  // docker's file untouched
}

TEST(Credentials, BadFileIsAnError) {
  TempDir t;
  CredentialStore store{t.path() + "/auth.json", ""};
  ASSERT_TRUE(WriteFileAtomic(store.auth_file, "{not json").ok());
  auto r = store.Lookup("x");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find(store.auth_file), std::string::npos);
}

http::ClientOptions InsecureLocal() {
  http::ClientOptions o;
  o.policy = [](const std::string&) { return http::HostPolicy{true, "", ""}; };
  o.idle_timeout = std::chrono::milliseconds(5000);
  return o;
}

TEST(HttpClient, RedirectToAnotherHostDropsAuthorization) {
  std::string seen_auth_a, seen_auth_b = "unset";
  auto b = ScriptedHttpServer::Start([&](const ScriptedHttpServer::Request& r) {
    auto it = r.headers.find("authorization");
    seen_auth_b = it == r.headers.end() ? "" : it->second;
    return ScriptedHttpServer::Response(200, "application/octet-stream", "blob-bytes");
  });
  ASSERT_TRUE(b.ok());
  std::string b_url = "http://" + (*b)->host_port() + "/data";
  auto a = ScriptedHttpServer::Start([&](const ScriptedHttpServer::Request& r) {
    seen_auth_a = r.headers.count("authorization") ? r.headers.at("authorization") : "";
    if (r.target == "/start") return ScriptedHttpServer::Response(307, "text/plain", "", "Location: /hop\r\n");
    return ScriptedHttpServer::Response(302, "text/plain", "", "Location: " + b_url + "\r\n");
  });
  ASSERT_TRUE(a.ok());
  http::HttpClient client(InsecureLocal());
  http::Request req;
  req.url = *http::ParseUrl("http://" + (*a)->host_port() + "/start");
  req.headers.emplace_back("Authorization", "Bearer secret");
  std::string body;
  auto resp = client.Do(req, [&](std::string_view s) {
    body.append(s);
    return OkStatus();
  });
  ASSERT_TRUE(resp.ok()) << resp.error().message();
  EXPECT_EQ(resp->status, 200);
  EXPECT_EQ(body, "blob-bytes");
  EXPECT_EQ(seen_auth_a, "Bearer secret");  // same host keeps it
  EXPECT_EQ(seen_auth_b, "");               // another host never sees it
  EXPECT_EQ(resp->url.ToString(), b_url);
}

TEST(HttpClient, RedirectLoopStops) {
  auto a = ScriptedHttpServer::Start([&](const ScriptedHttpServer::Request& r) {
    return ScriptedHttpServer::Response(302, "text/plain", "", "Location: /again\r\n");
  });
  ASSERT_TRUE(a.ok());
  http::HttpClient client(InsecureLocal());
  http::Request req;
  req.url = *http::ParseUrl("http://" + (*a)->host_port() + "/x");
  auto resp = client.Do(req);
  ASSERT_FALSE(resp.ok());
  EXPECT_NE(resp.error().message().find("more than 5 redirects"), std::string::npos);
  EXPECT_EQ((*a)->requests(), 6);
}

TEST(HttpClient, ChunkedBodyOverTheWire) {
  auto a = ScriptedHttpServer::Start([&](const ScriptedHttpServer::Request&) {
    return std::string("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                       "4\r\nabcd\r\n2\r\nef\r\n0\r\n\r\n");
  });
  ASSERT_TRUE(a.ok());
  http::HttpClient client(InsecureLocal());
  http::Request req;
  req.url = *http::ParseUrl("http://" + (*a)->host_port() + "/x");
  auto resp = client.Do(req);
  ASSERT_TRUE(resp.ok()) << resp.error().message();
  EXPECT_EQ(resp->body, "abcdef");
}

TEST(HttpClient, InterimAnswersAreSkippedAndBounded) {
  auto a = ScriptedHttpServer::Start([&](const ScriptedHttpServer::Request& r) {
    if (r.target == "/switch") return std::string("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n");
    if (r.target == "/many") {
      std::string out;
      for (int i = 0; i <= http::kMaxInterimResponses; ++i) out += "HTTP/1.1 100 Continue\r\n\r\n";
      return out + "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
    }
    return std::string("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
                       "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
  });
  ASSERT_TRUE(a.ok());
  http::HttpClient client(InsecureLocal());
  http::Request req;
  req.url = *http::ParseUrl("http://" + (*a)->host_port() + "/two");
  auto resp = client.Do(req);
  ASSERT_TRUE(resp.ok()) << resp.error().message();
  EXPECT_EQ(resp->status, 200);
  EXPECT_EQ(resp->body, "ok");
  req.url = *http::ParseUrl("http://" + (*a)->host_port() + "/many");
  auto many = client.Do(req);
  ASSERT_FALSE(many.ok());
  EXPECT_NE(many.error().message().find("before a final answer"), std::string::npos) << many.error().message();
  req.url = *http::ParseUrl("http://" + (*a)->host_port() + "/switch");
  auto sw = client.Do(req);
  ASSERT_FALSE(sw.ok());
  EXPECT_NE(sw.error().message().find("protocol switch"), std::string::npos) << sw.error().message();
}

TEST(HttpClient, PlainHttpNeedsInsecure) {
  auto a = ScriptedHttpServer::Start([&](const ScriptedHttpServer::Request&) {
    return ScriptedHttpServer::Response(200, "text/plain", "x");
  });
  ASSERT_TRUE(a.ok());
  http::HttpClient client;  // every host secure
  http::Request req;
  req.url = *http::ParseUrl("http://" + (*a)->host_port() + "/x");
  auto resp = client.Do(req);
  ASSERT_FALSE(resp.ok());
  EXPECT_NE(resp.error().message().find("refusing plain HTTP"), std::string::npos) << resp.error().message();
  EXPECT_EQ((*a)->requests(), 0);
}

TEST(HttpClient, ConnectionRefusedIsOneSentence) {
  auto port = msb::testing::FreePort();
  ASSERT_TRUE(port.ok());
  RegistryConfig cfg;
  std::string reg = "127.0.0.1:" + std::to_string(*port);
  cfg.registries[reg].insecure = true;
  RegistryClient client(reg, cfg, std::nullopt);
  auto m = client.GetManifest("team/api", "1.0");
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.error().message().find("cannot connect to " + reg), std::string::npos) << m.error().message();
  EXPECT_NE(m.error().message().find("Connection refused"), std::string::npos) << m.error().message();
}

TEST(HttpClient, UnresolvableHost) {
  http::HttpClient client;
  http::Request req;
  req.url = *http::ParseUrl("https://no-such-host.invalid/v2/");
  auto resp = client.Do(req);
  ASSERT_FALSE(resp.ok());
  EXPECT_NE(resp.error().message().find("cannot resolve host no-such-host.invalid"), std::string::npos)
      << resp.error().message();
}

TEST(RegistryClient, HtmlAnswerIsNamed) {
  auto a = ScriptedHttpServer::Start([&](const ScriptedHttpServer::Request&) {
    return ScriptedHttpServer::Response(200, "text/html; charset=utf-8",
                                        "<!doctype html><html><body>Welcome to nginx</body></html>");
  });
  ASSERT_TRUE(a.ok());
  RegistryConfig cfg;
  cfg.registries[(*a)->host_port()].insecure = true;
  RegistryClient client((*a)->host_port(), cfg, std::nullopt);
  auto m = client.GetManifest("team/api", "1.0");
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.error().message().find("HTML page"), std::string::npos) << m.error().message();
  EXPECT_NE(m.error().message().find("registry " + (*a)->host_port()), std::string::npos);
}

TEST(RegistryClient, NonJsonAnswerIsNamed) {
  auto a = ScriptedHttpServer::Start([&](const ScriptedHttpServer::Request&) {
    return ScriptedHttpServer::Response(200, "text/plain", "OK\n");
  });
  ASSERT_TRUE(a.ok());
  RegistryConfig cfg;
  cfg.registries[(*a)->host_port()].insecure = true;
  RegistryClient client((*a)->host_port(), cfg, std::nullopt);
  auto m = client.GetManifest("team/api", "1.0");
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.error().message().find("not JSON"), std::string::npos) << m.error().message();
}

TEST(RegistryClient, DigestMismatchOfManifestIsRefused) {
  std::string doc = R"({"schemaVersion":2})";
  auto a = ScriptedHttpServer::Start([&](const ScriptedHttpServer::Request&) {
    return ScriptedHttpServer::Response(200, "application/vnd.oci.image.manifest.v1+json", doc);
  });
  ASSERT_TRUE(a.ok());
  RegistryConfig cfg;
  cfg.registries[(*a)->host_port()].insecure = true;
  RegistryClient client((*a)->host_port(), cfg, std::nullopt);
  std::string other = "sha256:" + std::string(64, '0');
  auto m = client.GetManifest("team/api", other);
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.error().message().find("not the digest asked for"), std::string::npos) << m.error().message();
}

// A scripted registry: the manifest answers 503 once, the layer's first
// answer breaks off mid-body, and the retry's Range is ignored (200 with the
// whole blob), so the sink must be restarted rather than appended to.
TEST(PullRetries, ServerErrorsBrokenBodiesAndIgnoredRanges) {
  std::string layer(200000, '\0');
  for (size_t i = 0; i < layer.size(); ++i) layer[i] = static_cast<char>((i * 2654435761u) >> 13);
  std::string layer_digest = oci::DigestOf(layer);
  std::string config = R"({"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[")" +
                       layer_digest + R"("]}})";
  std::string config_digest = oci::DigestOf(config);
  std::string manifest = R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",)"
                         R"("config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":")" +
                         config_digest + R"(","size":)" + std::to_string(config.size()) +
                         R"(},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":")" +
                         layer_digest + R"(","size":)" + std::to_string(layer.size()) + "}]}";
  std::mutex mu;
  int manifest_gets = 0, layer_gets = 0;
  std::string second_range = "unset";
  auto server = ScriptedHttpServer::Start([&](const ScriptedHttpServer::Request& r) {
    std::lock_guard<std::mutex> lock(mu);
    if (r.target == "/v2/team/api/manifests/1.0") {
      if (++manifest_gets == 1) {
        return ScriptedHttpServer::Response(503, "application/json", R"({"errors":[{"code":"UNAVAILABLE"}]})");
      }
      return ScriptedHttpServer::Response(200, std::string(oci::kMediaTypeOciManifest), manifest);
    }
    if (r.target == "/v2/team/api/blobs/" + config_digest) {
      return ScriptedHttpServer::Response(200, "application/octet-stream", config);
    }
    if (r.target == "/v2/team/api/blobs/" + layer_digest) {
      std::string full = ScriptedHttpServer::Response(200, "application/octet-stream", layer);
      if (++layer_gets == 1) return full.substr(0, full.size() - layer.size() / 2);  // breaks off
      second_range = r.headers.count("range") ? r.headers.at("range") : "";
      return full;  // Range ignored
    }
    return ScriptedHttpServer::Response(404, "application/json", R"({"errors":[{"code":"NAME_UNKNOWN"}]})");
  });
  ASSERT_TRUE(server.ok());
  TempDir t;
  msb::testing::DirTarget target(t.path());
  PullOptions o;
  o.registries.registries[(*server)->host_port()].insecure = true;
  o.initial_backoff = std::chrono::milliseconds(10);
  std::vector<PullProgress::Kind> kinds;
  auto res = Pull(ImageReference{(*server)->host_port(), "team/api", "1.0", ""}, o, target,
                  [&](const PullProgress& p) { kinds.push_back(p.kind); });
  ASSERT_TRUE(res.ok()) << res.error().message();
  EXPECT_EQ(manifest_gets, 2);
  EXPECT_EQ(layer_gets, 2);
  EXPECT_EQ(second_range, "bytes=" + std::to_string(layer.size() - layer.size() / 2) + "-");
  auto stats = target.StatsFor(layer_digest);
  EXPECT_EQ(stats.restarts, 1);
  ASSERT_TRUE(target.HasBlob(layer_digest));
  EXPECT_EQ(*ReadFile(target.BlobPath(layer_digest)), layer);
  EXPECT_TRUE(target.HasBlob(res->manifest_digest));
  EXPECT_NE(std::find(kinds.begin(), kinds.end(), PullProgress::Kind::kRetrying), kinds.end());
}

TEST(PullRetries, PersistentServerErrorGivesUp) {
  auto server = ScriptedHttpServer::Start([&](const ScriptedHttpServer::Request&) {
    return ScriptedHttpServer::Response(502, "application/json", "{}");
  });
  ASSERT_TRUE(server.ok());
  TempDir t;
  msb::testing::DirTarget target(t.path());
  PullOptions o;
  o.registries.registries[(*server)->host_port()].insecure = true;
  o.initial_backoff = std::chrono::milliseconds(5);
  o.max_attempts = 3;
  auto res = Pull(ImageReference{(*server)->host_port(), "team/api", "1.0", ""}, o, target);
  ASSERT_FALSE(res.ok());
  EXPECT_NE(res.error().message().find("answered HTTP 502"), std::string::npos) << res.error().message();
  EXPECT_EQ(target.PublishedCount(), 0u);
}

}  // namespace
}  // namespace msb::image

TEST(ContentRange, DigitsOnlyOrderedAndWithinTheTotal) {
  auto full = msb::image::http::ParseContentRange("bytes 100-199/1000");
  ASSERT_TRUE(full.ok()) << full.error().message();
  EXPECT_EQ(full->first, 100u);
  EXPECT_EQ(full->last, 199u);
  EXPECT_EQ(full->total, 1000);
  auto open_total = msb::image::http::ParseContentRange("bytes 0-0/*");
  ASSERT_TRUE(open_total.ok());
  EXPECT_EQ(open_total->total, -1);
  // sscanf's %llu took a sign and wrapped; a total past 2^63 went negative.
  for (const char* bad : {"bytes -1-5/10", "bytes 1--5/10", "bytes 1-5/-10", "bytes +1-5/10", "bytes 5-1/10",
                          "bytes 1-5/5", "bytes 1-5/99999999999999999999", "bytes 1-5/10 ", "bytes  1-5/10",
                          "bytes 1-5", "items 1-5/10", "bytes 1234567890123456789-1234567890123456790/*", ""}) {
    EXPECT_FALSE(msb::image::http::ParseContentRange(bad).ok()) << bad;
  }
}
