// Tests for the interception proxy over real sockets: an HTTPS (or plain)
// upstream on 127.0.0.1 with a certificate from a test CA, the proxy on a
// Dispatcher as the supervisor runs it, and a client speaking TLS on the
// stream the proxy hands back (where the stack would carry the guest).
// Each server records every byte it received, so "nothing went upstream" is
// an observation, not an assumption.
#include "vm/secret_proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "common/c_ptr.h"
#include "secrets/placeholder.h"

namespace msb::vm {
namespace {

using secrets::CertificateAuthority;

constexpr std::string_view kValue = "s3cr3t-VALUE-9f8e7d";

CertificateAuthority NewCa(std::vector<std::string> permitted, std::string common_name) {
  CertificateAuthority::Options options;
  options.permitted = std::move(permitted);
  options.common_name = std::move(common_name);
  auto ca = CertificateAuthority::Create(options, std::chrono::system_clock::now());
  EXPECT_TRUE(ca.ok());
  return std::move(*ca);
}

std::string ReadAllFd(int fd) {
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) out.append(buf, static_cast<size_t>(n));
  return out;
}

// One connection's worth of upstream: TLS with a leaf of `ca` for `name`, or
// plain; records the request bytes, answers 200 "ok" and closes. `greeting`:
// sends it before reading (a server that speaks first) and echoes one read.
class Upstream {
 public:
  // echo: the response body is the request as received.
  Upstream(CertificateAuthority* ca, std::string name, std::string greeting = "", bool echo = false)
      : greeting_(std::move(greeting)), echo_(echo) {
    listen_ = UniqueFd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(listen_.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    EXPECT_EQ(listen(listen_.get(), 4), 0);
    socklen_t len = sizeof(a);
    getsockname(listen_.get(), reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    if (ca != nullptr) {
      auto leaf = ca->LeafFor(name, std::chrono::system_clock::now());
      EXPECT_TRUE(leaf.ok());
      leaf_ = *leaf;
      ctx_.reset(SSL_CTX_new(TLS_server_method()));
      SSL_CTX_use_certificate(ctx_.get(), leaf_->certificate.get());
      SSL_CTX_use_PrivateKey(ctx_.get(), leaf_->key.get());
    }
    thread_ = std::thread([this] { Serve(); });
  }
  ~Upstream() { Join(); }
  void Join() {
    if (thread_.joinable()) thread_.join();
  }
  uint16_t port() const { return port_; }
  // What arrived; call after Join().
  const std::string& received() const { return received_; }
  bool accepted() const { return accepted_; }

 private:
  void Serve() {
    UniqueFd c(accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
    if (!c) return;
    accepted_ = true;
    if (!ctx_) {
      if (!greeting_.empty()) {
        (void)!::write(c.get(), greeting_.data(), greeting_.size());
        char buf[256];
        ssize_t n = ::read(c.get(), buf, sizeof(buf));
        if (n > 0) {
          received_.assign(buf, static_cast<size_t>(n));
          (void)!::write(c.get(), buf, static_cast<size_t>(n));
        }
        return;
      }
      ReadRequest([&](char* b, int n) { return static_cast<int>(::read(c.get(), b, static_cast<size_t>(n))); });
      Reply([&](const std::string& s) { (void)!::write(c.get(), s.data(), s.size()); });
      return;
    }
    SslPtr ssl(SSL_new(ctx_.get()));
    SSL_set_fd(ssl.get(), c.get());
    if (SSL_accept(ssl.get()) != 1) return;
    ReadRequest([&](char* b, int n) { return SSL_read(ssl.get(), b, n); });
    if (!received_.empty()) Reply([&](const std::string& s) { SSL_write(ssl.get(), s.data(), static_cast<int>(s.size())); });
    SSL_shutdown(ssl.get());
  }
  template <typename F>
  void ReadRequest(F read) {
    char buf[4096];
    while (true) {
      size_t head = received_.find("\r\n\r\n");
      if (head != std::string::npos) {
        size_t cl = 0;
        size_t p = received_.find("Content-Length: ");
        if (p != std::string::npos && p < head) cl = std::stoul(received_.substr(p + 16));
        if (received_.size() >= head + 4 + cl) return;
      }
      int n = read(buf, sizeof(buf));
      if (n <= 0) return;
      received_.append(buf, static_cast<size_t>(n));
    }
  }
  template <typename F>
  void Reply(F write) {
    std::string body = echo_ ? received_ : "ok";
    write("HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" +
          body);
  }

  UniqueFd listen_;
  uint16_t port_ = 0;
  std::shared_ptr<const secrets::Leaf> leaf_;
  SslCtxPtr ctx_;
  std::string greeting_;
  bool echo_ = false;
  std::thread thread_;
  std::string received_;
  bool accepted_ = false;
};

struct ClientResult {
  bool handshake = false;
  std::string error;
  std::string response;
  std::string peer_issuer;  // the issuer CN of the certificate the client saw
};

// A TLS client on fd trusting trust_pem, asking for sni, sending request.
ClientResult TlsClient(int fd, const std::string& trust_pem, const std::string& sni, const std::string& request) {
  ClientResult r;
  SslCtxPtr ctx(SSL_CTX_new(TLS_client_method()));
  CPtr<BIO, BIO_free_all> bio(BIO_new_mem_buf(trust_pem.data(), static_cast<int>(trust_pem.size())));
  X509* ca = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr);
  X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx.get()), ca);
  X509_free(ca);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  static const unsigned char kAlpn[] = {2, 'h', '2', 8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  SSL_CTX_set_alpn_protos(ctx.get(), kAlpn, sizeof(kAlpn));
  SslPtr ssl(SSL_new(ctx.get()));
  SSL_set_fd(ssl.get(), fd);
  SSL_set_tlsext_host_name(ssl.get(), sni.c_str());
  SSL_set1_host(ssl.get(), sni.c_str());
  if (SSL_connect(ssl.get()) != 1) {
    r.error = "handshake failed";
    return r;
  }
  r.handshake = true;
  if (X509* peer = SSL_get1_peer_certificate(ssl.get())) {
    char cn[256] = {};
    X509_NAME_get_text_by_NID(X509_get_issuer_name(peer), NID_commonName, cn, sizeof(cn));
    r.peer_issuer = cn;
    X509_free(peer);
  }
  SSL_write(ssl.get(), request.data(), static_cast<int>(request.size()));
  char buf[4096];
  int n;
  while ((n = SSL_read(ssl.get(), buf, sizeof(buf))) > 0) r.response.append(buf, static_cast<size_t>(n));
  return r;
}

class SecretProxyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    signal(SIGPIPE, SIG_IGN);  // the test's own servers write to closed sockets
    auto ph = secrets::NewPlaceholder();
    ASSERT_TRUE(ph.ok());
    placeholder_ = *ph;
    auto v = secrets::SecretValue::Create(kValue);
    ASSERT_TRUE(v.ok());
    value_.emplace(std::move(*v));
  }

  void MakeProxy(bool trust_upstream_ca = true, bool pinned = true, ProxyOptions options = {}) {
    secrets::SecretBinding b;
    b.name = "API_TOKEN";
    b.placeholder = placeholder_;
    b.value = value_->view();
    b.allow = {"api.test"};
    if (trust_upstream_ca) options.extra_ca_pem = upstream_ca_.CertificatePem();
    auto p = SecretProxy::Create(dispatcher_, {b}, NewCa({"api.test"}, "msb sandbox CA"), options,
                                 [pinned](std::string_view name, std::string_view ip) {
                                   return pinned && name == "api.test" && ip == "127.0.0.1";
                                 });
    ASSERT_TRUE(p.ok()) << p.error().message();
    proxy_ = std::move(*p);
  }

  // Opens a flow to port through the proxy and runs client on the stream
  // the proxy hands back, with the loop running, until the client is done.
  // stream_fd is -1 when the proxy refused the flow.
  void RunFlow(uint16_t port, std::function<void(int stream_fd)> client) {
    UniqueFd up(socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(port);
    int rc = connect(up.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a));
    ASSERT_TRUE(rc == 0 || errno == EINPROGRESS);
    int done[2];
    ASSERT_EQ(pipe2(done, O_CLOEXEC), 0);
    UniqueFd done_r(done[0]), done_w(done[1]);
    std::thread t;
    UniqueFd stream;
    proxy_->Open(std::move(up), ProxyFlow{"127.0.0.1", port, "test flow"}, [&](UniqueFd s) {
      stream = std::move(s);
      if (!stream) {
        client(-1);
        dispatcher_.Exit();
        return;
      }
      fcntl(stream.get(), F_SETFL, 0);  // the client blocks
      t = std::thread([&] {
        client(stream.get());
        ::shutdown(stream.get(), SHUT_RDWR);
        (void)!::write(done_w.get(), "x", 1);
      });
    });
    EventHandle watch = dispatcher_.WatchFd(done_r.get(), Dispatcher::kRead, [&](short) { dispatcher_.Exit(); });
    bool timed_out = false;
    EventHandle timer = dispatcher_.Timer([&] {
      timed_out = true;
      ::shutdown(stream.get(), SHUT_RDWR);
    });
    timer.Arm(std::chrono::seconds(30));
    dispatcher_.Run();
    if (t.joinable()) t.join();
    EXPECT_FALSE(timed_out) << "the flow did not finish within 30 s";
  }

  std::string Get(const std::string& extra_headers, const std::string& host = "api.test") {
    return "GET /v1/x HTTP/1.1\r\nHost: " + host + "\r\n" + extra_headers + "\r\n";
  }

  Dispatcher dispatcher_;
  CertificateAuthority upstream_ca_ = NewCa({}, "test upstream CA");
  std::string placeholder_;
  std::optional<secrets::SecretValue> value_;
  std::unique_ptr<SecretProxy> proxy_;
};

TEST_F(SecretProxyTest, TheAllowedHostGetsTheValueAndTheGuestNeverSeesIt) {
  MakeProxy();
  Upstream server(&upstream_ca_, "api.test");
  ClientResult got;
  RunFlow(server.port(), [&](int fd) {
    got = TlsClient(fd, proxy_->CaPem(), "api.test", Get("Authorization: Bearer " + placeholder_ + "\r\n"));
  });
  proxy_.reset();
  server.Join();
  ASSERT_TRUE(got.handshake) << got.error;
  EXPECT_EQ(got.peer_issuer, "msb sandbox CA");  // the guest talked to the proxy
  EXPECT_NE(got.response.find("200 OK"), std::string::npos) << got.response;
  EXPECT_NE(server.received().find("Authorization: Bearer " + std::string(kValue) + "\r\n"), std::string::npos)
      << server.received();
  EXPECT_EQ(server.received().find(placeholder_), std::string::npos);
  EXPECT_EQ(got.response.find(kValue), std::string::npos);
}

TEST_F(SecretProxyTest, KeepAliveRequestsAreJudgedOneByOne) {
  MakeProxy();
  Upstream server(&upstream_ca_, "api.test");
  ClientResult got;
  RunFlow(server.port(), [&](int fd) {
    // The first request carries no placeholder and goes on; the second is
    // to another Host and is blocked.
    got = TlsClient(fd, proxy_->CaPem(), "api.test",
                    Get("X-A: 1\r\n") + Get("Authorization: Bearer " + placeholder_ + "\r\n", "evil.test"));
  });
  auto counters = proxy_->CountersJson();
  proxy_.reset();
  server.Join();
  EXPECT_NE(got.response.find("403"), std::string::npos) << got.response;
  EXPECT_NE(server.received().find("X-A: 1"), std::string::npos);
  EXPECT_EQ(server.received().find("evil.test"), std::string::npos) << server.received();
  EXPECT_EQ(server.received().find(kValue), std::string::npos);
  EXPECT_EQ(counters["API_TOKEN"]["blocked"], 1);
  EXPECT_EQ(counters["API_TOKEN"]["substituted"], 0);
}

TEST_F(SecretProxyTest, AnUnpinnedDestinationIsBlockedAndNothingGoesUpstream) {
  MakeProxy(/*trust_upstream_ca=*/true, /*pinned=*/false);
  Upstream server(&upstream_ca_, "api.test");
  ClientResult got;
  RunFlow(server.port(), [&](int fd) {
    got = TlsClient(fd, proxy_->CaPem(), "api.test", Get("Authorization: Bearer " + placeholder_ + "\r\n"));
  });
  proxy_.reset();
  server.Join();
  EXPECT_NE(got.response.find("HTTP/1.1 403"), std::string::npos) << got.response;
  EXPECT_NE(got.response.find("API_TOKEN"), std::string::npos) << got.response;
  EXPECT_TRUE(server.accepted());
  EXPECT_EQ(server.received(), "");
}

TEST_F(SecretProxyTest, AnotherHostIsRelayedUntouchedWithItsOwnCertificate) {
  MakeProxy();
  Upstream server(&upstream_ca_, "other.test");
  ClientResult got;
  RunFlow(server.port(), [&](int fd) {
    got = TlsClient(fd, upstream_ca_.CertificatePem(), "other.test",
                    Get("Authorization: Bearer " + placeholder_ + "\r\n", "other.test"));
  });
  EXPECT_EQ(proxy_->intercepted(), 0u);
  proxy_.reset();
  server.Join();
  ASSERT_TRUE(got.handshake) << got.error;
  EXPECT_EQ(got.peer_issuer, "test upstream CA");
  // Untouched: the placeholder (worthless) arrives as the guest sent it.
  EXPECT_NE(server.received().find(placeholder_), std::string::npos);
  EXPECT_EQ(server.received().find(kValue), std::string::npos);
}

TEST_F(SecretProxyTest, AnUpstreamThatFailsVerificationFailsTheGuestsHandshake) {
  MakeProxy(/*trust_upstream_ca=*/false);
  Upstream server(&upstream_ca_, "api.test");
  ClientResult got;
  RunFlow(server.port(), [&](int fd) {
    got = TlsClient(fd, proxy_->CaPem(), "api.test", Get("Authorization: Bearer " + placeholder_ + "\r\n"));
  });
  proxy_.reset();
  server.Join();
  EXPECT_FALSE(got.handshake);
  EXPECT_EQ(server.received(), "");
}

TEST_F(SecretProxyTest, PlainHttpWithAPlaceholderIsBlockedAndWithoutPassesThrough) {
  MakeProxy();
  {
    Upstream server(nullptr, "");
    std::string response;
    RunFlow(server.port(), [&](int fd) {
      std::string req = Get("Authorization: Bearer " + placeholder_ + "\r\n");
      (void)!::write(fd, req.data(), req.size());
      response = ReadAllFd(fd);
    });
    proxy_.reset();
    server.Join();
    EXPECT_NE(response.find("403"), std::string::npos) << response;
    EXPECT_EQ(server.received(), "");
  }
  MakeProxy();
  {
    Upstream server(nullptr, "");
    std::string response;
    RunFlow(server.port(), [&](int fd) {
      std::string req = Get("X-Plain: yes\r\n");
      (void)!::write(fd, req.data(), req.size());
      response = ReadAllFd(fd);
    });
    proxy_.reset();
    server.Join();
    EXPECT_NE(response.find("200 OK"), std::string::npos) << response;
    EXPECT_EQ(server.received(), Get("X-Plain: yes\r\n"));
  }
}

TEST_F(SecretProxyTest, AServerThatSpeaksFirstIsRelayed) {
  MakeProxy();
  Upstream server(nullptr, "", "220 ready\r\n");
  std::string got;
  RunFlow(server.port(), [&](int fd) {
    char buf[64];
    ssize_t n = ::read(fd, buf, sizeof(buf));
    if (n > 0) got.assign(buf, static_cast<size_t>(n));
    (void)!::write(fd, "EHLO x\r\n", 8);
    got += ReadAllFd(fd);
  });
  proxy_.reset();
  server.Join();
  EXPECT_EQ(got, "220 ready\r\nEHLO x\r\n");
  EXPECT_EQ(server.received(), "EHLO x\r\n");
}

TEST_F(SecretProxyTest, ARefusedConnectHandsBackNoStream) {
  MakeProxy();
  // A port nobody listens on: bind one, close it, connect to it.
  UniqueFd s(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(s.get(), reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  socklen_t len = sizeof(a);
  getsockname(s.get(), reinterpret_cast<sockaddr*>(&a), &len);
  uint16_t port = ntohs(a.sin_port);
  s.Reset();
  int stream = 0;
  RunFlow(port, [&](int fd) { stream = fd; });
  EXPECT_EQ(stream, -1);
  EXPECT_EQ(proxy_->flows(), 0u);
}

TEST_F(SecretProxyTest, NewBindingsApplyToTheNextRequest) {
  MakeProxy();
  auto v2 = secrets::SecretValue::Create("second-value-123");
  ASSERT_TRUE(v2.ok());
  secrets::SecretBinding b;
  b.name = "API_TOKEN";
  b.placeholder = placeholder_;
  b.value = v2->view();
  b.allow = {"api.test"};
  proxy_->ReplaceBindings({b});
  Upstream server(&upstream_ca_, "api.test");
  ClientResult got;
  RunFlow(server.port(), [&](int fd) {
    got = TlsClient(fd, proxy_->CaPem(), "api.test", Get("X-Key: " + placeholder_ + "\r\n"));
  });
  auto counters = proxy_->CountersJson();
  proxy_.reset();
  server.Join();
  EXPECT_NE(server.received().find("X-Key: second-value-123\r\n"), std::string::npos) << server.received();
  EXPECT_EQ(counters["API_TOKEN"]["substituted"], 1);
}

TEST_F(SecretProxyTest, AnUpstreamThatEchoesTheValueNeverGetsItToTheGuest) {
  MakeProxy();
  Upstream server(&upstream_ca_, "api.test", "", /*echo=*/true);
  ClientResult got;
  RunFlow(server.port(), [&](int fd) {
    got = TlsClient(fd, proxy_->CaPem(), "api.test", Get("Authorization: Bearer " + placeholder_ + "\r\n"));
  });
  proxy_.reset();
  server.Join();
  // The upstream had the value and sent it back; the guest got none of it.
  EXPECT_NE(server.received().find(kValue), std::string::npos);
  EXPECT_TRUE(got.handshake);
  EXPECT_EQ(got.response.find(kValue), std::string::npos) << got.response;
  EXPECT_EQ(got.response.find("200 OK"), std::string::npos) << got.response;
}

TEST_F(SecretProxyTest, TraceAndUpgradesAreRefusedOnInterceptedFlows) {
  for (const std::string& request :
       {"TRACE / HTTP/1.1\r\nHost: api.test\r\nX-K: " + placeholder_ + "\r\n\r\n",
        Get("Connection: upgrade\r\nUpgrade: websocket\r\nX-K: " + placeholder_ + "\r\n")}) {
    MakeProxy();
    Upstream server(&upstream_ca_, "api.test");
    ClientResult got;
    RunFlow(server.port(), [&](int fd) { got = TlsClient(fd, proxy_->CaPem(), "api.test", request); });
    proxy_.reset();
    server.Join();
    EXPECT_NE(got.response.find("HTTP/1.1 501"), std::string::npos) << got.response;
    EXPECT_EQ(server.received(), "");
  }
}

TEST_F(SecretProxyTest, ARequestWhoseChunkFramingOutgrowsTheBoundIsRefused) {
  MakeProxy();
  Upstream server(&upstream_ca_, "api.test");
  ClientResult got;
  RunFlow(server.port(), [&](int fd) {
    // One-byte chunks with long extensions: little body, many bytes.
    std::string req = "POST / HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    std::string chunk = "1;" + std::string(200, 'e') + "\r\nx\r\n";
    while (req.size() < kMaxRawRequest + 64 * 1024) req += chunk;
    got = TlsClient(fd, proxy_->CaPem(), "api.test", req);
  });
  proxy_.reset();
  server.Join();
  EXPECT_NE(got.response.find("HTTP/1.1 413"), std::string::npos) << got.response.substr(0, 200);
  EXPECT_EQ(server.received(), "");
}

TEST_F(SecretProxyTest, ASilentFlowEndsAfterTheIdleLimitAndFlowsBeyondTheCapAreRefused) {
  ProxyOptions options;
  options.idle = std::chrono::milliseconds(200);
  MakeProxy(true, true, options);
  Upstream server(nullptr, "");
  // The flow must get its stream (a refused flow also ends in "no bytes"),
  // and its EOF may come no sooner than the idle limit after it opened: an
  // end for any other reason comes sooner. Load only makes it later.
  const auto opened = std::chrono::steady_clock::now();
  int stream = -2;
  std::string got = "unset";
  std::chrono::steady_clock::duration lasted{};
  RunFlow(server.port(), [&](int fd) {
    stream = fd;
    if (fd < 0) return;
    got = ReadAllFd(fd);  // EOF once the proxy ends it
    lasted = std::chrono::steady_clock::now() - opened;
  });
  ASSERT_GE(stream, 0) << "the proxy refused the flow";
  EXPECT_EQ(got, "");
  EXPECT_GE(lasted, options.idle);
  EXPECT_EQ(proxy_->flows(), 0u);
  proxy_.reset();
  server.Join();

  options.max_flows = 0;
  MakeProxy(true, true, options);
  Upstream other(nullptr, "");
  stream = 0;
  RunFlow(other.port(), [&](int fd) { stream = fd; });
  EXPECT_EQ(stream, -1);
  proxy_.reset();
}

}  // namespace
}  // namespace msb::vm
